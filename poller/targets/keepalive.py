"""HTTP(S) for the targets: one kept-alive connection per host for a whole run, TLS verified
(against a private CA when one is named), a timeout on every socket operation, and a request
body sent as parts from an iterator, so that a large file is never held in memory whole.

The standard library's http.client does the protocol; this module keeps the connections, and
turns every way a connection can fail into one exception.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "asterisk-cdr-poller"


class ConnectionFailed(Exception):
    """The server could not be reached, timed out, or dropped the connection."""


@dataclass(frozen=True)
class Reply:
    """What the server answered: its status line, headers and (the start of) its body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()  # in order, a repeated one (Set-Cookie) kept
    body: bytes = b""

    def header(self, name: str) -> str:
        """A header's (first) value, whatever the case of its name ("" when absent)."""
        return next(iter(self.all(name)), "")

    def all(self, name: str) -> list[str]:
        """Every value of a header that may be repeated."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


class KeepAlive:
    """One persistent connection per (scheme, host, port), reused request after request."""

    def __init__(self, timeout: float, verify_tls: bool = True, ca_bundle: str = ""):
        self.timeout = timeout
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        if verify_tls:
            self._tls = ssl.create_default_context(cafile=ca_bundle or None)
        else:
            self._tls = ssl._create_unverified_context()  # the administrator asked for it

    def exchange(self, method: str, url: str, headers: dict[str, str],
                 parts: Iterable[bytes] = (), length: int = 0, timeout: float | None = None,
                 limit: int | None = None) -> Reply:
        """Send one request (its body: `parts`, `length` bytes in all) and read the reply;
        with `limit`, at most that much of the reply's body is read (the rest is dropped with
        the connection). Raises ConnectionFailed for anything short of a reply."""
        parsed = urlsplit(url)
        target = parsed.path or "/"
        if parsed.query:
            target += "?" + parsed.query
        key = _key(parsed.scheme, parsed.hostname or "", parsed.port)
        connection = self._connection(key, timeout or self.timeout)
        sent = {"User-Agent": USER_AGENT, **headers}
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(length))
            connection.endheaders()
            for part in parts:
                connection.send(part)
            response = connection.getresponse()
            body = response.read() if limit is None else response.read(limit)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(key)
            kind = "timed out" if isinstance(exc, socket.timeout) else type(exc).__name__
            raise ConnectionFailed(f"{parsed.hostname}: {kind}: {exc}") from None
        if response.will_close or not response.isclosed():
            self._drop(key)  # the server closes it, or a body was left unread
        return Reply(response.status, response.reason, tuple(response.getheaders()), body)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def _connection(self, key: tuple[str, str, int],
                    timeout: float) -> http.client.HTTPConnection:
        connection = self._connections.get(key)
        if connection is not None and _dropped(connection):
            connection.close()
            connection = None
        if connection is None:
            scheme, host, port = key
            if scheme == "https":
                connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                         context=self._tls)
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._connections[key] = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _drop(self, key: tuple[str, str, int]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()


def _key(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    return (scheme, host, port or (443 if scheme == "https" else 80))


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
