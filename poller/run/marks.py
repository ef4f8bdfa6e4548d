"""Where a read starts and stops, and where the marks move: the decisions that can lose a call.

Pure functions of plain values (marks, lookback, zone, now), so each decision has table tests
of its own. Times are naive local wall-clock readings, as calldate holds them, unless named
`now` (an aware instant). Two facts shape everything here:

- a row is inserted when its call ends, so a read goes back a lookback behind the watermark;
- wall-clock time repeats an hour in autumn, so "a span before a mark" is measured on instants
  and may read earlier than `mark - span`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from poller.clock import earliest_local, to_aware
from poller.errors import ConfigError
from poller.source.interface import OFFSET
from poller.source.walk import MAX_WIDTH, MIN_WIDTH

# rows dated a little in the future (clock skew between PBX and poller) are still read
CLOCK_SKEW = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Axis:
    """What a run's windows run over: calldate, or an insertion-ordered cursor column."""

    column: str
    lookback: Any  # how far behind a mark to re-read, in the column's own units
    unit: Any  # the smallest step of the column
    first_width: Any
    min_width: Any
    max_width: Any

    @property
    def on_calldate(self) -> bool:
        return self.column == "calldate"

    def position(self, leg: Any) -> Any:
        return leg.calldate if self.on_calldate else leg.cursor


def calldate_axis(lookback: dt.timedelta) -> Axis:
    return Axis("calldate", lookback, dt.timedelta(seconds=1),
                min(lookback, dt.timedelta(hours=1)), MIN_WIDTH, MAX_WIDTH)


def cursor_axis(column: str, sample: Any, batch_size: int, settle: float) -> Axis:
    """The axis of an insertion-ordered column, shaped by one of its values (`sample`)."""
    if isinstance(sample, int):
        # ids of concurrent inserts interleave by a few rows: re-read a batch behind the mark
        return Axis(column, max(batch_size, 100), 1, batch_size, 1, 1_000_000_000)
    # an insertion time (amoCRM's `addtime`): re-read twice the settle delay behind the mark
    tail = dt.timedelta(seconds=max(settle, 60) * 2)
    return Axis(column, tail, dt.timedelta(seconds=1), dt.timedelta(minutes=15),
                dt.timedelta(seconds=1), dt.timedelta(days=1))


def offset_axis() -> Axis:
    """The axis of Master.csv: byte offsets. A call's lines are written together when it
    ends, so a group is complete once the read is a megabyte past its first line."""
    kib = 1024
    return Axis(OFFSET, 1024 * kib, 1, 256 * kib, 16 * kib, 64 * 1024 * kib)


@dataclass(frozen=True)
class ReadRange:
    """Calls whose first leg lies in [start, stop) are this run's; legs are read up to the
    horizon, so that the later legs of its last calls are seen before they are built."""

    start: Any
    stop: Any
    horizon: Any


@dataclass(frozen=True)
class Moment:
    """The run's clock: one instant, and how the PBX's wall clock reads it."""

    now: dt.datetime  # aware
    zone: ZoneInfo

    @property
    def local(self) -> dt.datetime:
        return self.now.astimezone(self.zone).replace(tzinfo=None)

    @property
    def utc(self) -> dt.datetime:
        """Naive UTC, as the ledger stores times."""
        return self.now.astimezone(dt.UTC).replace(tzinfo=None)


def wall_clock_before(mark: dt.datetime, span: Any, moment: Moment) -> dt.datetime:
    """The earliest wall-clock reading since `span` of elapsed time before `mark`.

    The span is measured on instants; the hour that repeats in autumn reads earlier than a mark
    set before it, so the reading since then can be earlier than `mark - span`.
    """
    # in UTC: arithmetic on a zone-aware datetime moves its wall clock, not the instant, and
    # on the spring-forward day that makes an hour of lookback no time at all
    since = to_aware(mark, moment.zone).astimezone(dt.UTC) - span
    return earliest_local(since, moment.now, moment.zone)


def first_origin(start: dt.datetime | None, lookback: dt.timedelta,
                 moment: Moment) -> dt.datetime:
    """Where a fresh ledger starts: source.start, else the lookback before its first run
    (history is for a backfill: a new install does not flood the target)."""
    origin = start if start is not None else moment.local - lookback
    return origin.replace(microsecond=0)


def resume_calldate(mark: dt.datetime | None, origin: dt.datetime, lookback: dt.timedelta,
                    moment: Moment) -> dt.datetime:
    """Where a calldate read resumes: a lookback before the watermark, never before the origin;
    the origin itself while there is no watermark."""
    if mark is None:
        return origin
    return max(wall_clock_before(mark, lookback, moment), origin)


def live_range(resume: dt.datetime, moment: Moment) -> ReadRange:
    """A cron run's calldate range: from where the last one left off up to now (a little past
    it: the PBX's clock may run ahead of ours)."""
    latest = moment.local + CLOCK_SKEW
    return ReadRange(resume, latest, latest)


def backfill_range(since: dt.datetime | None, until: dt.datetime | None, origin: dt.datetime,
                   lookback: dt.timedelta, forgotten: dt.datetime | None, force: bool,
                   moment: Moment) -> ReadRange:
    """A backfill's range: its own dates, read ahead by the lookback, never past now.

    Refused where the ledger has forgotten delivered calls (state.retention), unless forced:
    those would be delivered again.
    """
    start = since or origin
    if forgotten is not None and start < forgotten and not force:
        raise ConfigError(
            f"the ledger has forgotten delivered calls before "
            f"{forgotten.isoformat(sep=' ', timespec='minutes')} (state.retention): a "
            "backfill from there would deliver them again; start the backfill later, "
            "or give --force to deliver them again on purpose")
    latest = moment.local + CLOCK_SKEW
    stop = min(until or latest, latest)
    return ReadRange(start, stop, min(stop + lookback, latest))


