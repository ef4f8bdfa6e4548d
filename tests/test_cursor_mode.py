"""source.cursor: an insertion-ordered column (an auto-increment id, addtime) as the cursor."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from support import (
    BERLIN,
    add_cursor_column,
    archived,
    clone_call,
    explain,
    insert_rows,
    key_of,
    legs_of,
    make_config,
    msk,
    open_ledger,
    run_cli,
    write_config,
)

from poller.errors import ExitCode
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.source.table import CdrSource

NOW = msk("2026-11-26 10:00")
DIRECT = "1795675107.1"  # P1-01, answered


def test_id_cursor_delivers_a_call_longer_than_the_lookback(tmp_path, cdr_url, sample_rows):
    """With an id cursor a row inserted late is found by its id, however old its calldate."""
    add_cursor_column(cdr_url, "id")
    insert_rows(cdr_url, sample_rows)
    config = make_config(tmp_path, cdr_url, source={"cursor": "id", "lookback": "1h",
                                                        "start": "2026-11-26 00:00"})
    first = run_once(config, RunOptions(now=NOW))
    assert first.exit_code == ExitCode.OK, first.summary()
    assert len(archived(tmp_path)) == 23 and first.skipped == 4
    with open_ledger(config) as ledger:
        assert ledger.cursor_mark("id") == 44

    # an eight-hour call that began at 07:00, long before watermark - lookback (08:43), ends
    # now: its row arrives with the next id (reading by calldate would never look back there)
    long_call = clone_call(legs_of(sample_rows, DIRECT), dt.datetime(2026, 11, 26, 7, 0),
                           duration=8 * 3600 + 5, billsec=8 * 3600)
    insert_rows(cdr_url, long_call)
    later = msk("2026-11-26 15:05")
    second = run_once(config, RunOptions(now=later))
    assert second.exit_code == ExitCode.OK, second.summary()
    assert second.new_calls == 1 and second.rows <= 45
    assert archived(tmp_path)[key_of(long_call)]["duration"] == 8 * 3600 + 5
    third = run_once(config, RunOptions(now=later + dt.timedelta(minutes=1)))
    assert (third.new_calls, sum(third.delivered.values())) == (0, 0)
    with open_ledger(config) as ledger:
        assert ledger.cursor_mark("id") == 45


def test_id_committed_out_of_order_within_the_tail_is_not_lost(tmp_path, cdr_url, sample_rows):
    """Concurrent inserts commit ids out of order: a lower id that appears later is still read."""
    add_cursor_column(cdr_url, "id")
    one = clone_call(legs_of(sample_rows, DIRECT), dt.datetime(2026, 11, 26, 9, 10))
    two = clone_call(legs_of(sample_rows, DIRECT), dt.datetime(2026, 11, 26, 9, 11))
    insert_rows(cdr_url, [dict(one[0], id=10)])
    insert_rows(cdr_url, [dict(two[0], id=12)])
    config = make_config(tmp_path, cdr_url, source={"cursor": "id"})
    assert run_once(config, RunOptions(now=NOW)).new_calls == 2
    late = clone_call(legs_of(sample_rows, DIRECT), dt.datetime(2026, 11, 26, 9, 12))
    insert_rows(cdr_url, [dict(late[0], id=11)])  # its transaction committed after id 12's
    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert report.new_calls == 1
    assert set(archived(tmp_path)) == {key_of(one), key_of(two), key_of(late)}


def test_addtime_cursor(tmp_path, cdr_url, sample_rows):
    """amoCRM's `addtime TIMESTAMP DEFAULT CURRENT_TIMESTAMP` works as the cursor too."""
    add_cursor_column(cdr_url, "addtime")
    insert_rows(cdr_url, sample_rows)
    config = make_config(tmp_path, cdr_url, source={"cursor": "addtime"})
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK, report.summary()
    assert len(archived(tmp_path)) == 23
    with open_ledger(config) as ledger:
        assert isinstance(ledger.cursor_mark("addtime"), dt.datetime)
    again = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert (again.new_calls, sum(again.delivered.values())) == (0, 0)


def test_backfill_with_a_cursor_reads_by_calldate_and_delivers_nothing_twice(tmp_path, cdr_url,
                                                                              sample_rows):
    """--since is a date range: it reads calldate windows, and the ledger prevents duplicates."""
    add_cursor_column(cdr_url, "id")
    insert_rows(cdr_url, sample_rows)
    config = make_config(tmp_path, cdr_url, source={"cursor": "id"})
    run_once(config, RunOptions(now=NOW))
    backfill = run_once(config, RunOptions(since=dt.datetime(2026, 11, 26), now=NOW))
    assert backfill.rows == 44 and backfill.new_calls == 0
    assert sum(backfill.delivered.values()) == 0
    with open_ledger(config) as ledger:
        assert ledger.cursor_mark("id") == 44


def test_id_cursor_reads_by_primary_key_range(tmp_path, cdr_db, sample_rows):
    """The cursor window is a range on the id's index, not a scan of the table."""
    add_cursor_column(cdr_db.url, "id")
    rows = []
    for n in range(60):
        rows += clone_call(legs_of(sample_rows, DIRECT),
                           dt.datetime(2026, 11, 20, 8, 0) + dt.timedelta(minutes=n))
    cdr_db.insert(rows * 10)
    config = make_config(tmp_path, cdr_db.url, source={"cursor": "id"})
    source = CdrSource(config.source)
    try:
        (plan,) = explain(source, 10, 20, "id")
    finally:
        source.close()
    assert plan["type"] == "range" and plan["key"] == "PRIMARY", plan


