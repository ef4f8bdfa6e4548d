"""A suds transport that keeps one HTTP(S) connection alive and can stream a large body.

suds' default transport opens a new connection for every call (over HTTPS a TLS handshake per
call) and needs the whole envelope as one string; this one reuses the connection, keeps the
session cookie, and sends an upload as a prefix, base64 chunks read from the file, and a suffix.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from suds.transport import Reply, Request, Transport, TransportError

from poller.targets.keepalive import ConnectionFailed, KeepAlive

__all__ = ["ConnectionFailed", "HttpStatusError", "KeepAliveTransport"]

CHUNK = 3 * 64 * 1024  # a multiple of 3: base64 chunks join without padding in between


class HttpStatusError(Exception):
    """A non-SOAP error reply (an HTML or text page with a 4xx/5xx status)."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace').strip()}")
        self.status = status


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def base64_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while True:
            data = handle.read(CHUNK)
            if not data:
                return
            yield base64.b64encode(data)


class KeepAliveTransport(Transport):
    """suds over one persistent connection per host, with cookies, timeouts and TLS
    verification."""

    def __init__(self, timeout: float, verify_tls: bool = True, ca_bundle: str = ""):
        super().__init__()
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.http = KeepAlive(timeout, verify_tls, ca_bundle)

    # -- the suds Transport interface
    def open(self, request: Request) -> io.BytesIO:
        status, headers, body = self._exchange("GET", request.url, {}, [], 0, request.timeout)
        if status != 200:
            raise TransportError(f"HTTP {status} for {request.url}", status, io.BytesIO(body))
        return io.BytesIO(body)

    def send(self, request: Request) -> Reply:
        body = request.message or b""
        status, headers, reply = self._exchange("POST", request.url, dict(request.headers),
                                                [body], len(body), request.timeout)
        if status >= 300:
            if not _looks_like_xml(headers, reply):
                # suds would try to parse it as a SOAP fault and fail with a SAX error
                raise HttpStatusError(status, reply)
            raise TransportError(f"HTTP {status}", status, io.BytesIO(reply))
        return Reply(status, headers, reply)

    # -- streaming
    def post_stream(self, url: str, headers: dict[str, Any], prefix: bytes, path: Path,
                    suffix: bytes) -> tuple[int, bytes]:
        """POST prefix + base64(file) + suffix without building it in memory."""
        size = path.stat().st_size
        length = len(prefix) + base64_length(size) + len(suffix)
        parts = _chain([prefix], base64_chunks(path), [suffix])
        status, reply_headers, reply = self._exchange("POST", url, headers, parts, length, None)
        if status >= 300 and not _looks_like_xml(reply_headers, reply):
            raise HttpStatusError(status, reply)
        return status, reply

    def close(self) -> None:
        self.http.close()

    # -- internals
    def _exchange(self, method: str, url: str, headers: dict[str, Any], parts: Any,
                  length: int, timeout: float | None) -> tuple[int, dict[str, str], bytes]:
        sent = {_text(k): _text(v) for k, v in headers.items()}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        reply = self.http.exchange(method, url, sent, parts, length, timeout)
        for header in reply.all("Set-Cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
        return reply.status, dict(reply.headers), reply.body


def _looks_like_xml(headers: dict[str, str], body: bytes) -> bool:
    kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return "xml" in kind.lower() or body.lstrip()[:1] == b"<"


def _chain(*iterables: Any) -> Iterator[bytes]:
    for iterable in iterables:
        yield from iterable


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