def backfill_end(until: dt.datetime | None, moment: Moment) -> dt.datetime:
    """Where a backfill's range ends (naive local): its --until, never past now."""
    latest = moment.local + CLOCK_SKEW
    return min(until, latest) if until is not None else latest


def backfill_slices(since: dt.datetime, until: dt.datetime | None,
                    moment: Moment) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """A backfill's range cut at local midnights: each day is worked under the lock on its
    own, so cron runs deliver live calls in between. The last day keeps the range's own end
    (None: up to now)."""
    end = backfill_end(until, moment)
    slices: list[tuple[dt.datetime, dt.datetime | None]] = []
    start = since
    while True:
        midnight = dt.datetime.combine(start.date() + dt.timedelta(days=1), dt.time())
        if midnight >= end:
            slices.append((start, until))
            return slices
        slices.append((start, midnight))
        start = midnight


def backfill_slice(start: dt.datetime, until: dt.datetime | None, next_row: dt.datetime | None,
                   moment: Moment) -> tuple[dt.datetime, dt.datetime | None]:
    """The next slice of a backfill, from `start`: up to the local midnight after the first
    row at or after it (`next_row`, one probe of the calldate index), so the days before that
    row — which hold no rows, hence begin no call — are read and delivered with it rather than
    each as a batch of its own. Without a row after `start` the rest of the range is one last
    slice, which keeps the range's own end (None: up to now); so does the day that reaches it.

    Nothing is lost: a call belongs to the slice its first leg lies in, and no leg lies in the
    days joined; their ledger calls (parked ones to retry) are the joined slice's to deliver.
    """
    end = backfill_end(until, moment)
    if next_row is None:
        return start, until
    day = max(start, next_row)
    midnight = dt.datetime.combine(day.date() + dt.timedelta(days=1), dt.time())
    if midnight >= end:
        return start, until
    return start, midnight


class _FromCalldate:
    def __repr__(self) -> str:
        return "FROM_CALLDATE"


# a cursor with no mark yet starts at the first row since the calldate a calldate read would
# resume at: the ledger holds the calls before it, whether a calldate run recorded them (a
# cursor new to an old ledger) or the ledger is fresh (the origin)
FROM_CALLDATE = _FromCalldate()


def cursor_start(mark: Any, axis: Axis, moment: Moment) -> Any:
    """Where a cursor read starts: a tail behind its mark, or FROM_CALLDATE without one."""
    return FROM_CALLDATE if mark is None else cursor_resume(mark, axis, moment)


def cursor_resume(mark: Any, axis: Axis, moment: Moment) -> Any:
    """Where a cursor read resumes: a tail behind its mark (rows commit out of order; a
    file's lines never do)."""
    if axis.column == OFFSET:
        return mark
    if isinstance(mark, dt.datetime):
        # a TIMESTAMP column reads in the server's local time, which repeats an hour in
        # autumn: rows of the second pass read earlier than the mark set before the change
        return wall_clock_before(mark, axis.lookback, moment)
    return mark - axis.lookback


def cursor_range(start: Any, newest: Any, axis: Axis) -> ReadRange:
    """A cursor read runs to the newest row: its calls are those inserted since the start."""
    horizon = newest + axis.unit
    return ReadRange(start, horizon, horizon)


def settling(end: dt.datetime, now: dt.datetime, settle: float) -> bool:
    """Whether a call that ended at `end` (aware) is still settling at `now`: the legs Asterisk
    writes a little later (CDR batch mode, the Hangup row) may still be on their way, so it is
    left for the next run and the marks stay before it."""
    return end > now - dt.timedelta(seconds=settle)


@dataclass(frozen=True)
class EarlierLook:
    """Where to look for the earlier legs of the calls a read met first near its start."""

    suspects_before: Any  # a call whose first leg read lies before this may have earlier legs
    since: Any  # ... which lie in [since, until): the lookback before the read's start
    until: Any


def earlier_look(start: Any, lookback: Any) -> EarlierLook:
    """A call whose first leg lies within a lookback after the read's start may have begun
    before it (its first legs not read): such a call belongs to the range before, whose read
    took it whole, and must not be taken again as new. `forget_before` keeps the calls of that
    lookback before the start for this reason."""
    return EarlierLook(start + lookback, start - lookback, start)


def lowest(current: Any, value: Any) -> Any:
    return value if current is None else current if value is None else min(current, value)


def highest(current: Any, value: Any) -> Any:
    return value if current is None else current if value is None else max(current, value)


def next_mark(old: Any, taken: Any, held_back: Any) -> Any:
    """The mark a scan justifies, or None to leave it: up to the calls taken, never past a call
    held back (still settling), never backwards."""
    if taken is None:
        return None
    mark = lowest(taken, held_back)
    return mark if old is None or mark > old else None


def forget_before(retention: dt.timedelta, lookback: dt.timedelta, watermark: dt.datetime | None,
                  oldest_read: dt.datetime | None, on_calldate: bool,
                  moment: Moment) -> dt.datetime | None:
    """The calldate before which delivered calls may be forgotten, or None for none.

    Never a call the next read may meet again: it would be delivered twice.
    """
    before = moment.local - retention
    if not on_calldate:
        # a cursor's tail counts rows (or minutes of inserts), not calldates: on a quiet PBX it
        # reaches calls of long ago, and the next run re-reads at least this run's rows
        if oldest_read is None:
            return None
        before = min(before, oldest_read - lookback)
    if watermark is not None:
        # the next read starts a lookback before the watermark and looks one more lookback
        # back for calls that began earlier: a quiet PBX leaves that far behind now
        before = min(before, wall_clock_before(watermark, 2 * lookback, moment))
    return before