def test_a_text_column_is_no_cursor(tmp_path, cdr_url, sample_rows):
    """A cursor column that holds text is a configuration error naming it (exit 2)."""
    insert_rows(cdr_url, sample_rows)
    path = write_config(tmp_path, cdr_url, source={"cursor": "src"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "source.cursor" in result.output and "'src'" in result.output


def test_a_missing_cursor_column_is_named(tmp_path, cdr_url, sample_rows):
    """A cursor naming a column the table lacks stops with exit 2 and names it."""
    path = write_config(tmp_path, cdr_url, source={"cursor": "addtime"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "'addtime'" in result.output


def _utc(*fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=dt.UTC)


def test_addtime_cursor_across_fall_back_loses_no_call(tmp_path, cdr_db, sample_rows):
    """A TIMESTAMP cursor reads in the server's zone, which repeats 02:00-03:00 in autumn: a call
    inserted at 02:05 CET reads earlier than the mark set at 02:50 CEST, and is still taken."""
    add_cursor_column(cdr_db.url, "addtime")

    def config_at(offset: str):  # the server's SYSTEM zone before and after the change
        url = cdr_db.url + "?init_command=" + quote(f"SET time_zone='{offset}'")
        return make_config(tmp_path, url, source={"cursor": "addtime", "timezone": "Europe/Berlin",
                                                  "start": "2026-10-25 00:00"})

    direct = legs_of(sample_rows, DIRECT)
    before = clone_call(direct, dt.datetime(2026, 10, 25, 2, 50), zone=BERLIN,
                        epoch=int(_utc(2026, 10, 25, 0, 50).timestamp()))
    cdr_db.insert([dict(row, addtime=dt.datetime(2026, 10, 25, 0, 50, 10)) for row in before])
    first = run_once(config_at("+02:00"), RunOptions(now=_utc(2026, 10, 25, 0, 58)))
    assert first.new_calls == 1, first.summary()

    after = clone_call(direct, dt.datetime(2026, 10, 25, 2, 5), zone=BERLIN,
                       epoch=int(_utc(2026, 10, 25, 1, 5).timestamp()))
    cdr_db.insert([dict(row, addtime=dt.datetime(2026, 10, 25, 1, 5, 10)) for row in after])
    second = run_once(config_at("+01:00"), RunOptions(now=_utc(2026, 10, 25, 1, 20)))
    assert second.new_calls == 1, second.summary()
    assert set(archived(tmp_path)) == {key_of(before), key_of(after)}


def test_id_cursor_on_a_quiet_pbx_never_redelivers_forgotten_calls(tmp_path, cdr_url,
                                                                    sample_rows):
    """The id tail (a batch of rows) reaches days back on a quiet PBX: pruning keeps what the
    tail still reads, so a later run finds those calls known and delivers nothing twice."""
    add_cursor_column(cdr_url, "id")
    insert_rows(cdr_url, sample_rows)
    config = make_config(tmp_path, cdr_url, source={"cursor": "id",
                                                        "start": "2026-11-26 00:00"},
                         state={"retention": "1d"})
    assert sum(run_once(config, RunOptions(now=NOW)).delivered.values()) == 23
    two_days_on = clone_call(legs_of(sample_rows, DIRECT), dt.datetime(2026, 11, 28, 9, 0))
    insert_rows(cdr_url, two_days_on)
    later = msk("2026-11-28 10:00")
    assert sum(run_once(config, RunOptions(now=later)).delivered.values()) == 1
    again = run_once(config, RunOptions(now=later + dt.timedelta(minutes=5)))
    assert (again.new_calls, sum(again.delivered.values())) == (0, 0), again.summary()
    assert len(archived(tmp_path)) == 24


def test_switching_to_an_id_cursor_resumes_at_the_watermark(tmp_path, cdr_url, sample_rows):
    """A ledger that read by calldate, then given `cursor = "id"`: the first id run starts where
    a calldate run would resume, not at the origin, so forgotten calls are not sent again."""
    add_cursor_column(cdr_url, "id")
    insert_rows(cdr_url, sample_rows)
    by_calldate = make_config(tmp_path, cdr_url, source={"start": "2026-11-26 00:00"},
                              state={"retention": "1d"})
    run_once(by_calldate, RunOptions(now=NOW))
    two_days_on = clone_call(legs_of(sample_rows, DIRECT), dt.datetime(2026, 11, 28, 9, 0))
    insert_rows(cdr_url, two_days_on)
    run_once(by_calldate, RunOptions(now=msk("2026-11-28 10:00")))
    assert len(archived(tmp_path)) == 24
    by_id = make_config(tmp_path, cdr_url, source={"start": "2026-11-26 00:00",
                                                       "cursor": "id"},
                        state={"retention": "1d"})
    report = run_once(by_id, RunOptions(now=msk("2026-11-28 10:05")))
    assert (report.new_calls, sum(report.delivered.values())) == (0, 0), report.summary()
    with open_ledger(by_id) as ledger:
        assert ledger.cursor_mark("id") == 45
