"""The run lock of a server ledger (design §13): a standby host's run gives way at once, saying
who works; a run that lost its lock stops before its next side effect."""

from __future__ import annotations

import dataclasses
import socket
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
