"""A webhook receiver on loopback for tests: every request verified with `standardwebhooks`
(the specification's reference implementation), every message kept, and faults on demand.

It answers HTTP/1.1 with keep-alive, reads `application/json` and `multipart/form-data` bodies,
and keeps each verified request in `requests` (duplicates too) and the first of each
`webhook-id` in `messages`, as a receiver that drops repeats would. `fail_next` makes the next
requests fail the ways a real receiver fails; `refuse` answers 400 to one call's requests
until cleared.

    with WebhookReceiver() as receiver:
        ... poller delivers to receiver.url with receiver.secret ...
        assert receiver.calls()["1795675107.1"]["status"] == "answered"
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import json
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

KINDS = ("http500", "http429", "reset", "lost_reply", "slow")


@dataclass(frozen=True)
class Message:
    """One verified request: its id, its JSON, and the MP3 that came with it (if any)."""

    webhook_id: str
    payload: dict[str, Any]
    recording: bytes | None = None
    filename: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def type(self) -> str:
        return str(self.payload.get("type"))


@dataclass
class Switch:
    kind: str
    count: int
    event: str | None  # only requests of this type ("call.received", ...); None: any
    retry_after: str = "2"
    delay: float = 2.0


@dataclass
class Received:
    """Everything the receiver saw."""

    requests: list[Message] = field(default_factory=list)  # every verified one, repeats too
    messages: dict[str, Message] = field(default_factory=dict)  # first of each webhook-id
    rejected: list[str] = field(default_factory=list)  # requests that failed verification
    switched: list[tuple[str, str]] = field(default_factory=list)  # (kind, webhook-id)
    pings: int = 0
    last_ping: Message | None = None
    connections: int = 0


class WebhookReceiver:
    """The receiver; start/stop or use as a context manager."""

    def __init__(self, secret: str | None = None, status: int = 200) -> None:
        self.secret = secret or "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.verifier = Webhook(self.secret)
        self.status = status  # what a verified request is answered with
        self.seen = Received()
        self.lock = threading.Lock()
        self.switches: list[Switch] = []
        self.refused: set[str] = set()  # call keys answered 400
        self.redirect: str | None = None  # a Location every request is sent to (HTTP 307)
        # called with (moment, message) at "stored": a fault suite may act there
        self.hook: Callable[[str, Message], None] | None = None
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.path = f"/hooks/{secrets.token_hex(8)}"  # a secret path, as automations have

    # -- life

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    # -- faults

    def fail_next(self, kind: str, count: int = 1, event: str | None = None,
                  **options: Any) -> None:
        """The next `count` requests (of `event`, if named) fail as `kind` says: http500,
        http429 (with Retry-After), reset (before the body is read), lost_reply (stored, then
        the connection cut), slow (stored after `delay` seconds, the reply too late)."""
        assert kind in KINDS, kind
        with self.lock:
            self.switches.append(Switch(kind, count, event, **options))

    def clear_failures(self) -> None:
        with self.lock:
            self.switches.clear()
            self.refused.clear()

    def refuse(self, key: str) -> None:
        """Answer every request about this call with HTTP 400 until cleared."""
        with self.lock:
            self.refused.add(key)

    def _switch(self, event: str | None, kinds: tuple[str, ...]) -> Switch | None:
        with self.lock:
            for switch in self.switches:
                if switch.kind in kinds and switch.event in (None, event) and switch.count > 0:
                    switch.count -= 1
                    return switch
        return None

    # -- what arrived

    def calls(self) -> dict[str, dict[str, Any]]:
        """The call fields of every call.received message, by key (the first of each id)."""
        with self.lock:
            return {m.payload["call"]["key"]: m.payload["call"]
                    for m in self.seen.messages.values() if m.type == "call.received"}

    def of_type(self, event: str) -> list[Message]:
        with self.lock:
            return [m for m in self.seen.messages.values() if m.type == event]

    def ids_by_call(self) -> dict[str, set[str]]:
        """Every webhook-id each call arrived under (one, when the ids are stable)."""
        found: dict[str, set[str]] = {}
        with self.lock:
            for m in self.seen.requests:
                if m.type == "call.received":
                    found.setdefault(m.payload["call"]["key"], set()).add(m.webhook_id)
        return found


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request (the fault suite's SIGKILLs) is no error here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: WebhookReceiver

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def setup(self) -> None:
        super().setup()
        with self.owner.lock:
            self.owner.seen.connections += 1

    def do_HEAD(self) -> None:
        self._answer(200, b"")

    def do_POST(self) -> None:
        owner = self.owner
        if owner.redirect:
            self._answer(307, b"moved", {"Location": owner.redirect})
            self._drain()
            return
        webhook_id = self.headers.get("webhook-id", "")
        # a reset comes before the body is read, so before its type is known: it hits the
        # next request that is not a ping (pings have ids of their own)
        if not webhook_id.startswith("ping_") and owner._switch(None, ("reset",)):
            with owner.lock:
                owner.seen.switched.append(("reset", webhook_id))
            self._reset()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            owner.verifier.verify(body, dict(self.headers.items()), json_parse=False)
        except WebhookVerificationError as exc:
            with owner.lock:
                owner.seen.rejected.append(f"{webhook_id}: {exc}")
            self._answer(401, f"signature: {exc}".encode())
            return
        message = _message(self.headers, body)
        if message.type == "ping":
            with owner.lock:
                owner.seen.pings += 1
                owner.seen.last_ping = message
            self._answer(200, b'{"pong":true}')
            return
        key = _call_key(message)
        if key is not None and key in owner.refused:
            with owner.lock:
                owner.seen.switched.append(("http400", message.webhook_id))
            self._answer(400, json.dumps({"error": f"no customer for call {key}"}).encode())
            return
        switch = owner._switch(message.type, ("http500", "http429", "lost_reply", "slow"))
        if switch is not None and switch.kind in ("http500", "http429"):
            with owner.lock:
                owner.seen.switched.append((switch.kind, message.webhook_id))
            if switch.kind == "http500":
                self._answer(500, b"<html>Internal Server Error</html>")
            else:
                self._answer(429, b"slow down", {"Retry-After": switch.retry_after})
            return
        if switch is not None and switch.kind == "slow":
            with owner.lock:
                owner.seen.switched.append(("slow", message.webhook_id))
            time.sleep(switch.delay)
        self._store(message)
        if switch is not None and switch.kind == "lost_reply":
            with owner.lock:
                owner.seen.switched.append(("lost_reply", message.webhook_id))
            self._reset()
            return
        with contextlib.suppress(OSError):  # a slow reply may find the client gone
            self._answer(owner.status, b'{"ok":true}')

    def _store(self, message: Message) -> None:
        owner = self.owner
        with owner.lock:
            owner.seen.requests.append(message)
            owner.seen.messages.setdefault(message.webhook_id, message)
        if owner.hook is not None:
            owner.hook("stored", message)

    def _drain(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _reset(self) -> None:
        """Cut the connection with a TCP reset (SO_LINGER 0), no reply at all."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json" if body[:1] == b"{" else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _message(headers: Any, body: bytes) -> Message:
    webhook_id = headers["webhook-id"]
    kind = headers.get("Content-Type", "")
    if not kind.startswith("multipart/form-data"):
        assert kind == "application/json", kind
        return Message(webhook_id, json.loads(body), headers=tuple(headers.items()))
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + body)
    payload: dict[str, Any] = {}
    recording = filename = None
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if name == "call":
            assert part.get_content_type() == "application/json"
            payload = json.loads(data)
        elif name == "recording":
            assert part.get_content_type() == "audio/mpeg"
            recording, filename = data, part.get_filename()
    return Message(webhook_id, payload, recording, filename, tuple(headers.items()))


def _call_key(message: Message) -> str | None:
    if message.type == "call.received":
        return str(message.payload["call"]["key"])
    return None
