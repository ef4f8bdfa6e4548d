"""Where log lines go, and how a value from the PBX is kept from forging one.

A caller name or `recordingfile` is whatever the PBX was sent: a newline in it would start a
line of its own (`ERROR …`) in the log. Every rendered message, and every value `status`
prints, has its control characters escaped.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import sys
from logging.handlers import SysLogHandler
from typing import Any, Protocol

# C0 controls (tab too), DEL and the C1 controls, which terminals also act on
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`)."""
    return _CONTROLS.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")


class EscapingFormatter(logging.Formatter):
    """A formatter whose message part cannot hold a line break; a traceback keeps its lines.
    Its time stamps are the host's local time with the offset (`2026-11-26 09:40:00 +03:00`):
    the calls it speaks of are in source.timezone, which may be another zone, and a stamp
    without its offset would make them look hours off."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        moment = dt.datetime.fromtimestamp(record.created).astimezone()
        return f"{moment:%Y-%m-%d %H:%M:%S} {moment.isoformat()[-6:]}"

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class ConsoleHandler(logging.StreamHandler):
    """Standard error's handler. A live line drawn on the same terminal (a backfill's progress
    bar) is cleared before each log line and drawn again below it, so the two never share a
    line."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.live: LiveLine | None = None

    def emit(self, record: logging.LogRecord) -> None:
        live = self.live
        if live is None:
            super().emit(record)
            return
        live.clear()
        super().emit(record)
        live.redraw()


class LiveLine(Protocol):
    """A line that rewrites itself at the bottom of a terminal."""

    def clear(self) -> None: ...

    def redraw(self) -> None: ...


def console_handlers() -> list[ConsoleHandler]:
    """The root logger's handlers that write to standard error."""
    return [h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)]


SYSLOG_SOCKET = "/dev/log"  # the local syslog daemon's socket (journald's or rsyslog's)


def setup_logging(verbose: int, quiet: bool, syslog: bool = False) -> None:
    """Log lines to standard error with time stamps, and to syslog (daemon) when asked."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler = ConsoleHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(message)s"))
    handlers: list[logging.Handler] = [handler]
    if syslog:
        to_syslog = _syslog_handler()
        if to_syslog is not None:
            handlers.append(to_syslog)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    # suds logs whole SOAP envelopes (the login one carries the password) at debug level
    logging.getLogger("suds").setLevel(logging.WARNING)


def _syslog_handler() -> logging.Handler | None:
    """A handler for the local syslog socket, or None (said once on standard error, where
    every line still goes): a UDP fallback would drop every line unheard on a host without a
    syslog daemon."""
    try:
        # SysLogHandler connects lazily and never says it could not: ask the socket first
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect(SYSLOG_SOCKET)
    except OSError as exc:
        sys.stderr.write(f"--syslog: no syslog daemon to send to ({SYSLOG_SOCKET}: "
                         f"{exc.strerror or exc}); logging to standard error only\n")
        return None
    handler = SysLogHandler(address=SYSLOG_SOCKET, facility=SysLogHandler.LOG_DAEMON)
    # the priority (<30> is daemon.info) carries the level: the line does not repeat it
    handler.setFormatter(EscapingFormatter("poller[%(process)d]: %(message)s"))
    return handler
