"""Rows that once lost a call quietly or stopped every run: a leg ending in the future, rows
without any id, a linkedid too long for a MySQL ledger, a linkedid reused a day later."""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest
from support import archived, clone_call, entry_of, key_of, legs_of, make_config, msk

from poller.calls import plausible
from poller.errors import ExitCode
from poller.model import KEY_LENGTH, Leg, fit_key
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

MSK = ZoneInfo("Europe/Moscow")
NO_ANSWER = "1795675119.5"  # P1-02: nobody answered, one row
DIRECT_ANSWERED = "1795675107.1"  # P1-01: answered
SKEW = dt.timedelta(minutes=10)


def leg(calldate: str, duration: int, billsec: int) -> Leg:
    return Leg(calldate=dt.datetime.fromisoformat(calldate), uniqueid="1795675107.1",
               linkedid="1795675107.1", sequence=1, clid="", src="+79161002301", dst="201",
               dcontext="ext-local", channel="PJSIP/trunk-00000001",
               dstchannel="PJSIP/201-00000002", lastapp="Dial", duration=duration,
               billsec=billsec, disposition="ANSWERED")


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
    fixed, said = plausible(leg(calldate, duration, billsec), MSK, msk("2026-11-26 12:00"),
                            24 * 3600, SKEW)
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
