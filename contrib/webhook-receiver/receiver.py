"""A webhook receiver for asterisk-cdr-poller to start from: it verifies each request with
the Standard Webhooks reference library, drops a message it already has (by webhook-id), and
stores calls, their MP3s and incident events in a folder.

    pip install standardwebhooks
    POLLER_WEBHOOK_SECRET=whsec_... python receiver.py 8080 /srv/calls

Each message becomes <folder>/<webhook-id>.json (and <webhook-id>.mp3 with a recording); a
helpdesk adapter would make or update a ticket where this writes a file.
"""

import email.parser
import email.policy
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the poller sends a run's calls on one connection
    webhook: Webhook
    folder: Path

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            self.webhook.verify(body, dict(self.headers), json_parse=False)
        except WebhookVerificationError:
            return self.answer(401)
        message_id = self.headers["webhook-id"]
        if not message_id.replace("_", "").isalnum():
            return self.answer(400)
        if (self.folder / f"{message_id}.json").exists():
            return self.answer(200)  # a repeat of a message stored already
        payload, mp3 = parse(self.headers["Content-Type"], body)
        if payload.get("type") == "ping":
            return self.answer(200)
        if mp3 is not None:
            store(self.folder / f"{message_id}.mp3", mp3)
        store(self.folder / f"{message_id}.json", json.dumps(payload, ensure_ascii=False).encode())
        self.answer(200)

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def parse(content_type, body):
    """The message's JSON, and the MP3 when it came as multipart/form-data."""
    if not content_type.startswith("multipart/form-data"):
        return json.loads(body), None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
             for part in message.iter_parts()}
    return json.loads(parts["call"]), parts.get("recording")


def store(path, data):
    """Written whole or not at all: a file that exists is a message received."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def serve(port, folder, secret):
    folder.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (Receiver,), {"webhook": Webhook(secret), "folder": folder})
    return ThreadingHTTPServer(("", port), handler)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), os.environ["POLLER_WEBHOOK_SECRET"]).serve_forever()
