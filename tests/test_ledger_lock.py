"""The run lock of a server ledger (design §13): a standby host's run gives way at once, saying
who works; a run that lost its lock stops before its next side effect."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support import (
    DIRECT_ANSWERED,
    archived,
    cdr_table,
    clone_call,
    legs_of,
    local,
    make_config,
    msk,
    open_ledger,
    run_cli,
    write_config,
)

from poller.errors import ExitCode, LockHeld
from poller.ledger.store import Ledger
from poller.model import Stage
from poller.ops import status as status_view
from poller.run.follow import LockWait, follow
from poller.run.ledgerlock import PG_NAMESPACE, LedgerLock, lock_name, pg_key
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.targets.kinds import open_target

NOW = msk("2026-11-26 12:00")


def three_calls(sample_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    return [row for start in ("2026-11-26 09:10", "2026-11-26 09:40", "2026-11-26 10:15")
            for row in clone_call(direct, local(start))]


# the servers' marks by hand: the fixture is asked for by name, which the marks cannot see
SERVERS = [pytest.param("mysql", marks=pytest.mark.mariadb),
           pytest.param("postgresql", marks=pytest.mark.postgresql)]


def server_url(request: Any, kind: str) -> str:
    database = request.getfixturevalue("empty_db" if kind == "mysql" else "pg_db")
    return database.url + ("?charset=utf8mb4" if kind == "mysql" else "")


def host_config(tmp_path: Path, host: str, cdr_url: str, url: str) -> Any:
    """A host's config: its own state.dir, the shared ledger, cdr table and archive."""
    return make_config(tmp_path / host, cdr_url, source={"name": "kiev"}, state={"url": url},
                       target={"archive": {"dir": str(tmp_path / "archive")}})


def kill_the_lock_holder(url: str, source: str) -> None:
    """End the connection holding the source's lock, as a network cut or a server restart
    would."""
    parsed = sa.engine.make_url(url)
    name = lock_name(parsed, source)
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if parsed.get_backend_name() == "mysql":
            holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
            assert holder is not None
            conn.exec_driver_sql(f"KILL CONNECTION {int(holder)}")
        else:
            killed = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = :a AND objid = :b AND objsubid = 2"),
                {"a": PG_NAMESPACE, "b": pg_key(name)}).all()
            assert killed
    engine.dispose()


