"""Where a read starts and stops and where the marks move (poller.marks), as tables of cases.

Times are naive local readings as calldate holds them; `at(...)` makes the run's clock. Berlin's
autumn change (2026-10-25, 03:00 CEST → 02:00 CET) repeats the wall-clock hour 02:00–03:00.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from poller.config.schema import RetryConfig, Seconds
from poller.errors import ConfigError
from poller.run.marks import (
    CLOCK_SKEW,
    FROM_CALLDATE,
    Moment,
    backfill_range,
    backfill_slice,
    backfill_slices,
    calldate_axis,
    cursor_axis,
    cursor_range,
    cursor_resume,
    cursor_start,
    earlier_look,
    first_origin,
    forget_before,
    live_range,
    next_mark,
    resume_calldate,
    settling,
    wall_clock_before,
)
from poller.run.options import RunOptions
from poller.run.schedule import due_before, next_attempt

MSK = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)


def t(text: str) -> dt.datetime:
    """A naive local reading, 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text)


def at(text: str, zone: ZoneInfo = MSK, fold: int = 0) -> Moment:
    """The run's clock at a local reading (fold=1: the second pass of a repeated hour)."""
    return Moment(t(text).replace(tzinfo=zone, fold=fold).astimezone(dt.UTC), zone)


# -- a fresh ledger's first run

@pytest.mark.parametrize("start, now, lookback, origin", [
    # no source.start: the lookback before the first run, whole seconds
    (None, "2026-11-26 10:00:30.250000", 4 * H, "2026-11-26 06:00:30"),
    # source.start set: there, whatever the clock says
    ("2026-01-01 00:00", "2026-11-26 10:00", 4 * H, "2026-01-01 00:00"),
    # a start later than the lookback window is kept too (history is for a backfill)
    ("2026-11-26 09:00", "2026-11-26 10:00", 4 * H, "2026-11-26 09:00"),
])
def test_first_origin(start, now, lookback, origin):
    assert first_origin(t(start) if start else None, lookback, at(now)) == t(origin)


# -- where a calldate read resumes

@pytest.mark.parametrize("mark, origin, lookback, now, zone, fold, resume", [
    # a fresh ledger reads from its origin
    (None, "2026-11-26 06:00", 4 * H, "2026-11-26 10:00", MSK, 0, "2026-11-26 06:00"),
    # the lookback behind the watermark: a 40-minute call inserted late is read again
    ("2026-11-26 09:59", "2026-11-26 00:00", 4 * H, "2026-11-26 10:00", MSK, 0,
     "2026-11-26 05:59"),
    # never before the origin (the first hours of a new ledger)
    ("2026-11-26 07:00", "2026-11-26 06:00", 4 * H, "2026-11-26 07:01", MSK, 0,
     "2026-11-26 06:00"),
    # autumn: a mark set in the first 02:50 (CEST); now the second 02:30 (CET). Rows of the
    # second pass read 02:00-02:30, earlier than mark - 10 min = 02:40: the read must reach 02:00
    ("2026-10-25 02:50", "2026-10-24 00:00", 10 * M, "2026-10-25 02:30", BERLIN, 1,
     "2026-10-25 02:00"),
    # autumn, measured on instants: 2 h before 03:10 CET is 02:10 CEST, and the wall clock
    # read 02:00 (CET) since; calldate minus 2 h (01:10) would be an hour more than asked
    ("2026-10-25 03:10", "2026-10-24 00:00", 2 * H, "2026-10-25 03:11", BERLIN, 0,
     "2026-10-25 02:00"),
    # spring: 4 h before 05:30 CEST is 00:30 CET (the clock skipped 02:00-03:00); calldate
    # minus 4 h (01:30) would re-read an hour too little
    ("2026-03-29 05:30", "2026-03-28 00:00", 4 * H, "2026-03-29 05:31", BERLIN, 0,
     "2026-03-29 00:30"),
    # an ordinary day in the same zone: plain subtraction
    ("2026-10-20 03:10", "2026-10-19 00:00", 2 * H, "2026-10-20 03:11", BERLIN, 0,
     "2026-10-20 01:10"),
])
def test_resume_calldate(mark, origin, lookback, now, zone, fold, resume):
    moment = at(now, zone, fold)
    assert resume_calldate(t(mark) if mark else None, t(origin), lookback, moment) == t(resume)


