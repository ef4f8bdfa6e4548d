"""A suds transport that keeps one HTTP(S) connection alive and can stream a large body.

suds' default transport opens a new connection for every call (over HTTPS a TLS handshake per
call) and needs the whole envelope as one string; this one reuses the connection, keeps the
session cookie, and sends an upload as a prefix, base64 chunks read from the file, and a suffix.
"""

from __future__ import annotations

import base64
import http.client
import io
import select
import socket
import ssl
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from suds.transport import Reply, Request, Transport, TransportError

CHUNK = 3 * 64 * 1024  # a multiple of 3: base64 chunks join without padding in between
USER_AGENT = "asterisk-cdr-poller"


class ConnectionFailed(Exception):
    """The server could not be reached, timed out, or dropped the connection."""


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
    """One persistent connection per host, with cookies, timeouts and TLS verification."""

    def __init__(self, timeout: float, verify_tls: bool = True, ca_bundle: str = ""):
        super().__init__()
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        if verify_tls:
            self._tls = ssl.create_default_context(cafile=ca_bundle or None)
        else:
            self._tls = ssl._create_unverified_context()  # the administrator asked for it

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
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    # -- internals
    def _exchange(self, method: str, url: str, headers: dict[str, Any], parts: Any,
                  length: int, timeout: float | None) -> tuple[int, dict[str, str], bytes]:
        parsed = urlsplit(url)
        path = parsed.path or "/"
        if parsed.query:
            path += "?" + parsed.query
        connection = self._connection(parsed.scheme, parsed.hostname or "", parsed.port,
                                      timeout or self.timeout)
        sent = {_text(k): _text(v) for k, v in headers.items()}
        sent.setdefault("User-Agent", USER_AGENT)
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(length))
            connection.endheaders()
            for part in parts:
                connection.send(part)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop(parsed)
            kind = "timed out" if isinstance(exc, socket.timeout) else type(exc).__name__
            raise ConnectionFailed(f"{parsed.hostname}: {kind}: {exc}") from None
        if response.will_close:
            self._drop(parsed)
        for header in response.msg.get_all("Set-Cookie") or []:
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
        return response.status, dict(response.getheaders()), body

    def _connection(self, scheme: str, host: str, port: int | None,
                    timeout: float) -> http.client.HTTPConnection:
        key = (scheme, host, port or (443 if scheme == "https" else 80))
        connection = self._connections.get(key)
        if connection is not None and _dropped(connection):
            connection.close()
            connection = None
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(host, key[2], timeout=timeout,
                                                         context=self._tls)
            else:
                connection = http.client.HTTPConnection(host, key[2], timeout=timeout)
            self._connections[key] = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _drop(self, parsed: Any) -> None:
        key = (parsed.scheme, parsed.hostname or "",
               parsed.port or (443 if parsed.scheme == "https" else 80))
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket the server has closed reads as ready (EOF): reconnect first,
    rather than send a request that may or may not have been processed."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _looks_like_xml(headers: dict[str, str], body: bytes) -> bool:
    kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return "xml" in kind.lower() or body.lstrip()[:1] == b"<"


def _chain(*iterables: Any) -> Iterator[bytes]:
    for iterable in iterables:
        yield from iterable


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
