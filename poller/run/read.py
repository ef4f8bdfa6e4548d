"""Phase one of a run: choose the read range, walk the cdr table, turn leg groups into calls,
record them in the ledger, and move the marks.

The phase writes only new calls (incoming ones pending, the rest skipped) and rebuilds of calls
nothing has been sent for; the decisions that could lose a call (where a read starts, which
calls are still settling, which began before the range, where the marks move) are pure
functions in `marks`, and this module only carries them out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from poller.callers.incidents import OpenIncident
from poller.calls import build_call, plausible, stand_in
from poller.clock import parse_local
from poller.config.schema import IncomingRules, SourceConfig
from poller.ledger.incidents import IncidentChanges
from poller.ledger.schema import Known
from poller.model import Call, Leg, Stage, Status
from poller.run.history import UnreadHistory
from poller.run.marks import (
    CLOCK_SKEW,
    FROM_CALLDATE,
    Axis,
    Moment,
    ReadRange,
    backfill_range,
    calldate_axis,
    cursor_axis,
    cursor_range,
    cursor_start,
    earlier_look,
    first_origin,
    highest,
    live_range,
    lowest,
    next_mark,
    offset_axis,
    resume_calldate,
    settling,
)
from poller.run.options import Progress, RunOptions
from poller.run.report import RunReport
from poller.run.reuse import Limits, Span, assign_keys, split
from poller.source.interface import OFFSET, Source
from poller.source.skew import rows_ahead
from poller.source.walk import Group, Walk

log = logging.getLogger("poller")

KNOWN_BATCH = 1000  # calls looked up in the ledger, and recorded in one transaction, at a time
PROGRESS_EVERY = 10.0  # seconds between progress lines on long reads
# new incoming calls → the same calls with their caller fields and incident, and what that did
# to the ledger's incidents (enrich.Enricher)
Enrich = Callable[[list[Call], Any], tuple[list[Call], IncidentChanges]]


class ReadLedger(Protocol):
    """What reading needs of the ledger (the real one, or a dry run's stand-in)."""

    def watermark(self) -> dt.datetime | None: ...

    def set_watermark(self, mark: dt.datetime) -> None: ...

    def cursor_mark(self, column: str) -> Any: ...

    def set_cursor_mark(self, column: str, mark: Any) -> None: ...

    def origin(self) -> dt.datetime | None: ...

    def set_origin(self, origin: dt.datetime) -> None: ...

    def set_unread_history(self, note: str | None) -> None: ...

    def warned_on(self) -> dt.date | None: ...

    def set_warned_on(self, day: dt.date) -> None: ...

    def pruned_before(self) -> dt.datetime | None: ...

    def checkpoint(self, name: str) -> dict[str, Any] | None: ...

    def set_checkpoint(self, name: str, value: dict[str, Any]) -> None: ...

    def known_legs(self, keys: Iterable[str]) -> dict[str, Known]: ...

    def add_many(self, calls: Sequence[tuple[Call, Stage, str | None]],
                 incidents: IncidentChanges | None = None) -> int: ...

    def open_incidents(self, numbers: Iterable[str], earliest: dt.datetime,
                       latest: dt.datetime) -> list[OpenIncident]: ...

    def park_unbuilt(self, call: Call, error: str) -> bool: ...

    def held_calls(self, key: str) -> dict[str, Call]: ...

    def set_legs(self, key: str, legs: int) -> None: ...

    def rebuild(self, call: Call, stage: Stage, fresh: bool = False) -> None: ...


@dataclass(frozen=True)
class Builder:
    """Legs → call, with the site's rules; broken durations are clamped, and said."""

    incoming: IncomingRules
    zone: ZoneInfo
    template: str
    now: dt.datetime  # aware
    longest: float = 24 * 3600.0  # source.max_call_length
    lookback: float = 4 * 3600.0  # source.lookback

    @property
    def limits(self) -> Limits:
        """How far apart the legs of one call may lie (run/reuse.py)."""
        return Limits(dt.timedelta(seconds=self.longest), dt.timedelta(seconds=self.lookback))

    def __call__(self, legs: list[Leg]) -> Call:
        fixed = [plausible(leg, self.zone, self.now, self.longest, CLOCK_SKEW) for leg in legs]
        call = build_call([leg for leg, _ in fixed], self.incoming, self.zone, self.template)
        anomalies = tuple(why for _, why in fixed if why)
        return dataclasses.replace(call, anomalies=anomalies) if anomalies else call


@dataclass
class Reach:
    """The marks the calls of one read justify, on calldate and on the walk's own column."""

    taken: dt.datetime | None = None  # last calldate of the calls taken
    held_back: dt.datetime | None = None  # first calldate of the earliest call still settling
    taken_position: Any = None
    held_back_position: Any = None


class ReadPhase:
    """Reads what is new since the marks (or a backfill's range) into the ledger."""

    def __init__(self, source: Source, ledger: ReadLedger, config: SourceConfig,
                 builder: Builder, report: RunReport, enrich: Enrich | None = None):
        self.source = source
        self.ledger = ledger
        self.config = config
        self.builder = builder
        self.report = report
        self.enrich = enrich  # callers and incidents of new incoming calls
        self.moment = Moment(builder.now, builder.zone)
        self.lookback = dt.timedelta(seconds=config.lookback)
        self.reach = Reach()
        self.unbuilt: dict[int, str] = {}  # id of a group → why its legs could not be built
        self.dry_run = False  # set by execute: a dry run says what it would read

    def execute(self, options: RunOptions) -> dt.datetime | None:
        """Read, record and move the marks; returns the earliest calldate read (in cursor mode
        the next run re-reads the same tail, so retention must not forget its calls)."""
        self.say_once_a_day(self.source.warnings + self.clock_warnings())
        self.dry_run = options.dry_run
        planned = self.plan(options)
        if planned is None:
            self.report.source_read = True
            return None  # an empty table, or nothing since the origin
        axis, span = planned
        walk = Walk(
            lambda lo, hi: self.source.read_window(lo, hi, axis.column),
            lambda after: self.source.next_position(after, axis.column),
            span.start, span.stop, span.horizon, axis.lookback, self.config.batch_size,
            position=axis.position, first_width=axis.first_width,
            min_width=axis.min_width, max_width=axis.max_width)
        if not options.backfill:  # a backfill says one line per day itself
            log.debug("reading cdr rows by %s from %s to %s (calls starting before %s)",
                      axis.column, span.start, span.horizon, span.stop)
        progress = options.progress if axis.on_calldate else None
        self.scan(walk, axis, progress, self.dates(axis, options))
        self.report.source_read = True
        self.report.rows = walk.stats.rows
        if walk.stats.newest is not None:
            self.report.newest_row = walk.stats.newest.isoformat()
        if not options.backfill:  # a backfill never moves the marks
            self.move_marks(axis)
        return walk.stats.oldest

    # -- where the read goes
    def plan(self, options: RunOptions) -> tuple[Axis, ReadRange] | None:
        """The axis and range of this read; None when there is nothing to read."""
        column = self.source.backfill_column if options.backfill else self.source.cursor
        if column == "calldate":
            # a table's backfill range is in dates: it reads calldate windows whatever the cursor
            axis = calldate_axis(self.lookback)
            if options.backfill:
                return axis, backfill_range(
                    options.since, options.until, self.origin(), self.lookback,
                    self.ledger.pruned_before(), options.force, self.moment)
            return axis, live_range(self.resume_calldate(), self.moment)
        mark = None if options.backfill else self.source.cursor_mark(self.ledger)
        newest = self.source.newest_position(column)
        if newest is None:
            return None
        axis = offset_axis() if column == OFFSET else \
            cursor_axis(column, newest, self.config.batch_size, self.config.settle)
        if options.backfill:  # a file's backfill: from its first line of the range on
            start = self.source.first_position_since(column, options.since or self.origin())
            return None if start is None else (axis, cursor_range(start, newest, axis))
        start = cursor_start(mark, axis, self.moment)
        if start is FROM_CALLDATE:
            start = self.source.first_position_since(column, self.resume_calldate())
            if start is None:
                return None
        return axis, cursor_range(start, newest, axis)

    def resume_calldate(self) -> dt.datetime:
        return resume_calldate(self.ledger.watermark(), self.origin(), self.lookback,
                               self.moment)

    def origin(self) -> dt.datetime:
        """Where this ledger started: fixed by its first run, so a later run never reaches
        further back on its own."""
        stored = self.ledger.origin()
        if stored is not None:
            return stored
        start = parse_local(self.config.start) if self.config.start else None
        origin = first_origin(start, self.lookback, self.moment)
        self.ledger.set_origin(origin)
        self.note_history(origin)
        return origin

    def note_history(self, origin: dt.datetime) -> None:
        """The first run: say what it leaves unread before its origin, and keep it for
        `status` (a source that cannot count its rows says nothing)."""
        count = getattr(self.source, "rows_before", None)
        rows, oldest = count(origin) if count is not None else (0, None)
        if not rows or oldest is None:
            return
        history = UnreadHistory(origin, oldest, rows)
        self.ledger.set_unread_history(history.to_setting())
        log.info("first run of this ledger: it %s the calls from %s on (source.start: by "
                 "default the lookback before now); %s",
                 "would read" if self.dry_run else "reads",
                 f"{origin:%Y-%m-%d %H:%M}", history.said("then"))

    def move_marks(self, axis: Axis) -> None:
        reach = self.reach
        mark = next_mark(self.ledger.watermark(), reach.taken, reach.held_back)
        if mark is not None:
            self.ledger.set_watermark(mark)
        current = self.ledger.watermark()
        if reach.taken is not None and current is not None:
            self.report.watermark = current.isoformat()
        if not axis.on_calldate:
            position = next_mark(self.source.cursor_mark(self.ledger), reach.taken_position,
                                 reach.held_back_position)
            if position is not None:
                self.source.set_cursor_mark(self.ledger, position)

    def dates(self, axis: Axis,
              options: RunOptions) -> tuple[dt.datetime, dt.datetime | None] | None:
        """The dates a backfill's calls start in, where its windows are not dates (a file's
        offsets); None where the windows themselves are the range."""
        if not options.backfill or axis.on_calldate:
            return None
        return options.since or self.origin(), options.until

    # -- groups → calls → ledger rows
    def scan(self, walk: Walk, axis: Axis, progress: Callable[[Progress], None] | None,
             dates: tuple[dt.datetime, dt.datetime | None] | None = None) -> None:
        batch: list[tuple[Call, Group]] = []
        progress_at = time.monotonic() + PROGRESS_EVERY
        last: dt.datetime | None = None
        for whole in walk.groups():
            if progress is not None:
                self.tell(progress, walk, whole.first)
            elif time.monotonic() >= progress_at:
                progress_at = time.monotonic() + PROGRESS_EVERY
                log.info("reading: at %s, %d rows so far, %d new calls",
                         whole.first.isoformat(sep=" "), walk.stats.rows, self.report.new_calls)
            for group in self.calls_of(whole, walk, axis):
                call = self.build(group)
                if dates is not None and not call.starts_within(*dates):
                    # a file's backfill reads every line: this call is not its range's
                    self.unbuilt.pop(id(group), None)
                    continue
                if settling(call.end, self.moment.now, self.config.settle):
                    # it ended moments ago: late legs (CDR batch mode) may still be on their way
                    self.unbuilt.pop(id(group), None)
                    self.report.settling += 1
                    self.reach.held_back = lowest(self.reach.held_back, call.first_calldate)
                    self.reach.held_back_position = lowest(self.reach.held_back_position,
                                                           group.first_position)
                    continue
                batch.append((call, group))
            if len(batch) >= KNOWN_BATCH:
                self.record(batch, walk, axis)
                batch = []
                self.tell(progress, walk, whole.first)
            last = whole.first
        self.record(batch, walk, axis)
        if last is not None:
            self.tell(progress, walk, last)  # the calls just recorded counted in

    def tell(self, progress: Callable[[Progress], None] | None, walk: Walk,
             position: dt.datetime) -> None:
        if progress is not None:
            progress(Progress(position, walk.start, walk.stop, walk.stats.rows,
                              self.report.new_calls))

    def calls_of(self, group: Group, walk: Walk, axis: Axis) -> list[Group]:
        """A group's legs as the calls they make: one, unless the key was used again for
        another call (run/reuse.py). A call that begins where a later range does is left to
        that range's read."""
        if len(group.legs) < 2:
            return [group]
        parts = split(group.legs, self.builder.zone, self.builder.limits)
        if len(parts) == 1:
            return [group]
        found = []
        for legs in parts:
            positions = [axis.position(leg) for leg in legs]
            if min(positions) < walk.stop:
                found.append(Group(group.key, min(positions), max(positions), legs))
        return found

    def build(self, group: Group) -> Call:
        """The call of a group; a stand-in when its legs defeat the code (a bug), which the
        ledger keeps parked so that neither the batch nor the watermark waits on it."""
        try:
            return self.builder(group.legs)
        except Exception as exc:
            # the traceback for the report; the ledger decides whether this is news (take)
            log.debug("call %s: building it failed", group.key, exc_info=True)
            self.unbuilt[id(group)] = (f"could not be built from its {len(group.legs)} cdr "
                                       f"rows: {type(exc).__name__}: {exc}")
            return stand_in(group.key, group.legs, self.builder.zone)

    def record(self, batch: list[tuple[Call, Group]], walk: Walk, axis: Axis) -> None:
        if not batch:
            return
        known = self.ledger.known_legs(call.key for call, _ in batch)
        batch = self.tell_reused(batch, known)
        unbuilt = {call.key: self.unbuilt.pop(id(group)) for call, group in batch
                   if id(group) in self.unbuilt}
        earlier = self.began_earlier([g for c, g in batch if c.key not in known], walk, axis)
        taken = []
        for call, group in batch:
            if call.key in earlier:
                log.debug("call %s began before the read range: not taken", call.key)
                continue
            self.reach.taken = highest(self.reach.taken, call.last_calldate)
            self.reach.taken_position = highest(self.reach.taken_position, group.last_position)
            held = known.get(call.key)
            if held is None:
                taken.append(call)
            elif call.key in unbuilt:
                # known already (delivered, say): nothing is lost and nothing to do each run
                log.info("call %s: kept as recorded before (%s); its cdr rows as they are now "
                         "%s", call.key, held.stage, unbuilt[call.key])
            elif call.legs > held.legs:
                if held.first_calldate is not None and call.first_calldate > held.first_calldate:
                    # its first rows lie before the read: a build of the rest would drop them
                    log.info("call %s: %d cdr rows read without its first ones (before the "
                             "read's start): kept as recorded; `poller run --since %s` reads "
                             "it whole", call.key, call.legs,
                             held.first_calldate.date().isoformat())
                    continue
                self.late_legs(call, held)
        self.take(taken, unbuilt)

    def tell_reused(self, batch: list[tuple[Call, Group]],
                    known: dict[str, Known]) -> list[tuple[Call, Group]]:
        """Calls whose key names another call too (a PBX restarted with a reset counter, a
        cloned systemname) get the key dated by their first leg; later legs of a call keep
        its key, plain or dated (run/reuse.py decides)."""
        by_key: dict[str, list[int]] = {}
        for number, (call, _) in enumerate(batch):
            by_key.setdefault(call.key, []).append(number)
        told = list(batch)
        renamed: list[str] = []
        for raw, numbers in by_key.items():
            held = known.get(raw)
            reads = [batch[number][0] for number in numbers]
            if len(reads) == 1 and (held is None or
                                    held.first_calldate == reads[0].first_calldate):
                continue  # one call, new or the one held: the common case, no more to ask
            calls = self.ledger.held_calls(raw) if held is not None else {}
            spans = {key: Span.of_call(call) for key, call in calls.items()}
            keys = assign_keys(raw, [Span.of_call(call) for call in reads], spans,
                               self.builder.limits)
            for number, call, key in zip(numbers, reads, keys, strict=True):
                if key == raw:
                    continue
                if key not in spans:
                    holder = spans[raw].first_calldate if raw in spans else \
                        reads[keys.index(raw)].first_calldate
                    log.warning("call %s of %s: its key is held by a call of %s; delivered as "
                                "%s", raw, call.first_calldate, holder, key)
                told[number] = (dataclasses.replace(call, key=key), batch[number][1])
                renamed.append(key)
        if renamed:
            known.update(self.ledger.known_legs(renamed))
        return told

    def late_legs(self, call: Call, known: Known) -> None:
        """Rows of a known call arrived after it was recorded (a member channel that ended
        early, a CDR batch posted late), or a call that could not be built now builds: rebuild
        it while nothing has been sent for it."""
        stage = known.stage
        if known.has_object or stage not in (Stage.SEEN, Stage.SKIPPED, Stage.FAILED):
            log.warning("call %s: %d more cdr rows arrived after it was sent to the target; "
                        "its record there may be out of date", call.key, call.legs - known.legs)
            self.ledger.set_legs(call.key, call.legs)
            return
        was_unbuilt = known.status == Status.UNBUILT
        if stage == Stage.FAILED and not was_unbuilt:
            new_stage = Stage.FAILED  # still parked: `poller retry` decides
        else:
            new_stage = Stage.SEEN if call.incoming else Stage.SKIPPED
        self.ledger.rebuild(call, new_stage, fresh=was_unbuilt)
        kind = "incoming" if call.incoming else "not incoming"
        if was_unbuilt:
            log.info("call %s: built from its cdr rows at last (%s, %s)", call.key, call.status,
                     kind)
        else:
            log.info("call %s: %d more cdr rows arrived; rebuilt (%s, %s)", call.key,
                     call.legs - known.legs, call.status, kind)
        if new_stage == Stage.SEEN and stage != Stage.SEEN:
            self.report.new_calls += 1

    def began_earlier(self, groups: list[Group], walk: Walk, axis: Axis) -> set[str]:
        """Keys with a leg before the walk's start (it saw only their later legs)."""
        look = earlier_look(walk.start, axis.lookback)
        suspects = [g.key for g in groups if g.first_position < look.suspects_before]
        return self.source.keys_before(suspects, look.since, look.until, axis.column)

    def take(self, calls: list[Call], unbuilt: dict[str, str]) -> None:
        """Record new calls in the ledger: incoming ones pending, the others skipped; a call
        whose legs could not be built (`unbuilt`: key → why) is parked as such."""
        report = self.report
        for call in calls:
            for disposition in call.unknown_dispositions:
                log.warning("call %s: unknown disposition %r counted as unanswered", call.key,
                            disposition)
            for anomaly in call.anomalies:
                log.warning("call %s: %s", call.key, anomaly)
        for call in (c for c in calls if c.key in unbuilt):
            if self.ledger.park_unbuilt(call, unbuilt[call.key]):
                log.error("call %s: %s; parked as unbuilt (see poller status; please report "
                          "this, with the traceback -v shows)", call.key, unbuilt[call.key])
                report.failures += 1
                report.parked += 1
        calls = [c for c in calls if c.key not in unbuilt]
        incoming = [c for c in calls if c.incoming]
        changes = None
        if self.enrich is not None and incoming:
            incoming, changes = self.enrich(incoming, self.ledger)
        report.new_calls += self.ledger.add_many(
            [(c, Stage.SEEN, None) for c in incoming], changes)
        report.skipped += self.ledger.add_many(
            [(c, Stage.SKIPPED, "not incoming") for c in calls if not c.incoming])

    # -- what a read says once a day
    def clock_warnings(self) -> list[str]:
        """A newest row ahead of now: a wrong source.timezone, which reads nothing and says
        nothing. Looked for until said for the day (one MAX on the calldate index)."""
        if self.ledger.warned_on() == self.moment.local.date():
            return []
        ahead = rows_ahead(self.source.newest_calldate(), self.moment.zone, self.moment.now)
        return [ahead] if ahead else []

    def say_once_a_day(self, warnings: list[str]) -> None:
        """Configuration warnings, logged by the first run of a day (not 1,440 times)."""
        if not warnings:
            return
        today = self.moment.local.date()
        if self.ledger.warned_on() == today:
            for warning in warnings:
                log.debug("%s", warning)
            return
        for warning in warnings:
            log.warning("%s", warning)
        self.ledger.set_warned_on(today)