def test_live_range_reads_up_to_now_and_a_little_past():
    """The PBX's clock may run ahead of ours: rows dated minutes ahead are still read."""
    moment = at("2026-11-26 10:00")
    span = live_range(t("2026-11-26 06:00"), moment)
    latest = t("2026-11-26 10:00") + CLOCK_SKEW
    assert (span.start, span.stop, span.horizon) == (t("2026-11-26 06:00"), latest, latest)


# -- a backfill's range

NOW = "2026-11-26 10:00"
LATEST = t(NOW) + CLOCK_SKEW


@pytest.mark.parametrize("since, until, forgotten, force, start, stop, horizon", [
    # a closed range in the past: its calls' later legs are read a lookback past its end
    ("2026-11-01", "2026-11-02", None, False, t("2026-11-01"), t("2026-11-02"),
     t("2026-11-02 04:00")),
    # an open end stops at now (a little past it)
    ("2026-11-01", None, None, False, t("2026-11-01"), LATEST, LATEST),
    # an end in the future is capped at now; so is the read-ahead
    ("2026-11-26", "2026-12-01", None, False, t("2026-11-26"), LATEST, LATEST),
    # the range ends two hours ago: the read-ahead stops at now, not at the lookback
    ("2026-11-26 06:00", "2026-11-26 08:00", None, False, t("2026-11-26 06:00"),
     t("2026-11-26 08:00"), LATEST),
    # the ledger forgot calls before 11-20, the range starts after: fine
    ("2026-11-21", None, "2026-11-20 00:00", False, t("2026-11-21"), LATEST, LATEST),
    # ... and before, forced: delivered again on purpose
    ("2026-11-01", None, "2026-11-20 00:00", True, t("2026-11-01"), LATEST, LATEST),
])
def test_backfill_range(since, until, forgotten, force, start, stop, horizon):
    span = backfill_range(t(since), t(until) if until else None, t("2026-11-26 06:00"), 4 * H,
                          t(forgotten) if forgotten else None, force, at(NOW))
    assert (span.start, span.stop, span.horizon) == (start, stop, horizon)


def test_a_backfill_into_forgotten_calls_is_refused_without_force():
    with pytest.raises(ConfigError, match=r"forgotten delivered calls before 2026-11-20 00:00"):
        backfill_range(t("2026-11-01"), None, t("2026-11-26 06:00"), 4 * H,
                       t("2026-11-20 00:00"), False, at(NOW))


def test_a_backfill_without_since_starts_at_the_origin():
    span = backfill_range(None, t("2026-11-26 08:00"), t("2026-11-26 06:00"), 4 * H, None,
                          False, at(NOW))
    assert span.start == t("2026-11-26 06:00")


# -- insertion-ordered cursor columns

@pytest.mark.parametrize("sample, batch, settle, lookback, unit", [
    (41_000, 1000, 60.0, 1000, 1),  # an id: a batch behind the mark
    (41_000, 50, 60.0, 100, 1),  # ... never fewer than 100 rows
    (t("2026-11-26 10:00"), 1000, 60.0, 2 * M, dt.timedelta(seconds=1)),  # twice the settle
    (t("2026-11-26 10:00"), 1000, 10.0, 2 * M, dt.timedelta(seconds=1)),  # ... at least 1 min
    (t("2026-11-26 10:00"), 1000, 300.0, 10 * M, dt.timedelta(seconds=1)),
])
def test_cursor_axis(sample, batch, settle, lookback, unit):
    axis = cursor_axis("id", sample, batch, settle)
    assert (axis.lookback, axis.unit, axis.on_calldate) == (lookback, unit, False)


@pytest.mark.parametrize("mark, now, zone, fold, resume", [
    (5000, "2026-11-26 10:00", MSK, 0, 4000),  # an id: the tail of a batch
    (t("2026-11-26 09:59"), "2026-11-26 10:00", MSK, 0, t("2026-11-26 09:57")),
    # an addtime mark at 02:50 CEST; now 02:30 CET: the tail reaches the repeated 02:00
    (t("2026-10-25 02:50"), "2026-10-25 02:30", BERLIN, 1, t("2026-10-25 02:00")),
])
def test_cursor_resume(mark, now, zone, fold, resume):
    axis = cursor_axis("addtime" if isinstance(mark, dt.datetime) else "id", mark, 1000, 60.0)
    assert cursor_resume(mark, axis, at(now, zone, fold)) == resume


