"""Rows that once lost a call quietly or stopped every run: a leg ending in the future, rows
without any id, a linkedid too long for a MySQL ledger, a linkedid reused a day later."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from support import (
    MSK,
    archived,
    clone_call,
    entry_of,
    key_of,
    leg,
    legs_of,
    make_config,
    msk,
    open_ledger,
)

from poller.calls import plausible
from poller.errors import ExitCode
from poller.model import KEY_LENGTH, fit_key
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NO_ANSWER = "1795675119.5"  # P1-02: nobody answered, one row
DIRECT_ANSWERED = "1795675107.1"  # P1-01: answered
SKEW = dt.timedelta(minutes=10)


@pytest.mark.parametrize("calldate, duration, billsec, counted, why", [
    # an ordinary leg is left as it is
    ("2026-11-26 11:00:00", 600, 590, 600, None),
    # the PBX clock a few minutes ahead of ours: within the skew, left alone
    ("2026-11-26 11:59:00", 300, 290, 300, None),
    # INT_MAX seconds: ends in the future; its billsec is no better, so 0
    ("2026-11-26 11:00:00", 2147483647, 2147483647, 0, "ends in the future"),
    # ... a plausible billsec is kept
    ("2026-11-26 11:00:00", 2147483647, 1200, 1200, "ends in the future"),
    # a 30-hour leg that has ended: longer than max_call_length, counted as 24 h
    ("2026-11-24 12:00:00", 30 * 3600, 30 * 3600, 24 * 3600, "longer than"),
])
def test_plausible(calldate, duration, billsec, counted, why):
    row = leg(calldate, duration=duration, billsec=billsec)
    fixed, said = plausible(row, MSK, msk("2026-11-26 12:00"), 24 * 3600, SKEW)
    assert fixed.duration == counted and fixed.billsec <= counted
    assert (said is None) == (why is None) and (why is None or why in said)


def test_fit_key():
    assert fit_key("1795675107.1") == "1795675107.1"
    long = "pbx-" + "x" * 200
    assert len(fit_key(long)) == KEY_LENGTH and fit_key(long) != fit_key(long + "y")
    assert fit_key(long).startswith("pbx-xxx")


def test_a_leg_ending_in_the_future_is_clamped_and_never_pins_the_watermark(
        tmp_path, cdr_db, sample_rows, caplog):
    """duration = 2147483647: the call is delivered (its duration clamped, the log says so) and
    the watermark moves past it, so later runs do not re-read everything since."""
    broken = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                        duration=2147483647)
    later = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 30))
    cdr_db.insert(broken + later)
    config = make_config(tmp_path, cdr_db.url)
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=msk("2026-11-26 11:00")))
    assert report.exit_code == ExitCode.OK and report.settling == 0, report.summary()
    records = archived(tmp_path)
    assert set(records) == {key_of(broken), key_of(later)}
    assert records[key_of(broken)]["duration"] < 3600
    assert "ends in the future" in caplog.text
    assert report.watermark is not None and report.watermark >= "2026-11-26T10:30"


def test_rows_without_any_id_are_calls_of_their_own(tmp_path, cdr_db, sample_rows):
    """Two rows with empty uniqueid and linkedid used to merge into one call keyed "" and be
    skipped; each is a call of its own (nothing ties such rows together), delivered once, and
    stays so on the next run."""
    dial = legs_of(sample_rows, NO_ANSWER)[:1]
    first = clone_call(dial, dt.datetime(2026, 11, 26, 10, 0), uniqueid="", linkedid="")
    second = clone_call(dial, dt.datetime(2026, 11, 26, 10, 5), uniqueid="", linkedid="",
                        src="+79161112233")
    cdr_db.insert(first + second)
    config = make_config(tmp_path, cdr_db.url)
    report = run_once(config, RunOptions(now=msk("2026-11-26 11:00")))
    assert sum(report.delivered.values()) == 2, report.summary()
    records = archived(tmp_path)
    assert sorted(r["number"] for r in records.values()) == sorted(
        [first[0]["src"], "+79161112233"])
    assert all(key.startswith("row-") for key in records)
    again = run_once(config, RunOptions(now=msk("2026-11-26 11:01")))
    assert sum(again.delivered.values()) == 0 and again.new_calls == 0


def test_a_linkedid_too_long_for_a_mysql_ledger_is_delivered(tmp_path, cdr_db, empty_db,
                                                             sample_rows):
    """A 150-character linkedid (Asterisk allows that much) once failed every batch with
    DataError 1406 on a MySQL ledger; it is kept under a key that fits, and delivered."""
    # a site whose cdr table holds what Asterisk allows (FreePBX's has 32 characters)
    cdr_db.execute("ALTER TABLE cdr MODIFY linkedid VARCHAR(150) NOT NULL DEFAULT ''")
    long = "pbx-" + "7" * 130 + ".1795676400.52"
    rows = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0),
                      linkedid=long)
    ordinary = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 5))
    cdr_db.insert(rows + ordinary)
    config = make_config(tmp_path, cdr_db.url, state={"url": empty_db.url})
    report = run_once(config, RunOptions(now=msk("2026-11-26 11:00")))
    assert report.exit_code == ExitCode.OK and sum(report.delivered.values()) == 2, \
        report.summary()
    assert fit_key(long) in archived(tmp_path) and key_of(ordinary) in archived(tmp_path)
    assert entry_of(config, fit_key(long)).stage == "done"


def test_a_linkedid_reused_a_day_later_is_a_new_call(tmp_path, cdr_db, sample_rows, caplog):
    """The same linkedid on a call two days later (a PBX restarted with a reset counter) used
    to be dropped without a word; it is delivered under a key of its own, once."""
    old = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 24, 10, 0))
    config = make_config(tmp_path, cdr_db.url, source={"start": "2026-11-24 09:00"})
    cdr_db.insert(old)
    assert sum(run_once(config, RunOptions(now=msk("2026-11-24 11:00"))).delivered.values()) == 1
    reused = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0),
                        src="+79160000000", linkedid=old[0]["linkedid"],
                        uniqueid=old[0]["linkedid"])
    cdr_db.insert(reused)
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=msk("2026-11-26 11:00")))
    assert sum(report.delivered.values()) == 1, report.summary()
    key = f"{key_of(old)}@20261126T100000"
    records = archived(tmp_path)
    assert set(records) == {key_of(old), key}
    assert records[key]["number"] == "+79160000000"
    assert "its key is held by a call of" in caplog.text
    again = run_once(config, RunOptions(now=msk("2026-11-26 11:01")))
    assert sum(again.delivered.values()) == 0 and again.new_calls == 0


# -- a key used again within max_call_length, and later legs of one call: never confused

QUEUE_ANSWERED = "1795675156.25"  # P1-06: a queue, 221 answers, 222 rang


def _known_keys(config: object) -> dict[str, str]:
    with open_ledger(config) as ledger:
        with ledger.engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT call_key, stage FROM poller_calls").all())


def test_a_key_used_again_23_hours_later_by_another_caller_is_a_call_of_its_own(
        tmp_path, cdr_db, sample_rows, caplog):
    """The same uniqueid 23.5 h later from another caller: `delivered 0 calls`, not a word
    (2.5 days apart it was delivered under its dated key). Whatever the gap, it is."""
    old = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 25, 10, 0))
    config = make_config(tmp_path, cdr_db.url, source={"start": "2026-11-25 09:00"})
    cdr_db.insert(old)
    assert run_once(config, RunOptions(now=msk("2026-11-25 11:00"))).delivered_count == 1
    reused = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 9, 30),
                        src="+79160000000", cnum="+79160000000",
                        linkedid=old[0]["linkedid"], uniqueid=old[0]["uniqueid"])
    cdr_db.insert(reused)
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=msk("2026-11-26 11:00")))
    assert report.delivered_count == 1, report.summary()
    key = f"{key_of(old)}@20261126T093000"
    records = archived(tmp_path)
    assert set(records) == {key_of(old), key}
    assert records[key]["number"] == "+79160000000"
    assert "delivered as" in caplog.text and key in caplog.text
    again = run_once(config, RunOptions(now=msk("2026-11-26 11:01")))
    assert again.delivered_count == 0 and again.new_calls == 0


@pytest.mark.parametrize("hours", [0.5, 2])
def test_a_key_used_again_within_the_lookback_keeps_both_calls(tmp_path, cdr_db, sample_rows,
                                                               hours):
    """Both calls in one read (the lookback holds them): they were one group, merged into one
    call or dropped as late legs of a call already sent."""
    old = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 9, 0))
    start = dt.datetime(2026, 11, 26, 9, 0) + dt.timedelta(hours=hours)
    reused = clone_call(legs_of(sample_rows, NO_ANSWER), start, src="+79160000000",
                        cnum="+79160000000", linkedid=old[0]["linkedid"],
                        uniqueid=old[0]["uniqueid"])
    config = make_config(tmp_path, cdr_db.url, source={"start": "2026-11-26 08:00"})
    cdr_db.insert(old)
    assert run_once(config, RunOptions(now=msk("2026-11-26 09:05"))).delivered_count == 1
    cdr_db.insert(reused)
    report = run_once(config, RunOptions(now=start.replace(tzinfo=MSK)
                                         + dt.timedelta(minutes=5)))
    assert report.delivered_count == 1, report.summary()
    records = archived(tmp_path)
    assert set(records) == {key_of(old), f"{key_of(old)}@{start:%Y%m%dT%H%M%S}"}
    assert {r["number"] for r in records.values()} == {old[0]["src"], "+79160000000"}


def test_rounds_of_one_queue_call_far_apart_stay_one_call(tmp_path, cdr_db, sample_rows):
    """The queue's member rows arrive while the caller still waits: a second round twelve
    minutes after the first (every member busy meanwhile), then the caller's own row at the
    end. The rounds are the same caller's: one call, rebuilt, never split off."""
    queue = clone_call(legs_of(sample_rows, QUEUE_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    answered, rang = queue
    first_round = dict(rang, did="", dcontext="from-queue")
    second_round = dict(first_round, calldate=first_round["calldate"] + dt.timedelta(minutes=12),
                        sequence=first_round["sequence"] + 100)
    config = make_config(tmp_path, cdr_db.url)
    cdr_db.insert([first_round])
    run_once(config, RunOptions(now=msk("2026-11-26 10:05")))
    cdr_db.insert([second_round])
    run_once(config, RunOptions(now=msk("2026-11-26 10:20")))
    caller_row = dict(answered, duration=answered["duration"] + 15 * 60,
                      billsec=answered["billsec"])
    cdr_db.insert([caller_row])
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:40")))
    assert report.exit_code == ExitCode.OK, report.summary()
    assert list(_known_keys(config)) == [key_of(queue)]
    assert set(archived(tmp_path)) == {key_of(queue)}
    assert entry_of(config, key_of(queue)).call.legs == 3


def test_a_late_hangup_row_joins_its_call(tmp_path, cdr_db, sample_rows):
    """The Hangup row after a failed Dial, posted late (CDR batch mode): the same call."""
    ivr = clone_call(legs_of(sample_rows, "1795675176.37"), dt.datetime(2026, 11, 26, 10, 0))
    config = make_config(tmp_path, cdr_db.url)
    cdr_db.insert(ivr[:-1])
    run_once(config, RunOptions(now=msk("2026-11-26 10:02")))
    cdr_db.insert(ivr[-1:])
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:10")))
    assert report.exit_code == ExitCode.OK and report.new_calls == 0, report.summary()
    assert list(_known_keys(config)) == [key_of(ivr)]


def test_a_later_leg_of_a_call_longer_than_the_lookback_is_never_split_off(
        tmp_path, cdr_db, sample_rows):
    """A six-hour call: its first leg lies before the read's start when a later leg is read
    (a transfer to an agent, another number). It is that call's, not a call of its own."""
    config = make_config(tmp_path, cdr_db.url, source={"start": "2026-11-26 05:00"})
    first = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 6, 0),
                       duration=6 * 3600, billsec=6 * 3600 - 10)
    cdr_db.insert(first)
    later = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 11, 0))
    cdr_db.insert(later)  # moves the watermark past 11:00: the next read starts after 06:00
    assert run_once(config, RunOptions(now=msk("2026-11-26 12:05"))).delivered_count == 2
    transfer = dict(first[0], calldate=dt.datetime(2026, 11, 26, 8, 30), src="201", cnum="201",
                    clid='"" <201>', duration=600, billsec=590, sequence=first[0]["sequence"] + 7)
    cdr_db.insert([transfer])
    report = run_once(config, RunOptions(now=msk("2026-11-26 12:10")))
    assert report.new_calls == 0 and report.delivered_count == 0, report.summary()
    assert sorted(_known_keys(config)) == sorted([key_of(first), key_of(later)])
