"""A long backfill works a day at a time under the lock and lets cron runs in between, so live
calls are not kept waiting for its end; together they deliver every call once."""

from __future__ import annotations

import datetime as dt
import logging

from support import archived, clone_call, key_of, legs_of, make_config, msk, open_ledger

from poller.errors import LockHeld
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

    def between_calls() -> bool:
        # asked between days and between calls: a cron run gets in only between days
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
    assert "backfill: 2026-11-22 done (1 of 3 days)" in caplog.text
    assert set(archived(tmp_path)) == {key_of(call) for call in history + [live]}
    # the progress is the whole range's, not a day's
    assert {p.start for p in shown} == {dt.datetime(2026, 11, 22)}
    assert {p.stop for p in shown} == {dt.datetime(2026, 11, 25)}
    assert shown[-1].rows == 6  # the three days' rows, not the last day's two
    with open_ledger(config) as ledger:
        assert sum(ledger.last_run()["delivered"].values()) == 3  # the whole backfill's


def test_a_backfill_limit_counts_over_its_days(tmp_path, cdr_db, sample_rows):
    template = legs_of(sample_rows, NO_ANSWER)
    calls = [clone_call(template, dt.datetime(2026, 11, day, hour, 0))
             for day in (22, 23) for hour in (10, 11)]
    cdr_db.insert([row for call in calls for row in call])
    config = make_config(tmp_path, cdr_db.url)
    report = run_once(config, RunOptions(since=dt.datetime(2026, 11, 22), now=NOW, limit=3))
    assert report.delivered_count == 3, report.summary()
    assert len(archived(tmp_path)) == 3
