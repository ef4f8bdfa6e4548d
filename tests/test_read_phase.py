"""The read phase on its own (run/read.py): a SQLite cdr table, and the dry run's ledger, which
keeps every write in memory, so each test sees exactly what one read recorded and where it
moved the marks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import (
    DIRECT_ANSWERED,
    OUTGOING,
    QUEUE_ANSWERED,
    cdr_table,
    clone_call,
    insert_rows,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
)

from poller.ledger.store import Ledger
from poller.model import Stage, Status
from poller.run.dryrun import DryRunLedger
from poller.run.options import RunOptions
from poller.run.read import Builder, ReadPhase
from poller.run.report import RunReport
from poller.source.table import CdrSource

NOW = msk("2026-11-26 10:00")


class Reader:
    """One site (config, cdr table) read again and again into one ledger, at chosen times."""

    def __init__(self, tmp_path: Path, rows: list[dict[str, Any]], cursor: str | None = None,
                 ledger: Any = None, **source: Any):
        folder = tmp_path / "pbx"
        folder.mkdir(parents=True)
        self.url = cdr_table(folder, rows, cursor=cursor)
        if cursor is not None:
            source["cursor"] = cursor
        self.config = make_config(tmp_path, self.url, source=source)
        self.ledger = ledger if ledger is not None else DryRunLedger(None)

    def read(self, now: dt.datetime = NOW, **options: Any) -> tuple[RunReport,
                                                                     dt.datetime | None]:
        source_config = self.config.source
        builder = Builder(source_config.incoming, ZoneInfo(source_config.timezone),
                          self.config.recordings.name, now,
                          float(source_config.max_call_length), float(source_config.lookback))
        report = RunReport()
        source = CdrSource(source_config)
        try:
            oldest = ReadPhase(source, self.ledger, source_config, builder,
                               report).execute(RunOptions(now=now, **options))
        finally:
            source.close()
        return report, oldest

    def stage_of(self, rows: list[dict[str, Any]]) -> Stage:
        return self.ledger.calls[key_of(rows)][1]


def test_a_first_read_records_every_call_and_moves_the_watermark_to_the_last_taken(
        tmp_path, sample_rows):
    """The 27 sample calls: incoming ones wait for delivery, the others are skipped; the
    watermark is the last calldate taken, the origin the configured start."""
    reader = Reader(tmp_path, sample_rows)
    report, oldest = reader.read()
    stages = [stage for _, stage in reader.ledger.calls.values()]
    assert (stages.count(Stage.SEEN), stages.count(Stage.SKIPPED)) == (23, 4)
    assert (report.rows, report.new_calls, report.skipped) == (44, 23, 4)
    last = max(row["calldate"] for row in sample_rows)
    assert reader.ledger.watermark() == last
    assert report.watermark == last.isoformat() and report.source_read
    assert reader.ledger.origin() == local("2026-11-26 09:00")
    assert oldest == min(row["calldate"] for row in sample_rows)
    assert reader.stage_of(legs_of(sample_rows, OUTGOING)) == Stage.SKIPPED

    again, _ = reader.read(NOW + dt.timedelta(minutes=1))
    assert (again.new_calls, again.skipped) == (0, 0)
    assert len(reader.ledger.calls) == 27


def test_a_call_still_settling_is_left_for_the_next_read_and_holds_the_watermark(
        tmp_path, sample_rows):
    """A call that ended under source.settle ago may still get rows (CDR batch mode): not
    taken, and the watermark stays before it so that the next read meets it again."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    early = clone_call(direct, local("2026-11-26 09:30:00"))
    fresh = clone_call(direct, local("2026-11-26 09:59:30"))  # 9 s long: ended 21 s ago
    reader = Reader(tmp_path, early + fresh)
    report, _ = reader.read()
    assert report.settling == 1 and set(reader.ledger.calls) == {key_of(early)}
    assert reader.ledger.watermark() == local("2026-11-26 09:30:00")

    later, _ = reader.read(NOW + dt.timedelta(minutes=2))
    assert later.settling == 0 and later.new_calls == 1
    assert reader.ledger.watermark() == local("2026-11-26 09:59:30")


def test_legs_that_arrive_late_rebuild_a_call_nothing_was_sent_for(tmp_path, sample_rows):
    """The queue call read with its first row only, then whole: the ledger's call is rebuilt
    with every leg, still waiting for delivery."""
    queue = clone_call(legs_of(sample_rows, QUEUE_ANSWERED), local("2026-11-26 09:30:00"))
    reader = Reader(tmp_path, queue[:1])
    reader.read()
    assert reader.ledger.calls[key_of(queue)][0].legs == 1
    insert_rows(reader.url, queue[1:])
    report, _ = reader.read(NOW + dt.timedelta(minutes=5))
    call, stage = reader.ledger.calls[key_of(queue)]
    assert (call.legs, stage, report.new_calls) == (len(queue), Stage.SEEN, 0)