def test_cursor_range_runs_to_the_newest_row():
    axis = cursor_axis("id", 1, 1000, 60.0)
    span = cursor_range(4000, 5234, axis)
    assert (span.start, span.stop, span.horizon) == (4000, 5235, 5235)


# -- where the marks move

@pytest.mark.parametrize("old, taken, held_back, new", [
    (None, None, None, None),  # nothing taken: a fresh ledger stays without a mark
    (None, "10:05", None, "10:05"),  # the first calls taken
    ("10:00", "10:05", None, "10:05"),  # forward to the last calldate taken
    ("10:05", "10:03", None, None),  # never backwards (a lookback re-read)
    ("10:05", "10:05", None, None),  # unchanged
    # a call still settling caps the mark at its first leg, so the next read meets it again
    ("10:00", "10:05", "10:02", "10:02"),
    ("10:03", "10:05", "10:02", None),  # ... and then the mark stays
    ("10:00", None, "10:02", None),  # only calls settling: nothing taken, nothing moves
])
def test_next_mark(old, taken, held_back, new):
    def day(text):
        return t(f"2026-11-26 {text}") if text else None

    assert next_mark(day(old), day(taken), day(held_back)) == day(new)


def test_next_mark_on_a_cursor_column():
    assert next_mark(4000, 5234, 5100) == 5100
    assert next_mark(5200, 5234, 5100) is None


def test_a_call_straddling_the_end_of_a_read_is_met_again():
    """A call whose first leg was read but which is still settling (its Hangup row or a late
    CDR batch to come) holds the mark at its first leg: the next read starts before it."""
    first_leg, settled_later = t("2026-11-26 09:58"), t("2026-11-26 09:59")
    mark = next_mark(t("2026-11-26 09:00"), settled_later, first_leg)
    assert mark == first_leg
    resume = resume_calldate(mark, t("2026-11-26 00:00"), 4 * H, at("2026-11-26 10:01"))
    assert resume <= first_leg - 4 * H


# -- what retention may forget

@pytest.mark.parametrize("watermark, oldest_read, on_calldate, before", [
    # a busy PBX: retention alone decides
    ("2026-11-26 09:59", None, True, "2026-10-27 10:00"),
    # a quiet PBX: the next read starts a lookback behind a watermark of long ago and looks
    # one more lookback back; what it may meet again is kept
    ("2026-10-01 12:00", None, True, "2026-10-01 04:00"),
    # no watermark yet: retention alone
    (None, None, True, "2026-10-27 10:00"),
    # a cursor column that read nothing this run: forget nothing
    ("2026-11-26 09:59", None, False, None),
    # a cursor's tail re-read calls of long ago: keep them
    ("2026-11-26 09:59", "2026-09-01 10:00", False, "2026-09-01 06:00"),
])
def test_forget_before(watermark, oldest_read, on_calldate, before):
    result = forget_before(30 * 24 * H, 4 * H, t(watermark) if watermark else None,
                           t(oldest_read) if oldest_read else None, on_calldate,
                           at("2026-11-26 10:00"))
    assert result == (t(before) if before else None)


def test_forget_before_reaches_over_the_repeated_hour():
    """Twice the lookback before a mark just after the autumn change reads a wall clock that
    went back: what the next read meets there must not be forgotten."""
    result = forget_before(dt.timedelta(hours=1), 30 * M, t("2026-10-25 02:20"), None, True,
                           at("2026-10-25 02:40", BERLIN, fold=1))
    # mark 02:20 is taken as the first pass (CEST); an hour before reads 01:20 CEST
    assert result == t("2026-10-25 01:20")
    assert wall_clock_before(t("2026-10-25 03:10"), 2 * H, at("2026-10-25 03:11", BERLIN)) == \
        t("2026-10-25 02:00")


def test_calldate_axis_starts_narrow():
    axis = calldate_axis(4 * H)
    assert axis.on_calldate and axis.first_width == H and axis.lookback == 4 * H
    assert calldate_axis(10 * M).first_width == 10 * M


# -- a backfill, a day at a time

