"""The webhook target: every call POSTed to one URL, signed as Standard Webhooks says.

One request per call: `application/json` (`{"type": "call.received", "call": {...}}`) without a
recording; `multipart/form-data` with the parts `call` (that JSON) and `recording` (the MP3)
with one. An incident is a request of its own (`incident.opened`), and so is each update of one
that calls joined (`incident.joined`). Every request carries `webhook-id` (the same for the same
call and event on every retry: the receiver drops a repeat), `webhook-timestamp` and
`webhook-signature` over the exact bytes sent.

The ledger's stages keep their meaning: `created` is the call's request answered 2xx, MP3
included, so a crash between the receiver's 2xx and the ledger's commit can only make the same
request again, under the same id; `attached` follows with nothing left to send.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from poller.config.schema import WebhookConfig, signing_key
from poller.errors import ConfigError
from poller.model import Call
from poller.targets.interface import safe_name
from poller.targets.keepalive import ConnectionFailed, KeepAlive, Reply
from poller.targets.webhook.body import Body, json_body, multipart_body
from poller.targets.webhook.replies import LostInTransit, WebhookUnavailable, is_outage, judge
from poller.targets.webhook.signing import message_id, ping_id, signature

log = logging.getLogger("poller")

READ_LIMIT = 64 * 1024  # bytes of a reply read: only its start is ever shown

CALL_RECEIVED = "call.received"
INCIDENT_OPENED = "incident.opened"
INCIDENT_JOINED = "incident.joined"
PING = "ping"


class WebhookTarget:
    """POSTs calls and incident events to `target.webhook.url`."""

    # the MP3 travels in the call's own request: nothing is left for `attach` to send
    sends_recording_with_call = True

    def __init__(self, config: WebhookConfig):
        self.config = config
        self.key = signing_key(config.secret)
        parts = urlsplit(config.url)
        # the URL itself may be a credential (an automation's secret path): only its host is
        # ever written anywhere
        self.where = f"{parts.scheme}://{parts.netloc}"
        self.hidden = (config.secret, *config.headers.values(), config.url)
        self.http = KeepAlive(float(config.timeout), config.verify_tls, config.ca_bundle)
        try:
            self.greeting = self._open()
        except BaseException:
            self.http.close()
            raise

    def _open(self) -> Reply:
        """The probe before anything is encoded: a signed ping the receiver must answer."""
        try:
            reply = self.ping()
        except ConnectionFailed as exc:
            raise WebhookUnavailable(f"webhook {self.where}: {exc}") from None
        if is_outage(reply.status) or 300 <= reply.status < 400:
            judge(reply, f"webhook {self.where}: ping", self.hidden)
        if reply.status in (401, 403):
            raise ConfigError(f"target.webhook: the receiver at {self.where} refused a signed "
                              f"ping with HTTP {reply.status} {reply.reason} (check "
                              "target.webhook.secret and target.webhook.headers)")
        return reply

    # -- the Target interface
    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        """The call's request, its MP3 streamed with it; the id is the call's webhook-id."""
        webhook_id = message_id(CALL_RECEIVED, call.key)
        payload = {"type": CALL_RECEIVED, "call": record}
        body = (json_body(payload) if mp3 is None
                else multipart_body(payload, mp3, f"{safe_name(call.key)}.mp3"))
        self._deliver(webhook_id, body, f"call {call.key}")
        return webhook_id

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        pass  # the MP3 went with the call's own request, confirmed by the same 2xx

    def ensure(self, object_id: str, call: Call, record: dict[str, Any]) -> None:
        pass  # the receiver confirmed the call: nothing of ours can go missing there

    def create_incident(self, call: Call, parent: str, attributes: dict[str, str],
                        joined: list[str]) -> str:
        webhook_id = message_id(INCIDENT_OPENED, call.key)
        self._deliver(webhook_id, json_body(
            {"type": INCIDENT_OPENED, "incident": _incident(call, attributes, joined)}),
            f"incident {call.key}")
        return webhook_id

    def update_incident(self, object_id: str, call: Call, attributes: dict[str, str],
                        joined: list[str]) -> None:
        """One `incident.joined` per update, named by the newest call that joined and holding
        every key joined so far: a retry is the same message, a later join a new one."""
        if not joined:
            return
        newest = joined[-1]
        webhook_id = message_id(INCIDENT_JOINED, call.key, newest)
        self._deliver(webhook_id, json_body(
            {"type": INCIDENT_JOINED, "incident": _incident(call, attributes, joined),
             "call": newest}), f"incident {call.key}")

    def answers(self) -> bool:
        """Whether the receiver answers a signed ping at all (any 2xx or 4xx)."""
        try:
            reply = self.ping()
        except ConnectionFailed as exc:
            log.debug("webhook: probe of %s: %s", self.where, exc)
            return False
        return not is_outage(reply.status)

    def finish(self) -> None:
        pass  # every call is complete at the receiver once its request was answered

    def close(self) -> None:
        self.http.close()

    # -- requests
    def ping(self) -> Reply:
        """A signed `{"type": "ping"}` under a fresh id; the reply, whatever its status."""
        return self._send(ping_id(), json_body({"type": PING}))

    def _deliver(self, webhook_id: str, body: Body, what: str) -> None:
        try:
            reply = self._send(webhook_id, body)
        except ConnectionFailed as exc:
            raise LostInTransit(f"webhook {self.where}: {what}: {exc}") from None
        judge(reply, f"webhook {self.where}: {what}", self.hidden)

    def _send(self, webhook_id: str, body: Body) -> Reply:
        """One signed POST; ConnectionFailed when no reply came."""
        timestamp = int(time.time())
        headers = {**self.config.headers,
                   "Content-Type": body.content_type,
                   "webhook-id": webhook_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(self.key, webhook_id, timestamp, body.parts)}
        return self.http.exchange("POST", self.config.url, headers, body.parts(), body.length,
                                  limit=READ_LIMIT)


def _incident(call: Call, attributes: dict[str, str], joined: list[str]) -> dict[str, Any]:
    return {"key": call.key, "attributes": attributes, "joined": joined}


__all__ = ["LostInTransit", "WebhookTarget", "WebhookUnavailable"]
