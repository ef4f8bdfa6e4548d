"""A long backfill works a day at a time under the lock and lets cron runs in between, so live
calls are not kept waiting for its end; together they deliver every call once."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from pathlib import Path

from support import (
    archived,
    clone_call,
    entry_of,
    key_of,
    legs_of,
    make_config,
    msk,
    open_ledger,
)

from poller.cli.progress import ProgressBar
from poller.errors import LockHeld
from poller.logs import ConsoleHandler
from poller.run.options import Progress, RunOptions
from poller.run.pipeline import run_once

NO_ANSWER = "1795675119.5"  # P1-02: nobody answered
NOW = msk("2026-11-26 12:00")


def test_cron_runs_deliver_live_calls_between_the_days_of_a_backfill(tmp_path, cdr_db,
                                                                     sample_rows, caplog):
    template = legs_of(sample_rows, NO_ANSWER)
    history = [clone_call(template, dt.datetime(2026, 11, day, 14, 0)) for day in (22, 23, 24)]
    live = clone_call(template, dt.datetime(2026, 11, 26, 11, 50))
    cdr_db.insert([row for call in history + [live] for row in call])
    config = make_config(tmp_path, cdr_db.url, source={"start": "2026-11-26 11:00"})
    cron_runs: list[int] = []
    held: list[bool] = []

    recorded: list[dict] = []  # the ledger's last run as each cron run found it

    def between_calls() -> bool:
        # asked between days and between calls: a cron run gets in only between days
        if Path(config.state.dir, "state.db").exists():  # made by the backfill's first day
            with open_ledger(config) as ledger:
                recorded.append(ledger.last_run() or {})
        try:
            report = run_once(config, RunOptions(now=NOW))
        except LockHeld:
            held.append(True)
        else:
            cron_runs.append(report.delivered_count)
        return False

    shown: list[Progress] = []
    with caplog.at_level(logging.INFO, logger="poller"):
        backfill = run_once(config, RunOptions(
            since=dt.datetime(2026, 11, 22), until=dt.datetime(2026, 11, 25), now=NOW,
            should_stop=between_calls, progress=shown.append))
    assert backfill.exit_code == 0, backfill.summary()
    assert backfill.delivered_count == 3
    assert cron_runs[0] == 1, cron_runs  # the first cron run took the live call at once
    assert sum(cron_runs) == 1 and len(cron_runs) >= 2 and held
    assert "backfill 2026-11-22: 1 new call, 1 delivered (2 rows read)" in caplog.text
    assert set(archived(tmp_path)) == {key_of(call) for call in history + [live]}
    # the progress is the whole range's, not a day's
    assert {p.start for p in shown} == {dt.datetime(2026, 11, 22)}
    assert {p.stop for p in shown} == {dt.datetime(2026, 11, 25)}
    assert shown[-1].rows == 6  # the three days' rows, not the last day's two
    assert shown[-1].fraction == 1.0 and shown[-1].new_calls == 3
    # the last run the backfill recorded is the whole backfill's (the run asks once more when
    # it is done, and that cron run then records its own)
    assert sum(recorded[-1]["delivered"].values()) == 3, recorded[-1]


def test_a_backfill_limit_counts_over_its_days(tmp_path, cdr_db, sample_rows):
    template = legs_of(sample_rows, NO_ANSWER)
    calls = [clone_call(template, dt.datetime(2026, 11, day, hour, 0))
             for day in (22, 23) for hour in (10, 11)]
    cdr_db.insert([row for call in calls for row in call])
    config = make_config(tmp_path, cdr_db.url)
    report = run_once(config, RunOptions(since=dt.datetime(2026, 11, 22), now=NOW, limit=3))
    assert report.delivered_count == 3, report.summary()
    assert len(archived(tmp_path)) == 3


def test_a_month_of_backfill_logs_a_short_line_per_day_with_calls(tmp_path, cdr_db,
                                                                   sample_rows, caplog):
    """A month holding calls on two days: a line saying the plan, one short line for each of
    the two days, nothing for the 29 empty ones, which are read with the next day that has
    rows (one short line at -v for the empty days left at the end); the progress runs over the
    whole month by time, empty days included, and ends at 100 %."""
    template = legs_of(sample_rows, NO_ANSWER)
    calls = [clone_call(template, dt.datetime(2026, 10, day, 14, 0)) for day in (5, 20)]
    cdr_db.insert([row for call in calls for row in call])
    config = make_config(tmp_path, cdr_db.url)
    shown: list[Progress] = []
    with caplog.at_level(logging.DEBUG, logger="poller"):
        report = run_once(config, RunOptions(since=dt.datetime(2026, 10, 1),
                                             until=dt.datetime(2026, 11, 1), now=NOW,
                                             progress=shown.append))
    assert report.delivered_count == 2, report.summary()
    backfill = [r for r in caplog.records if r.getMessage().startswith("backfill")]
    said = [r.getMessage() for r in backfill if r.levelno >= logging.INFO]
    assert said == [
        "backfill: 2026-10-01 to 2026-11-01, 31 days, a day at a time: the lock is free between "
        "days, for cron runs to deliver live calls",
        "backfill 2026-10-01 to 2026-10-05: 1 new call, 1 delivered (2 rows read)",
        "backfill 2026-10-06 to 2026-10-20: 1 new call, 1 delivered (2 rows read)"], said
    quiet = [r.getMessage() for r in backfill if r.levelno < logging.INFO]
    assert quiet == ["backfill 2026-10-21 to 2026-10-31: no calls (0 rows read)"], quiet
    # at -v the empty days are that one line, no more
    assert len([r for r in caplog.records if r.levelno < logging.INFO]) <= 1 + 3 * 5, \
        [r.getMessage() for r in caplog.records]
    # by time over the whole month: after the first five days, 5/31 done (not 40 %); at the
    # end, 100 %
    first_days = next(p for p in shown if p.position == dt.datetime(2026, 10, 6))
    assert abs(first_days.fraction - 5 / 31) < 0.001, first_days.fraction
    assert shown[-1].fraction == 1.0 and shown[-1].new_calls == 2
    # the count of new calls is current: the day's call counted as soon as its day is read
    after_5th = next(p for p in shown if p.position == dt.datetime(2026, 10, 6))
    assert after_5th.new_calls == 1


def test_the_progress_bar_keeps_log_lines_above_it_and_never_goes_back():
    """Log lines while the bar is drawn land on lines of their own above it; a position that
    steps back (a day's read starting a lookback early) leaves the bar where it was; the end
    shows 100 %."""
    stream = io.StringIO()
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    ticks = iter(range(100))
    try:
        bar = ProgressBar(stream, clock=lambda: float(next(ticks)))
        since, end = dt.datetime(2026, 10, 1), dt.datetime(2026, 11, 1)

        def at(day: int, hour: int = 0) -> Progress:
            return Progress(dt.datetime(2026, 10, day, hour), since, end, day * 10, day)

        bar(at(10))
        logging.getLogger("poller").info("backfill 2026-10-10: 1 new call, 1 delivered")
        bar(at(9, 20))  # back a few hours
        bar(Progress(end, since, end, 400, 31))
        bar.finish()
        logging.getLogger("poller").info("backfill done")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    text = stream.getvalue()
    assert "\r\x1b[KINFO backfill 2026-10-10: 1 new call, 1 delivered\n\r\x1b[K[" in text, text
    percents = [int(p) for p in re.findall(r"\] +(\d+)%", text)]
    assert percents == sorted(percents) and percents[-1] == 100, percents
    assert text.endswith("31 new calls\nINFO backfill done\n"), text


def test_a_backfill_over_empty_months_works_only_the_days_with_rows(tmp_path, cdr_db,
                                                                     sample_rows, monkeypatch,
                                                                     caplog):
    """Eleven months with calls on two days: one index probe finds each next row, the empty
    days are joined to the day of that row, and the backfill is three batches (lock, ledger
    bookkeeping, last-run record) instead of 330; every call is delivered."""
    from poller.run import pipeline

    template = legs_of(sample_rows, NO_ANSWER)
    calls = [clone_call(template, dt.datetime(2026, 1, 10, 9, 0)),
             clone_call(template, dt.datetime(2026, 11, 24, 23, 59))]
    cdr_db.insert([row for call in calls for row in call])
    config = make_config(tmp_path, cdr_db.url)
    batches: list[tuple[dt.datetime | None, dt.datetime | None]] = []
    real = pipeline._batch

    def counted(config, options, *args, **kwargs):
        batches.append((options.since, options.until))
        return real(config, options, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_batch", counted)
    with caplog.at_level(logging.INFO, logger="poller"):
        report = run_once(config, RunOptions(since=dt.datetime(2026, 1, 1),
                                             until=dt.datetime(2026, 11, 26), now=NOW))
    assert report.exit_code == 0 and report.delivered_count == 2, report.summary()
    assert set(archived(tmp_path)) == {key_of(call) for call in calls}
    assert batches == [(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 11)),
                       (dt.datetime(2026, 1, 11), dt.datetime(2026, 11, 25)),
                       (dt.datetime(2026, 11, 25), dt.datetime(2026, 11, 26))]
    assert "backfill 2026-01-11 to 2026-11-24: 1 new call, 1 delivered (2 rows read)" in \
        caplog.text


def test_a_parked_call_on_a_day_without_rows_is_still_retried_by_a_backfill(
        tmp_path, cdr_db, sample_rows):
    """The ledger holds a parked call whose cdr rows the PBX has since purged: a backfill over
    its day has nothing to read there, and still puts the call back in line and delivers it,
    as it did when every day was a batch of its own."""
    template = legs_of(sample_rows, NO_ANSWER)
    purged = clone_call(template, dt.datetime(2026, 11, 20, 10, 0))
    later = clone_call(template, dt.datetime(2026, 11, 24, 10, 0))
    cdr_db.insert([row for call in (purged, later) for row in call])
    config = make_config(tmp_path, cdr_db.url)
    # read into the ledger, nothing delivered yet; then parked, as after max_attempts failures
    first = run_once(config, RunOptions(since=dt.datetime(2026, 11, 20), now=NOW, limit=0))
    assert first.new_calls == 2, first.summary()
    with open_ledger(config) as ledger:
        entry = ledger.entry(key_of(purged))
        assert entry is not None
        ledger.record_failure(entry, "the target refused it", None)
    assert entry_of(config, key_of(purged)).stage == "failed"
    cdr_db.execute("DELETE FROM cdr WHERE calldate < '2026-11-21'")
    report = run_once(config, RunOptions(since=dt.datetime(2026, 11, 18), now=NOW))
    assert report.exit_code == 0, report.summary()
    assert set(archived(tmp_path)) == {key_of(purged), key_of(later)}
