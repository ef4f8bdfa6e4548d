"""Phase one of a run: choose the read range, walk the cdr table, scan, move the marks."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol

from poller.clock import parse_local
from poller.config.schema import SourceConfig
from poller.run.marks import (
    Axis,
    Moment,
    ReadRange,
    backfill_range,
    calldate_axis,
    cursor_axis,
    cursor_range,
    cursor_resume,
    first_origin,
    live_range,
    next_mark,
    resume_calldate,
)
from poller.run.report import RunOptions, RunReport
from poller.run.scan import Builder, Enrich, Reach, Scan, ScanLedger
from poller.source.skew import rows_ahead
from poller.source.table import CdrSource
from poller.source.walk import Walk

log = logging.getLogger("poller")


class RunLedger(ScanLedger, Protocol):
    """What reading needs of the ledger: the scan's part, the marks and the origin."""

    def watermark(self) -> dt.datetime | None: ...

    def set_watermark(self, mark: dt.datetime) -> None: ...

    def cursor_mark(self, column: str) -> Any: ...

    def set_cursor_mark(self, column: str, mark: Any) -> None: ...

    def origin(self) -> dt.datetime | None: ...

    def set_origin(self, origin: dt.datetime) -> None: ...

    def warned_on(self) -> dt.date | None: ...

    def set_warned_on(self, day: dt.date) -> None: ...

    def pruned_before(self) -> dt.datetime | None: ...


class Reading:
    """Reads what is new since the marks (or a backfill's range) into the ledger."""

    def __init__(self, source: CdrSource, ledger: RunLedger, config: SourceConfig,
                 builder: Builder, options: RunOptions, moment: Moment, report: RunReport,
                 enrich: Enrich | None = None):
        self.source = source
        self.ledger = ledger
        self.enrich = enrich
        self.config = config
        self.builder = builder
        self.options = options
        self.moment = moment
        self.report = report
        self.lookback = dt.timedelta(seconds=config.lookback)
        # the earliest calldate read: in cursor mode the next run re-reads the same tail, so
        # retention must not forget its calls
        self.oldest_read: dt.datetime | None = None

    def execute(self) -> None:
        self.say_once_a_day(self.source.warnings + self.clock_warnings())
        planned = self.plan()
        if planned is None:
            self.report.source_read = True
            return  # an empty table, or nothing since the origin
        axis, span = planned
        walk = Walk(
            lambda lo, hi: self.source.read_window(lo, hi, axis.column),
            lambda after: self.source.next_position(after, axis.column),
            span.start, span.stop, span.horizon, axis.lookback, self.config.batch_size,
            position=axis.position, first_width=axis.first_width,
            min_width=axis.min_width, max_width=axis.max_width)
        log.debug("reading cdr rows by %s from %s to %s (calls starting before %s)",
                  axis.column, span.start, span.horizon, span.stop)
        settled_before = self.moment.now - dt.timedelta(seconds=self.config.settle)
        reach = Scan(walk, axis, self.ledger, self.report, self.builder, settled_before,
                     self.source.keys_before, self.options.progress, self.enrich).execute()
        self.report.source_read = True
        self.oldest_read = walk.stats.oldest
        self.report.rows = walk.stats.rows
        if walk.stats.newest is not None:
            self.report.newest_row = walk.stats.newest.isoformat()
        if not self.options.backfill:  # a backfill never moves the marks
            self.move_marks(axis, reach)

    def plan(self) -> tuple[Axis, ReadRange] | None:
        """The axis and range of this read; None when there is nothing to read."""
        column = self.config.cursor
        if column == "calldate" or self.options.backfill:
            # a backfill's range is in dates: it reads calldate windows whatever the cursor
            axis = calldate_axis(self.lookback)
            if self.options.backfill:
                return axis, backfill_range(
                    self.options.since, self.options.until, self.origin(), self.lookback,
                    self.ledger.pruned_before(), self.options.force, self.moment)
            return axis, live_range(self.resume_calldate(), self.moment)
        newest = self.source.newest_position(column)
        if newest is None:
            return None
        axis = cursor_axis(column, newest, self.config.batch_size, self.config.settle)
        mark = self.ledger.cursor_mark(column)
        if mark is None:
            # a fresh ledger, or a cursor new to a ledger that read by calldate: start where the
            # calls a calldate run would read next start (the ledger knows those before)
            start = self.source.first_position_since(column, self.resume_calldate())
            if start is None:
                return None
        else:
            start = cursor_resume(mark, axis, self.moment)
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
        return origin

    def move_marks(self, axis: Axis, reach: Reach) -> None:
        mark = next_mark(self.ledger.watermark(), reach.taken, reach.held_back)
        if mark is not None:
            self.ledger.set_watermark(mark)
        current = self.ledger.watermark()
        if reach.taken is not None and current is not None:
            self.report.watermark = current.isoformat()
        if not axis.on_calldate:
            position = next_mark(self.ledger.cursor_mark(axis.column), reach.taken_position,
                                 reach.held_back_position)
            if position is not None:
                self.ledger.set_cursor_mark(axis.column, position)

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

