"""The run lock of a server ledger: one active poller per source across hosts (design §13).

Two hosts running one config against one MariaDB or PostgreSQL ledger (a standby) must never
work at once: the file lock in each host's state.dir cannot see the other. The lock lives in the
ledger's server instead — MariaDB's GET_LOCK, PostgreSQL's session advisory lock — named after
the ledger's database and the source, and held on a connection of its own for the batch. When
the active host dies its connection drops, the server frees the lock, and the standby's next
run takes it. A host whose lock connection is gone (a network cut, the server restarted) stops
before its next side effect: the standby may already be working.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from poller.databases import database_error
from poller.errors import LedgerUnavailable, LockHeld
from poller.ledger.settings import read_setting, setting_name

log = logging.getLogger("poller")

HOLDER = "run_holder"  # the setting that says which host and process holds the lock
# the server drops an idle lock connection after this long (a frozen or cut-off host frees
# the lock); the batch pings it more often than that
IDLE_LIMIT = 120
PING_EVERY = 20.0
WAIT_STEP = 5  # seconds a waiting backfill asks for the lock at a time
PG_NAMESPACE = 0x504F4C4C  # "POLL": the first half of our advisory lock keys


def lock_name(url: sa.engine.URL, source: str) -> str:
    """The lock's name: the ledger's database and the source (a MySQL lock is server-wide,
    and names are at most 64 characters)."""
    name = f"poller:{url.database or ''}:{source}"
    if len(name) > 64:
        name = f"poller:{hashlib.sha256(name.encode()).hexdigest()[:57]}"
    return name


def pg_key(name: str) -> int:
    """The second half of a PostgreSQL advisory lock key for `name` (a positive int4)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Holder:
    """Who holds a source's run lock."""

    host: str
    pid: int
    since: str  # ISO 8601 UTC

    def __str__(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"


def holder_of(text: str | None) -> Holder | None:
    """The holder a `run_holder` setting names, or None when it names none."""
    try:
        data = json.loads(text or "")
        return Holder(str(data["host"]), int(data["pid"]), str(data["since"]))
    except (ValueError, TypeError, KeyError):
        return None


def is_server(url: str) -> bool:
    return sa.engine.make_url(url).get_backend_name() in ("mysql", "postgresql")


# a lock connection cut off from its server must not hang the run (it stops instead):
# PyMySQL waits for an answer without end unless told, libpq notices a dead peer by keepalives
CUT_OFF = {"mysql": {"read_timeout": 30, "write_timeout": 30},
           "postgresql": {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                          "keepalives_count": 3}}


def _engine(url: sa.engine.URL) -> sa.engine.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT",
                            connect_args=CUT_OFF.get(url.get_backend_name(), {}))


