"""Standard Webhooks signing: the stable id of a message, and the signature over the exact
bytes of a body that may be streamed from disk.

`webhook-signature` is `v1,` and the base64 HMAC-SHA256, keyed with the secret's bytes, of
`<webhook-id>.<webhook-timestamp>.<body>`. The body is given as a function that yields its
parts, so that a large one is read twice (once to sign, once to send) rather than held whole.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable


def message_id(event: str, *subject: str) -> str:
    """The `webhook-id` of one event about one subject (a call's key, an incident's): the same
    on every retry and every run, so that a receiver drops what it already has."""
    digest = hashlib.sha256("\0".join((event, *subject)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def ping_id() -> str:
    """A fresh id for a ping, which nothing deduplicates."""
    return f"ping_{secrets.token_hex(16)}"


def signature(key: bytes, webhook_id: str, timestamp: int,
              parts: Callable[[], Iterable[bytes]]) -> str:
    """The `webhook-signature` of the body `parts()` yields, one pass over it."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256)
    for part in parts():
        mac.update(part)
    return "v1," + base64.b64encode(mac.digest()).decode()