@pytest.mark.parametrize("since, until, now, slices", [
    # within one day: one slice, the range as given
    ("2026-11-26 06:00", "2026-11-26 08:00", "2026-11-26 10:00",
     [("2026-11-26 06:00", "2026-11-26 08:00")]),
    # three days, the last one open (up to now)
    ("2026-11-24 12:00", None, "2026-11-26 10:00",
     [("2026-11-24 12:00", "2026-11-25 00:00"), ("2026-11-25 00:00", "2026-11-26 00:00"),
      ("2026-11-26 00:00", None)]),
    # ends at a midnight: no empty slice after it
    ("2026-11-24 00:00", "2026-11-26 00:00", "2026-11-27 10:00",
     [("2026-11-24 00:00", "2026-11-25 00:00"), ("2026-11-25 00:00", "2026-11-26 00:00")]),
    # an end in the future is the last day's end, kept as given
    ("2026-11-26 00:00", "2026-12-01 00:00", "2026-11-26 10:00",
     [("2026-11-26 00:00", "2026-12-01 00:00")]),
])
def test_backfill_slices(since, until, now, slices):
    got = backfill_slices(t(since), t(until) if until else None, at(now))
    assert got == [(t(a), t(b) if b else None) for a, b in slices]


@pytest.mark.parametrize("start, until, next_row, now, expected", [
    # a row on the first day: that day alone, as backfill_slices cuts it
    ("2026-11-24 12:00", None, "2026-11-24 15:00", "2026-11-26 10:00",
     ("2026-11-24 12:00", "2026-11-25 00:00")),
    # a row at the very start
    ("2026-11-24 00:00", None, "2026-11-24 00:00", "2026-11-26 10:00",
     ("2026-11-24 00:00", "2026-11-25 00:00")),
    # eleven empty months: joined to the day of the next row, read in one slice
    ("2026-01-01 00:00", "2026-11-27 00:00", "2026-11-24 23:59:59", "2026-11-26 10:00",
     ("2026-01-01 00:00", "2026-11-25 00:00")),
    # a row on a midnight is that day's, not the day before's
    ("2026-11-20 00:00", None, "2026-11-24 00:00", "2026-11-26 10:00",
     ("2026-11-20 00:00", "2026-11-25 00:00")),
    # no row left in the range: the rest is one last slice with the range's own end
    ("2026-11-20 00:00", "2026-11-25 00:00", None, "2026-11-26 10:00",
     ("2026-11-20 00:00", "2026-11-25 00:00")),
    ("2026-11-20 00:00", None, None, "2026-11-26 10:00", ("2026-11-20 00:00", None)),
    # the next row lies past the range's end: likewise
    ("2026-11-20 00:00", "2026-11-22 00:00", "2026-11-23 09:00", "2026-11-26 10:00",
     ("2026-11-20 00:00", "2026-11-22 00:00")),
    # the next row's day reaches the end (now): the last slice, up to now
    ("2026-11-20 00:00", None, "2026-11-26 09:00", "2026-11-26 10:00",
     ("2026-11-20 00:00", None)),
    # the range ends at the midnight after the row: its own end, no empty slice after it
    ("2026-11-20 00:00", "2026-11-25 00:00", "2026-11-24 10:00", "2026-11-27 10:00",
     ("2026-11-20 00:00", "2026-11-25 00:00")),
    # a row before the start cannot come from the index probe; the day of the start is taken
    ("2026-11-24 12:00", None, "2026-11-20 10:00", "2026-11-26 10:00",
     ("2026-11-24 12:00", "2026-11-25 00:00")),
])
def test_backfill_slice_joins_days_without_rows(start, until, next_row, now, expected):
    got = backfill_slice(t(start), t(until) if until else None,
                         t(next_row) if next_row else None, at(now))
    assert got == (t(expected[0]), t(expected[1]) if expected[1] else None)


def test_backfill_slices_and_slice_agree_where_every_day_has_rows():
    """With a row at the start of every day, the slices are the days backfill_slices cuts."""
    since, now = t("2026-11-20 06:00"), at("2026-11-26 10:00")
    got, start = [], since
    while True:
        piece = backfill_slice(start, None, start, now)
        got.append(piece)
        if piece[1] is None:
            break
        start = piece[1]
    assert got == backfill_slices(since, None, now)


# -- which calls are still settling (left for the next run, the marks held before them)