class LedgerLock:
    """The source's run lock in a server ledger, held on its own connection."""

    def __init__(self, url: str, source: str, wait: bool = False):
        self.url = url
        self.parsed = sa.engine.make_url(url)
        self.source = source
        self.name = lock_name(self.parsed, source)
        self.wait = wait
        self.engine: sa.engine.Engine | None = None
        self.conn: sa.Connection | None = None
        self._guard = threading.Lock()  # the connection is used by the pinger too
        self._stop = threading.Event()
        self._pinger: threading.Thread | None = None
        self.lost: str | None = None

    @property
    def mysql(self) -> bool:
        return self.parsed.get_backend_name() == "mysql"

    def __enter__(self) -> LedgerLock:
        self.engine = _engine(self.parsed)
        try:
            self.conn = self.engine.connect()
            self._limit_idle()
            said = False
            while not self._try():
                if not self.wait:
                    holder = self.holder()
                    raise LockHeld(f"another run holds the ledger's lock {self.name}"
                                   f"{_by(holder)}", holder.host if holder else None)
                if not said:  # a backfill waits its turn: say so, or it looks hung
                    log.info("another run holds the ledger's lock %s%s; waiting for it",
                             self.name, _by(self.holder()))
                    said = True
        except sa.exc.OperationalError as exc:
            self._close()
            raise database_error(exc, self.url, "state") from None
        except BaseException:
            self._close()
            raise
        self._pinger = threading.Thread(target=self._ping, name="ledger-lock", daemon=True)
        self._pinger.start()
        return self

    def _limit_idle(self) -> None:
        """A lock connection the host stops using (frozen, cut off) is dropped by the server
        after IDLE_LIMIT, freeing the lock; the pinger keeps a live one busy."""
        assert self.conn is not None
        try:
            if self.mysql:
                self.conn.exec_driver_sql(f"SET SESSION wait_timeout = {IDLE_LIMIT}")
            else:
                self.conn.exec_driver_sql(f"SET idle_session_timeout = '{IDLE_LIMIT}s'")
        except sa.exc.ProgrammingError:  # PostgreSQL before 14: TCP keepalives only
            pass

    def _try(self) -> bool:
        assert self.conn is not None
        if self.mysql:
            got = self.conn.execute(sa.text("SELECT GET_LOCK(:name, :wait)"),
                                    {"name": self.name, "wait": WAIT_STEP if self.wait else 0})
            return bool(got.scalar())
        got = self.conn.execute(sa.text("SELECT pg_try_advisory_lock(:a, :b)"),
                                {"a": PG_NAMESPACE, "b": pg_key(self.name)})
        if got.scalar():
            return True
        if self.wait:
            time.sleep(WAIT_STEP)
        return False

    def holder(self) -> Holder | None:
        """Who holds the lock, as the holder wrote it in the ledger (None: not said)."""
        return read_holder(self.conn, self.source)

    def announce(self, ledger: Any) -> None:
        """Say in the ledger which host and process holds the lock, for the other host's run
        and `status`."""
        since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        try:
            ledger.put(HOLDER, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                           "since": since}))
        except sa.exc.SQLAlchemyError as exc:  # only for others to read: never stops a run
            log.warning("could not note the lock's holder in the ledger: %s", exc)

    def alive(self) -> None:
        """Raise LedgerUnavailable unless the lock is still this run's: asked before every
        side effect, so a host that lost it does nothing the standby may be doing too."""
        if self.lost is None:
            self._check()
        if self.lost is not None:
            raise LedgerUnavailable(f"state database: the ledger's lock {self.name} was lost "
                                    f"({self.lost}): stopped before the next delivery, another "
                                    "host's run may be working")

    def _check(self) -> None:
        with self._guard:
            if self.lost is not None or self.conn is None:
                return
            try:
                if self.mysql:
                    ours = self.conn.execute(sa.text("SELECT IS_USED_LOCK(:name) = "
                                                     "CONNECTION_ID()"), {"name": self.name})
                    if not ours.scalar():
                        self.lost = "the server no longer gives it to this connection"
                else:
                    self.conn.exec_driver_sql("SELECT 1")  # held as long as the session lives
            except sa.exc.SQLAlchemyError as exc:
                self.lost = f"{type(exc).__name__}: {getattr(exc, 'orig', exc)}"

    def _ping(self) -> None:
        while not self._stop.wait(PING_EVERY):
            self._check()
            if self.lost is not None:
                log.error("the ledger's lock %s was lost (%s): no delivery after this one",
                          self.name, self.lost)
                return

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._pinger is not None:
            self._pinger.join()
        with self._guard:
            if self.conn is not None and self.lost is None:
                try:
                    if self.mysql:
                        self.conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"),
                                          {"name": self.name})
                    else:
                        self.conn.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"),
                                          {"a": PG_NAMESPACE, "b": pg_key(self.name)})
                except sa.exc.SQLAlchemyError as failure:  # closing the connection frees it
                    log.debug("releasing the ledger's lock: %s", failure)
            self._close()

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except sa.exc.SQLAlchemyError:
                pass
            self.conn = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


class FileLockOnly:
    """A SQLite ledger lives on one host: the file lock in state.dir is its run lock."""

    def __enter__(self) -> FileLockOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def announce(self, ledger: Any) -> None:
        return None

    def alive(self) -> None:
        return None


def ledger_lock(url: str, source: str, wait: bool) -> LedgerLock | FileLockOnly:
    """The run lock a ledger needs besides the file lock: its server's, when it has one."""
    return LedgerLock(url, source, wait) if is_server(url) else FileLockOnly()


def _by(holder: Holder | None) -> str:
    return f" ({holder})" if holder is not None else ""


def read_holder(conn: sa.Connection | None, source: str) -> Holder | None:
    """The holder the ledger names for `source` (the lock itself says whether one holds it)."""
    if conn is None:
        return None
    try:
        text = read_setting(conn, setting_name(source, HOLDER))
    except sa.exc.SQLAlchemyError:  # a first run: no ledger yet
        return None
    return holder_of(text)


def held_in_ledger(url: str, source: str) -> Holder | None:
    """For `status`: the holder of the source's lock in a server ledger, or None when no run
    holds it. Only looks (a monitoring user may do that): the lock is never taken."""
    parsed = sa.engine.make_url(url)
    name = lock_name(parsed, source)
    engine = _engine(parsed)
    try:
        with engine.connect() as conn:
            if parsed.get_backend_name() == "mysql":
                held = conn.execute(sa.text("SELECT IS_USED_LOCK(:name)"),
                                    {"name": name}).scalar() is not None
            else:
                held = (conn.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                    "classid = :a AND objid = :b AND objsubid = 2 AND granted"),
                    {"a": PG_NAMESPACE, "b": pg_key(name)}).scalar() or 0) > 0
            if not held:
                return None
            return read_holder(conn, source) or Holder("?", 0, "?")
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()