def test_a_backfill_records_its_range_and_leaves_the_marks(tmp_path, sample_rows):
    """`--since`: the calls of the range are recorded, the watermark stays where it was."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    old = clone_call(direct, local("2026-11-25 15:00:00"))
    recent = clone_call(direct, local("2026-11-26 09:30:00"))
    reader = Reader(tmp_path, old + recent)
    reader.read()
    assert set(reader.ledger.calls) == {key_of(recent)}
    mark = reader.ledger.watermark()

    report, _ = reader.read(NOW + dt.timedelta(minutes=1), since=local("2026-11-25 00:00"),
                            until=local("2026-11-26 00:00"))
    assert report.new_calls == 1 and key_of(old) in reader.ledger.calls
    assert reader.ledger.watermark() == mark


def test_a_call_whose_legs_defeat_the_builder_gets_a_stand_in(tmp_path, sample_rows,
                                                               monkeypatch):
    """A bug in building one call neither stops the read nor loses the call: the ledger parks
    a stand-in for it (a dry run lists it nowhere), and the others are built as usual."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    broken = clone_call(direct, local("2026-11-26 09:30:00"))
    fine = clone_call(direct, local("2026-11-26 09:31:00"))
    real_build = Builder.__call__

    def build(self: Builder, legs: list[Any]) -> Any:
        if legs[0].linkedid == key_of(broken):
            raise ZeroDivisionError("a bug")
        return real_build(self, legs)

    monkeypatch.setattr(Builder, "__call__", build)
    dry = Reader(tmp_path / "dry", broken + fine)
    report, _ = dry.read()
    assert report.new_calls == 1 and set(dry.ledger.calls) == {key_of(fine)}

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        report, _ = Reader(tmp_path / "real", broken + fine, ledger=ledger).read()
        assert (report.new_calls, report.parked, report.failures) == (1, 1, 1)
        parked = ledger.entry(key_of(broken))
        assert parked is not None and parked.stage == Stage.FAILED
        assert parked.call.status == Status.UNBUILT
        assert "ZeroDivisionError: a bug" in (parked.last_error or "")
        assert ledger.known([key_of(fine)]) == {key_of(fine): Stage.SEEN}
    finally:
        ledger.close()


@pytest.mark.parametrize("cursor", ["id", "addtime"])
def test_a_cursor_read_moves_the_cursor_mark_to_the_last_row_taken(tmp_path, sample_rows,
                                                                     cursor):
    reader = Reader(tmp_path, sample_rows, cursor=cursor)
    report, _ = reader.read()
    assert report.new_calls == 23
    mark = reader.ledger.cursor_mark(cursor)
    if cursor == "id":
        assert mark == 44  # SQLite numbers the rows 1, 2, … as they are inserted
    else:
        assert isinstance(mark, dt.datetime)
    again, _ = reader.read(NOW + dt.timedelta(minutes=1))
    assert again.new_calls == 0


def test_a_cursor_on_a_ledger_that_read_by_calldate_starts_at_its_watermark(tmp_path,
                                                                            sample_rows):
    """The first id read of a ledger that has a watermark but no cursor mark starts at the
    rows of the watermark's lookback, not at the table's first row: a forgotten call older
    than that is not read again."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    forgotten = clone_call(direct, local("2026-11-26 01:00:00"))
    recent = clone_call(direct, local("2026-11-26 09:30:00"))
    ledger = DryRunLedger(None)
    ledger.set_origin(local("2026-11-26 00:00"))
    ledger.set_watermark(local("2026-11-26 09:00"))
    reader = Reader(tmp_path, forgotten + recent, cursor="id", ledger=ledger)
    report, _ = reader.read()
    assert set(reader.ledger.calls) == {key_of(recent)} and report.new_calls == 1
    assert reader.ledger.cursor_mark("id") == len(forgotten) + len(recent)


def test_an_empty_table_is_read_and_sets_no_mark(tmp_path):
    reader = Reader(tmp_path, [], cursor="id")
    report, oldest = reader.read()
    assert report.source_read and oldest is None and report.rows == 0
    assert reader.ledger.cursor_mark("id") is None and reader.ledger.watermark() is None


# -- the dry run's ledger over a real one

def test_the_dry_run_ledger_reads_the_real_one_and_writes_nothing_to_it(tmp_path, sample_rows):
    """What the real ledger holds counts (its marks, its calls: nothing is new twice); what the
    dry run would record stays in memory, and `due` lists what a real run would deliver."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    delivered = clone_call(direct, local("2026-11-26 09:30:00"))
    waiting = clone_call(direct, local("2026-11-26 09:31:00"))
    real = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        # a real run recorded the two calls and delivered the first
        first = Reader(tmp_path / "first", delivered + waiting)
        first.read()
        real.add_many([(call, stage, None) for call, stage in first.ledger.calls.values()])
        real.set_watermark(local("2026-11-26 09:31:00"))
        real.set_origin(local("2026-11-26 09:00:00"))
        real.advance(key_of(delivered), Stage.DONE, object_id="archive-1")
        later = clone_call(direct, local("2026-11-26 09:40:00"))
        reader = Reader(tmp_path / "second", delivered + waiting + later,
                        ledger=DryRunLedger(real))
        report, _ = reader.read()
        assert report.new_calls == 1 and set(reader.ledger.calls) == {key_of(later)}
        assert reader.ledger.watermark() == local("2026-11-26 09:40:00")
        assert [call.key for call in reader.ledger.due(None)] == [key_of(waiting),
                                                                  key_of(later)]
        # the real ledger is as it was
        assert real.watermark() == local("2026-11-26 09:31:00")
        assert real.known([key_of(later)]) == {}
    finally:
        real.close()


def test_the_dry_run_ledger_without_a_real_one_starts_empty():
    ledger = DryRunLedger(None)
    assert ledger.watermark() is None and ledger.pruned_before() is None
    assert ledger.known_legs(["a"]) == {} and ledger.held_calls("a") == {}
    assert ledger.open_incidents(["+79161002301"], dt.datetime(2026, 11, 26),
                                 dt.datetime(2026, 11, 27)) == []
    assert ledger.due(None) == []
    ledger.set_checkpoint("csv", {"offset": 10})
    assert ledger.checkpoint("csv") == {"offset": 10}
    ledger.set_warned_on(dt.date(2026, 11, 26))
    assert ledger.warned_on() == dt.date(2026, 11, 26)