@pytest.mark.parametrize("end, now, settle, still", [
    ("2026-11-26 09:59:00", "2026-11-26 10:00:00", 60, False),  # ended exactly settle ago
    ("2026-11-26 09:59:01", "2026-11-26 10:00:00", 60, True),
    ("2026-11-26 10:05:00", "2026-11-26 10:00:00", 60, True),  # the PBX's clock runs ahead
    ("2026-11-26 09:59:59", "2026-11-26 10:00:00", 0, False),  # settle 0s: at once
    # the repeated autumn hour: 02:30 CET ended after 02:50 CEST, which is ten minutes before it
    ("2026-10-25 02:30:00+01:00", "2026-10-25 02:50:00+02:00", 60, True),
])
def test_settling(end, now, settle, still):
    def aware(text: str) -> dt.datetime:
        value = dt.datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=MSK)

    assert settling(aware(end), aware(now), settle) is still


# -- the calls a read met near its start that began before it

@pytest.mark.parametrize("start, lookback, suspects_before, since", [
    (t("2026-11-26 06:00"), 4 * H, t("2026-11-26 10:00"), t("2026-11-26 02:00")),
    (1000, 1000, 2000, 0),  # a cursor column counts rows
])
def test_earlier_look(start, lookback, suspects_before, since):
    look = earlier_look(start, lookback)
    assert (look.suspects_before, look.since, look.until) == (suspects_before, since, start)


def test_earlier_look_covers_what_forget_before_keeps():
    """Retention must still know the calls the next read looks up as begun earlier: forgetting
    them would make those calls new again (delivered twice)."""
    moment, lookback = at("2026-11-26 18:00"), 4 * H
    watermark = t("2026-11-26 09:30")
    start = resume_calldate(watermark, t("2026-11-01 00:00"), lookback, moment)
    before = forget_before(8 * H, lookback, watermark, None, True, moment)
    assert before is not None and before <= earlier_look(start, lookback).since


# -- a cursor's start

@pytest.mark.parametrize("mark, start", [
    (None, FROM_CALLDATE),  # a fresh ledger, or a cursor new to a ledger that read by calldate
    (5000, 5000 - 1000),  # an id: a batch behind the mark (ids commit out of order)
])
def test_cursor_start(mark, start):
    axis = cursor_axis("id", 1, 1000, 60)
    assert cursor_start(mark, axis, at("2026-11-26 10:00")) == start


def test_cursor_start_on_an_insertion_time_reads_back_over_the_repeated_hour():
    axis = cursor_axis("addtime", t("2026-10-25 02:40"), 1000, 60)
    moment = at("2026-10-25 02:45", BERLIN, fold=1)
    # two minutes of inserts behind a mark of 02:40 CEST span the change back: since then the
    # clock read as early as 02:00 (CET), so the read starts there and misses no row
    assert cursor_start(t("2026-10-25 02:40"), axis, moment) == t("2026-10-25 02:00")


# -- a failed call's next attempt

RETRY = RetryConfig(max_attempts=5, backoff=Seconds(60), max_backoff=Seconds(600))
UTC_NOW = dt.datetime(2026, 11, 26, 7, 0)  # naive UTC, as the ledger keeps times


@pytest.mark.parametrize("attempts, delay", [
    (1, 60), (2, 120), (3, 240), (4, 480),  # doubling from retry.backoff
    (5, None),  # max_attempts used: parked
])
def test_next_attempt(attempts, delay):
    expected = None if delay is None else UTC_NOW + dt.timedelta(seconds=delay)
    assert next_attempt(attempts, RETRY, UTC_NOW) == expected


def test_next_attempt_is_capped_and_never_overflows():
    retry = RetryConfig(max_attempts=1000, backoff=Seconds(60), max_backoff=Seconds(6 * 3600))
    assert next_attempt(6, retry, UTC_NOW) == UTC_NOW + dt.timedelta(seconds=1920)
    assert next_attempt(999, retry, UTC_NOW) == UTC_NOW + dt.timedelta(hours=6)


def test_due_before():
    """A backfill retries the failed calls of its range at once, those backing off included."""
    assert due_before(RunOptions(), UTC_NOW) == UTC_NOW
    assert due_before(RunOptions(since=t("2026-11-01 00:00")), UTC_NOW) is None
