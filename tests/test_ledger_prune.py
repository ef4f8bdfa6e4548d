"""Forgetting delivered calls (state.retention): one transaction with its guard."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import poller.ledger.store as store
from poller.ledger.store import Ledger
from poller.model import Call, Stage, Status

MSK = dt.timezone(dt.timedelta(hours=3))


def _call(key: str, local: str) -> Call:
    naive = dt.datetime.fromisoformat(local)
    start = naive.replace(tzinfo=MSK)
    return Call(key=key, start=start, end=start + dt.timedelta(seconds=30), number="89161234567",
                name="", did="74951230001", duration=30, talk_time=20, wait_time=10,
                status=Status.ANSWERED, answered_by="201", incoming=True, recordings=(),
                expects_recording=False, first_calldate=naive, last_calldate=naive, legs=1)


@pytest.fixture
def ledger(tmp_path: Path):
    opened = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    opened.add_many([(_call("old", "2026-11-01 09:00:00"), Stage.DONE, None),
                     (_call("skipped", "2026-11-01 09:05:00"), Stage.SKIPPED, "not incoming"),
                     (_call("waiting", "2026-11-01 09:10:00"), Stage.SEEN, None),
                     (_call("new", "2026-11-26 09:00:00"), Stage.DONE, None)])
    yield opened
    opened.close()


def test_prune_forgets_finished_calls_before_the_mark_and_keeps_the_guard(ledger):
    assert ledger.prune(dt.datetime(2026, 11, 20)) == 2
    assert set(ledger.known(["old", "skipped", "waiting", "new"])) == {"waiting", "new"}
    assert ledger.pruned_before() == dt.datetime(2026, 11, 20)
    assert ledger.prune(dt.datetime(2026, 11, 10)) == 0  # the guard never moves back
    assert ledger.pruned_before() == dt.datetime(2026, 11, 20)


def test_a_prune_that_fails_before_its_guard_forgets_nothing(ledger, monkeypatch):
    """Calls forgotten without `pruned_before` would let a later backfill deliver them again:
    the delete and the guard commit together or not at all."""
    def crash(conn, name, value):
        raise RuntimeError("killed between the delete and the guard")

    monkeypatch.setattr(store, "write_setting", crash)
    with pytest.raises(RuntimeError):
        ledger.prune(dt.datetime(2026, 11, 20))
    assert set(ledger.known(["old", "skipped", "waiting", "new"])) == {
        "old", "skipped", "waiting", "new"}
    assert ledger.pruned_before() is None
