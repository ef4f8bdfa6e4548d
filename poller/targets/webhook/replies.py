"""Whose fault a webhook failure is (design section 4), decided from the reply alone.

2xx: delivered. No reply, a timeout, 5xx, 408 and 429: the receiver's outage, charged to no
call (a `Retry-After` is kept: no request before then). A redirect is not followed: the URL is
wrong for every call alike. Any other 4xx: this request's own fault, charged to its call, with
the status line and the start of the body for `status` to show.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

from poller.errors import ConfigError, DeliveryError, TargetUnavailable
from poller.targets.keepalive import Reply

OUTAGE = frozenset({408, 429})  # and every 5xx
LONGEST_WAIT = 3600.0  # seconds of Retry-After honoured at most: a typo must not stop a day
SHOWN = 200  # characters of a reply's body kept in an error


class WebhookUnavailable(DeliveryError, TargetUnavailable):
    """The receiver did not answer, or answered that it cannot take requests now."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # honoured by the runs: none tries before then


class LostInTransit(WebhookUnavailable):
    """The connection failed during one request (reset, timed out, refused)."""

    in_transit = True


def is_outage(status: int) -> bool:
    return status >= 500 or status in OUTAGE or status < 200


def judge(reply: Reply, what: str, hidden: tuple[str, ...] = ()) -> None:
    """Nothing when the reply says delivered; else the error that says whose fault it is.
    `what` names the request in the message; `hidden` are texts (credentials) never shown,
    should the receiver echo them."""
    status = reply.status
    if 200 <= status < 300:
        return
    line = f"{what}: HTTP {status} {reply.reason}".rstrip()
    if is_outage(status):
        wait = retry_after(reply.header("Retry-After"), dt.datetime.now(dt.UTC))
        asked = f" (Retry-After: {wait:.0f} s)" if wait else ""
        raise WebhookUnavailable(f"{line}{asked}", wait)
    if 300 <= status < 400:
        location = reply.header("Location") or "no Location given"
        raise ConfigError(f"target.webhook.url: {line}: the receiver redirects to "
                          f"{shown(location, hidden)}; redirects are not followed (a POST "
                          "would lose its body or its signature): set the URL it names")
    text = shown(reply.body.decode("utf-8", errors="replace"), hidden)
    raise DeliveryError(f"{line}: {text}" if text else line)


def retry_after(value: str, now: dt.datetime) -> float | None:
    """Seconds to wait that a `Retry-After` header asks for (delta-seconds or an HTTP date),
    at most LONGEST_WAIT; None when absent or not understood."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), LONGEST_WAIT) or None


def shown(text: str, hidden: tuple[str, ...] = ()) -> str:
    """A reply's text as an error shows it: one line, its start, no credential in it."""
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"\s+", " ", text).strip()[:SHOWN]