@pytest.mark.parametrize("kind", SERVERS)
def test_a_second_hosts_run_exits_0_at_once_naming_the_host_that_works(
        tmp_path, sample_rows, request, kind):
    url = server_url(request, kind)
    cdr = cdr_table(tmp_path, three_calls(sample_rows))
    active = host_config(tmp_path, "active", cdr, url)
    standby = host_config(tmp_path, "standby", cdr, url)
    ledger = Ledger(url, source="kiev")
    try:
        with LedgerLock(url, "kiev") as held:  # the active host, in the middle of its batch
            held.announce(ledger)
            with pytest.raises(LockHeld, match=f"host {socket.gethostname()}, pid "):
                run_once(standby, RunOptions(now=NOW))
            path = write_config(tmp_path / "standby", cdr, source={"name": "kiev"},
                                state={"url": url})
            result = run_cli("--config", str(path), "run")
            assert result.exit_code == ExitCode.OK and "nothing to do" in result.output, \
                result.output
            shown = status_view.collect(standby, now=NOW)
            assert shown.run_host == socket.gethostname()
            assert "run:         in progress on host" in status_view.render(shown)
            # the other source's lock is its own
            other = dataclasses.replace(active, source=dataclasses.replace(active.source,
                                                                           name="lviv"))
            assert run_once(other, RunOptions(now=NOW)).exit_code == ExitCode.OK
    finally:
        ledger.close()
    assert status_view.collect(standby, now=NOW).run_pid is None  # freed
    report = run_once(standby, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK and sum(report.delivered.values()) == 3


@pytest.mark.parametrize("kind", SERVERS)
def test_a_run_that_lost_its_lock_stops_before_the_next_side_effect(
        tmp_path, sample_rows, request, kind):
    """The lock connection dies after the first call's object was made: nothing more is sent,
    no call is charged; the next run finishes the three calls, each made once."""
    url = server_url(request, kind)
    config = host_config(tmp_path, "active", cdr_table(tmp_path, three_calls(sample_rows)), url)

    class CutAfterCreate:
        def __init__(self, target: Any):
            self.target = target
            self.sends_recording_with_call = target.sends_recording_with_call

        def create(self, *args: Any) -> str:
            made = self.target.create(*args)
            kill_the_lock_holder(url, "kiev")
            return made

        def __getattr__(self, name: str) -> Any:
            return getattr(self.target, name)

    report = run_once(config, RunOptions(now=NOW),
                      target_factory=lambda c: CutAfterCreate(open_target(c)))
    assert report.exit_code == ExitCode.PARTIAL
    assert any("lock" in text and "was lost" in text for text in report.unavailable), \
        report.unavailable
    assert len(archived(tmp_path)) == 1
    with open_ledger(config) as ledger:
        ledger.source = "kiev"
        assert ledger.counts() == {Stage.DONE: 1, Stage.SEEN: 2}
        assert all(e.attempts == 0 for e in ledger.entries(list(Stage)))
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK, report.summary()
    assert len(archived(tmp_path)) == 3


class Polls(threading.Event):
    """follow()'s stop event: ends the loop after `count` polls and frees the active host's
    lock while it waits after poll `release_after`."""

    def __init__(self, count: int, release_after: int, held: LedgerLock):
        super().__init__()
        self.count, self.release_after, self.held, self.done = count, release_after, held, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.done += 1
        if self.done == self.release_after:
            self.held.__exit__(None, None, None)  # the active host's run ends
        if self.done >= self.count:
            self.set()
        return self.is_set()


@pytest.mark.parametrize("kind", SERVERS)
def test_a_following_standby_says_once_that_it_waits_and_when_it_takes_over(
        tmp_path, sample_rows, request, kind, caplog):
    """A standby's `run --follow` meets the active host's lock at every full poll: INFO when it
    starts waiting, DEBUG for the polls in between, INFO naming the host it took over from."""
    url = server_url(request, kind)
    standby = host_config(tmp_path, "standby", cdr_table(tmp_path, three_calls(sample_rows)),
                          url)
    ledger = Ledger(url, source="kiev")
    held = LedgerLock(url, "kiev").__enter__()  # the active host, in the middle of its batch
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        held.announce(ledger)
        polls = Polls(6, release_after=4, held=held)
        with caplog.at_level(logging.DEBUG, logger="poller"):
            assert follow(standby, 0.0, stop=polls) == ExitCode.OK
    finally:
        held.__exit__(None, None, None)
        ledger.close()
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    waits = [r for r in caplog.records if "another run holds the ledger's lock" in r.message]
    assert [r.levelno for r in waits] == [logging.INFO] + [logging.DEBUG] * 3, \
        [(r.levelname, r.message) for r in waits]
    assert f"host {socket.gethostname()}, pid " in waits[0].message
    took = [r for r in caplog.records if "took over the run lock" in r.message]
    assert [(r.levelno, r.message) for r in took] == [
        (logging.INFO, f"took over the run lock from host {socket.gethostname()}")]
    assert took[0].created > waits[-1].created
    assert len(archived(tmp_path)) == 3  # the poll that took over delivered


def test_a_new_holder_of_the_lock_is_said_again_and_a_file_lock_names_no_host():
    wait = LockWait()
    assert wait.got() is None  # no wait, nothing to say
    assert [wait.held("pbx-a"), wait.held("pbx-a"), wait.held("pbx-c"), wait.held("pbx-c")] == \
        [logging.INFO, logging.DEBUG, logging.INFO, logging.DEBUG]
    assert wait.got() == "took over the run lock from host pbx-c" and wait.got() is None
    assert [wait.held(None), wait.held(None)] == [logging.INFO, logging.DEBUG]
    assert wait.got() == "the run lock is free again: polling on"
