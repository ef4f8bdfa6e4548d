"""One run: read new cdr rows into the ledger, then deliver the calls that are due.

The two halves meet only in the ledger: the scan records every call it builds (incoming ones as
pending, the rest as skipped) and moves the watermark; delivery works from the ledger alone, so a
call that failed in an earlier run is retried without reading the cdr table again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .calls import build_call, stand_in
from .clock import earliest_local, to_aware
from .config import Config
from .delivery import Delivery
from .errors import ConfigError, ExitCode, RecordingsUnavailable, ServiceUnavailable
from .ledger import FAILED, SEEN, SKIPPED, Entry, Known, Ledger, utcnow
from .lock import RunLock
from .model import UNBUILT, Call
from .source import CdrSource
from .windows import MAX_WIDTH, MIN_WIDTH, Group, Walk

if TYPE_CHECKING:
    from .targets import Target

log = logging.getLogger("poller")

# rows dated a little in the future (clock skew between PBX and poller) are still read
CLOCK_SKEW = dt.timedelta(minutes=10)
KNOWN_BATCH = 200
PROGRESS_EVERY = 10.0  # seconds between progress lines on long reads


@dataclass(frozen=True)
class RunOptions:
    """What one `poller run` was asked to do."""

    since: dt.datetime | None = None  # naive, source time zone; a backfill when set
    until: dt.datetime | None = None
    dry_run: bool = False
    force: bool = False  # backfill even where the ledger has forgotten delivered calls
    limit: int | None = None
    now: dt.datetime | None = None  # aware; tests pin the clock
    metrics_file: str | None = None  # overrides [metrics] file
    # asked between calls: a follow-mode service stops after the call in hand
    should_stop: Callable[[], bool] = field(default=lambda: False, compare=False)
    # told how far a long read has come (a progress bar on a terminal)
    progress: Callable[[Progress], None] | None = field(default=None, compare=False)

    @property
    def backfill(self) -> bool:
        return self.since is not None or self.until is not None


@dataclass(frozen=True)
class Progress:
    """How far the read of one run has come."""

    position: dt.datetime  # the first calldate of the call just read (naive local)
    start: dt.datetime
    stop: dt.datetime
    rows: int
    new_calls: int

    @property
    def fraction(self) -> float:
        span = (self.stop - self.start).total_seconds()
        done = (self.position - self.start).total_seconds()
        return min(max(done / span, 0.0), 1.0) if span > 0 else 1.0


@dataclass
class RunReport:
    """What a run did, for the summary line, `status` and the exit code."""

    rows: int = 0
    new_calls: int = 0
    skipped: int = 0
    delivered: Counter[str] = field(default_factory=Counter)
    recordings: int = 0
    recording_bytes: int = 0
    failures: int = 0
    parked: int = 0
    waiting: int = 0
    settling: int = 0  # calls that ended less than source.settle ago: taken next run
    unavailable: list[str] = field(default_factory=list)
    planned: list[Call] = field(default_factory=list)
    seconds: float = 0.0
    watermark: str | None = None
    newest_row: str | None = None  # the latest calldate this run read
    source_read: bool = False  # the cdr table was read (even if nothing new was there)
    finished_at: str = ""

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if self.failures or self.unavailable else ExitCode.OK

    def summary(self) -> str:
        statuses = ", ".join(f"{name} {count}" for name, count in sorted(self.delivered.items()))
        return (f"delivered {sum(self.delivered.values())} calls ({statuses or 'none'}), "
                f"{self.recordings} recordings, {self.new_calls} new, {self.skipped} skipped, "
                f"{self.waiting} waiting, {self.failures} failed ({self.parked} parked), "
                f"{self.rows} rows read, {self.seconds:.2f}s")

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "new_calls": self.new_calls, "skipped": self.skipped,
            "delivered": dict(self.delivered), "recordings": self.recordings,
            "recording_bytes": self.recording_bytes,
            "failures": self.failures, "parked": self.parked, "waiting": self.waiting,
            "settling": self.settling,
            "unavailable": self.unavailable, "seconds": round(self.seconds, 3),
            "watermark": self.watermark, "newest_row": self.newest_row,
            "finished_at": self.finished_at,
        }


def run_once(config: Config, options: RunOptions | None = None,
             target_factory: Callable[[Config], Target] | None = None) -> RunReport:
    """One batch under the run lock. A cron run that finds the lock held raises LockHeld."""
    options = options or RunOptions()
    started = time.monotonic()
    report = RunReport()
    if options.dry_run:
        # a dry run takes no lock and creates nothing, not even an empty ledger
        existing = Ledger.open_existing(config.state.database_url)
        try:
            Run(config, options, existing or _EmptyLedger(), report,  # type: ignore[arg-type]
                target_factory).execute()
        finally:
            if existing is not None:
                existing.close()
        report.seconds = time.monotonic() - started
        return report
    # a backfill waits for the lock; the minutely run gives way at once
    with RunLock(config.state.dir, wait=options.backfill):
        _clear_leftovers(config.state.dir)
        ledger = Ledger(config.state.database_url)
        try:
            run = Run(config, options, ledger, report, target_factory)
            run.execute()
            if not options.backfill:
                run.upkeep()
        finally:
            report.seconds = time.monotonic() - started
            report.finished_at = utcnow().isoformat(timespec="seconds") + "Z"
            _save_last_run(ledger, report)
            ledger.close()
    if options.metrics_file or config.metrics.file:
        from .metrics import write_metrics

        write_metrics(config, report, options.metrics_file)
    return report


def _days(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 86400:g} days"


def _clear_leftovers(state_dir: str) -> None:
    """Temporary files of a run that was killed: under the lock no other run is using them."""
    for path in (Path(state_dir) / "tmp").glob("*"):
        try:
            path.unlink()
        except OSError as exc:
            log.warning("could not remove leftover %s: %s", path, exc)


def _save_last_run(ledger: Ledger, report: RunReport) -> None:
    import json

    try:
        ledger.put("last_run", json.dumps(report.to_json()))
    except Exception as exc:  # never mask the run's own outcome
        log.warning("could not record the last run: %s", exc)


class Run:
    """The collaborators of one run, and its two phases."""

    def __init__(self, config: Config, options: RunOptions, ledger: Ledger, report: RunReport,
                 target_factory: Callable[[Config], Target] | None):
        self.config = config
        self.options = options
        self.ledger = ledger
        self.report = report
        self.zone = ZoneInfo(config.source.timezone)
        now = options.now or dt.datetime.now(dt.UTC)
        self.now = now.astimezone(dt.UTC)
        self.now_local = now.astimezone(self.zone).replace(tzinfo=None)
        self.target_factory = target_factory
        self._target: Target | None = None
        # the earliest calldate the scan met: in cursor mode the next run re-reads the same tail,
        # so the ledger must still know its calls
        self.oldest_read: dt.datetime | None = None

    def execute(self) -> None:
        dry = self.options.dry_run
        try:
            self.scan()
        except ServiceUnavailable as exc:
            log.error("%s", exc)
            self.report.unavailable.append(str(exc))
        if dry:
            self.plan_pending()
            return
        try:
            self.deliver()
        except ServiceUnavailable as exc:
            log.error("%s; the remaining calls wait for the next run", exc)
            self.report.unavailable.append(str(exc))
        finally:
            if self._target is not None:
                self._target.close()

    # -- phase 1: cdr rows into the ledger
    def scan(self) -> None:
        source = CdrSource(self.config.source, needed=_template_columns(self.config))
        self.say_once_a_day(source.warnings)
        try:
            column = self.config.source.cursor
            if column == "calldate" or self.options.backfill:
                # a backfill's range is in dates: it reads calldate windows whatever the cursor
                axis = calldate_axis(self.config)
                start, stop, horizon = self.read_range()
            else:
                planned = self.cursor_range(source, column)
                if planned is None:
                    self.report.source_read = True
                    return  # an empty table, or nothing since the origin
                axis, (start, stop, horizon) = planned
            walk = Walk(
                lambda lo, hi: source.read_window(lo, hi, axis.column),
                lambda after: source.next_position(after, axis.column),
                start, stop, horizon, axis.lookback, self.config.source.batch_size,
                position=axis.position, first_width=axis.first_width,
                min_width=axis.min_width, max_width=axis.max_width)
            log.debug("reading cdr rows by %s from %s to %s (calls starting before %s)",
                      axis.column, start, horizon, stop)
            Scan(self, source, walk, axis).execute()
            self.report.source_read = True
            self.oldest_read = walk.stats.oldest
            self.report.rows = walk.stats.rows
            if walk.stats.newest is not None:
                self.report.newest_row = walk.stats.newest.isoformat()
        finally:
            source.close()

    def say_once_a_day(self, warnings: list[str]) -> None:
        """Configuration warnings, logged by the first run of a day (not 1,440 times)."""
        if not warnings:
            return
        today = self.now_local.date().isoformat()
        if self.ledger.get("warned_on") == today:
            for warning in warnings:
                log.debug("%s", warning)
            return
        for warning in warnings:
            log.warning("%s", warning)
        if not self.options.dry_run:
            self.ledger.put("warned_on", today)

    def cursor_range(self, source: CdrSource,
                     column: str) -> tuple[Axis, tuple[Any, Any, Any]] | None:
        """[start, stop) and horizon on an insertion-ordered column: from the mark minus a tail
        (rows commit out of order under concurrency) to the newest row."""
        newest = source.newest_position(column)
        if newest is None:
            return None
        axis = cursor_axis(self.config, column, newest)
        mark = self.ledger.cursor_mark(column)
        if mark is None:
            # a fresh ledger, or a cursor new to a ledger that read by calldate: start where the
            # calls a calldate run would read next start (the ledger knows those before)
            start = source.first_position_since(column, self.resume_calldate())
            if start is None:
                return None
        elif isinstance(mark, dt.datetime):
            # a TIMESTAMP column reads in the server's local time, which repeats an hour in
            # autumn: rows of the second pass read earlier than the mark set before the change
            start = self.wall_clock_before(mark, axis.lookback)
        else:
            start = mark - axis.lookback
        horizon = newest + axis.unit
        return axis, (start, horizon, horizon)

    def resume_calldate(self) -> dt.datetime:
        """Where a calldate read resumes: a lookback before the watermark, else the origin."""
        origin = self.origin()
        mark = self.ledger.watermark()
        if mark is None:
            return origin
        lookback = dt.timedelta(seconds=self.config.source.lookback)
        return max(self.wall_clock_before(mark, lookback), origin)

    def wall_clock_before(self, mark: dt.datetime, span: dt.timedelta) -> dt.datetime:
        """The earliest local wall-clock reading since `span` of elapsed time before `mark`.

        The span is measured on instants; the hour that repeats in autumn reads earlier than a
        mark set before it, so the reading since then can be earlier than `mark - span`.
        """
        return earliest_local(to_aware(mark, self.zone) - span, self.now, self.zone)

    def read_range(self) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
        """[start, stop) for first legs, and how far to read ahead (naive local times)."""
        lookback = dt.timedelta(seconds=self.config.source.lookback)
        latest = self.now_local + CLOCK_SKEW
        if self.options.backfill:
            start = self.options.since or self.origin()
            forgotten = self.ledger.pruned_before()
            if forgotten is not None and start < forgotten and not self.options.force:
                raise ConfigError(
                    f"the ledger has forgotten delivered calls before "
                    f"{forgotten.isoformat(sep=' ', timespec='minutes')} (state.retention): a "
                    "backfill from there would deliver them again; start the backfill later, "
                    "or give --force to deliver them again on purpose")
            stop = min(self.options.until or latest, latest)
            return start, stop, min(stop + lookback, latest)
        return self.resume_calldate(), latest, latest

    def upkeep(self) -> None:
        """Forget old delivered calls (never ones the next read may meet); trim the archive."""
        retention = dt.timedelta(seconds=self.config.state.retention)
        before = self.forget_before(retention)
        pruned = self.ledger.prune(before) if before is not None else 0
        if pruned:
            log.info("ledger: forgot %d delivered calls older than %s", pruned,
                     _days(retention))
        keep = self.config.target.archive.keep_days
        if self.config.target.kind == "archive" and keep > 0:
            from .targets.archive import prune_archive

            prune_archive(Path(self.config.target.archive.dir),
                          (self.now_local - dt.timedelta(days=keep)).date())

    def forget_before(self, retention: dt.timedelta) -> dt.datetime | None:
        """The calldate before which delivered calls may be forgotten, or None for none."""
        before = self.now_local - retention
        lookback = dt.timedelta(seconds=self.config.source.lookback)
        if self.config.source.cursor != "calldate":
            # a cursor's tail counts rows (or minutes of inserts), not calldates: on a quiet PBX
            # it reaches calls of long ago, and the next run re-reads at least this run's rows
            if self.oldest_read is None:
                return None
            before = min(before, self.oldest_read - lookback)
        mark = self.ledger.watermark()
        if mark is not None:
            # the next read starts a lookback before the watermark and looks one more lookback
            # back for calls that began earlier: a quiet PBX leaves that far behind now
            before = min(before, self.wall_clock_before(mark, 2 * lookback))
        return before

    def origin(self) -> dt.datetime:
        """Where a fresh ledger starts: source.start, else the lookback before the first run."""
        stored = self.ledger.get("origin")
        if stored:
            return dt.datetime.fromisoformat(stored)
        from .clock import parse_local

        if self.config.source.start:
            origin = parse_local(self.config.source.start)
        else:
            origin = self.now_local - dt.timedelta(seconds=self.config.source.lookback)
        origin = origin.replace(microsecond=0)
        if not self.options.dry_run:
            self.ledger.put("origin", origin.isoformat())
        return origin

    # -- phase 2: pending calls to the target
    def deliver(self) -> None:
        limit = self.options.limit
        delivered = 0
        for entry in self._due():
            if limit is not None and delivered >= limit:
                break
            if self.options.should_stop():
                log.info("stopping: the remaining calls wait for the next run")
                break
            try:
                if Delivery(self, entry).execute():
                    delivered += 1
            except RecordingsUnavailable as exc:
                # only calls with recordings wait for the folder; the others go on
                if str(exc) not in self.report.unavailable:
                    log.error("%s", exc)
                    self.report.unavailable.append(str(exc))

    def _due(self) -> Iterator[Entry]:
        since, until = self.options.since, self.options.until
        if self.options.backfill:
            requeued = self.ledger.requeue_failed(since=since, until=until)
            if requeued:
                log.info("backfill: %d parked calls in the range put back in line", requeued)
        last: Entry | None = None
        while True:
            batch = self.ledger.due(self._due_now(), since, until, limit=100, after=last)
            if not batch:
                return
            yield from batch
            last = batch[-1]

    def _due_now(self) -> dt.datetime | None:
        """The moment next attempts are compared with; None (all due) for a backfill, which
        retries the failed calls of its range at once, those backing off included."""
        return None if self.options.backfill else self.now.replace(tzinfo=None)

    def plan_pending(self) -> None:
        for entry in self.ledger.due(self._due_now(), self.options.since, self.options.until):
            if entry.key not in {c.key for c in self.report.planned}:
                self.report.planned.append(entry.call)

    def target(self) -> Target:
        if self._target is None:
            if self.target_factory is not None:
                self._target = self.target_factory(self.config)
            else:
                from .targets import open_target

                self._target = open_target(self.config)
        return self._target


@dataclass(frozen=True)
class Axis:
    """What a run's windows run over: calldate, or an insertion-ordered cursor column."""

    column: str
    lookback: Any  # how far behind a mark to re-read, in the column's own units
    unit: Any  # the smallest step of the column
    first_width: Any
    min_width: Any
    max_width: Any

    def position(self, leg: Any) -> Any:
        return leg.calldate if self.column == "calldate" else leg.cursor


def calldate_axis(config: Config) -> Axis:
    lookback = dt.timedelta(seconds=config.source.lookback)
    return Axis("calldate", lookback, dt.timedelta(seconds=1),
                min(lookback, dt.timedelta(hours=1)), MIN_WIDTH, MAX_WIDTH)


def cursor_axis(config: Config, column: str, sample: Any) -> Axis:
    batch = config.source.batch_size
    if isinstance(sample, int):
        # ids of concurrent inserts interleave by a few rows: re-read a batch behind the mark
        return Axis(column, max(batch, 100), 1, batch, 1, 1_000_000_000)
    # an insertion time (amoCRM's `addtime`): re-read twice the settle delay behind the mark
    tail = dt.timedelta(seconds=max(config.source.settle, 60) * 2)
    return Axis(column, tail, dt.timedelta(seconds=1), dt.timedelta(minutes=15),
                dt.timedelta(seconds=1), dt.timedelta(days=1))


def _template_columns(config: Config) -> set[str]:
    from .recordings import template_fields

    return template_fields(config.recordings.name)


class Scan:
    """Groups from the walk → calls → ledger rows, and the watermark they justify."""

    def __init__(self, run: Run, source: CdrSource, walk: Walk, axis: Axis):
        self.run = run
        self.source = source
        self.walk = walk
        self.axis = axis
        self.config = run.config.source
        self.settled_before = run.now - dt.timedelta(seconds=self.config.settle)
        # the marks the calls taken justify, on calldate and on the walk's own column
        self.highest: dt.datetime | None = None  # last calldate of the calls taken
        self.unsettled: dt.datetime | None = None  # first calldate of the earliest held back
        self.highest_position: Any = None
        self.unsettled_position: Any = None
        self.unbuilt: dict[str, str] = {}  # key → why its legs could not be built

    def execute(self) -> None:
        batch: list[tuple[Call, Group]] = []
        progress_at = time.monotonic() + PROGRESS_EVERY
        for group in self.walk.groups():
            if self.run.options.progress is not None and self.axis.column == "calldate":
                self.run.options.progress(Progress(
                    group.first, self.walk.start, self.walk.stop, self.walk.stats.rows,
                    self.run.report.new_calls))
            elif time.monotonic() >= progress_at:
                progress_at = time.monotonic() + PROGRESS_EVERY
                log.info("reading: at %s, %d rows so far, %d new calls",
                         group.first.isoformat(sep=" "), self.walk.stats.rows,
                         self.run.report.new_calls)
            call = self.build(group)
            if call.end > self.settled_before:
                # it ended moments ago: late legs (CDR batch mode) may still be on their way
                self.run.report.settling += 1
                self.unsettled = _lowest(self.unsettled, call.first_calldate)
                self.unsettled_position = _lowest(self.unsettled_position, group.first_position)
                continue
            batch.append((call, group))
            if len(batch) >= KNOWN_BATCH:
                self.record(batch)
                batch = []
        self.record(batch)
        self.move_watermark()

    def build(self, group: Group) -> Call:
        """The call of a group; a stand-in when its legs defeat the code (a bug), which the
        ledger keeps parked so that neither the batch nor the watermark waits on it."""
        try:
            return build_call(group.legs, self.config.incoming, self.run.zone,
                              self.run.config.recordings.name)
        except Exception as exc:
            # the traceback for the report; the ledger decides whether this is news (take)
            log.debug("call %s: building it failed", group.key, exc_info=True)
            self.unbuilt[group.key] = (f"could not be built from its {len(group.legs)} cdr "
                                       f"rows: {type(exc).__name__}: {exc}")
            return stand_in(group.key, group.legs, self.run.zone)

    def record(self, batch: list[tuple[Call, Group]]) -> None:
        if not batch:
            return
        known = self.run.ledger.known_legs(call.key for call, _ in batch)
        earlier = self.began_earlier([g for c, g in batch if c.key not in known])
        taken = []
        for call, group in batch:
            if call.key in earlier:
                log.debug("call %s began before the read range: not taken", call.key)
                continue
            self.highest = _highest(self.highest, call.last_calldate)
            self.highest_position = _highest(self.highest_position, group.last_position)
            if call.key not in known:
                taken.append(call)
            elif call.key in self.unbuilt:
                # known already (delivered, say): nothing is lost and nothing to do each run
                log.info("call %s: kept as recorded before (%s); its cdr rows as they are now "
                         "%s", call.key, known[call.key].stage, self.unbuilt[call.key])
            elif call.legs > known[call.key].legs:
                self.late_legs(call, known[call.key])
        self.take(taken)

    def late_legs(self, call: Call, known: Known) -> None:
        """Rows of a known call arrived after it was recorded (a member channel that ended
        early, a CDR batch posted late), or a call that could not be built now builds: rebuild
        it while nothing has been sent for it."""
        if self.run.options.dry_run:
            return
        ledger, stage = self.run.ledger, known.stage
        if known.has_object or stage not in (SEEN, SKIPPED, FAILED):
            log.warning("call %s: %d more cdr rows arrived after it was sent to the target; "
                        "its record there may be out of date", call.key, call.legs - known.legs)
            ledger.set_legs(call.key, call.legs)
            return
        was_unbuilt = known.status == UNBUILT
        if stage == FAILED and not was_unbuilt:
            new_stage = FAILED  # still parked: `poller retry` decides
        else:
            new_stage = SEEN if call.incoming else SKIPPED
        ledger.rebuild(call, new_stage, fresh=was_unbuilt)
        if was_unbuilt:
            log.info("call %s: built from its cdr rows at last (%s, %s)", call.key, call.status,
                     "incoming" if call.incoming else "not incoming")
        else:
            log.info("call %s: %d more cdr rows arrived; rebuilt (%s, %s)", call.key,
                     call.legs - known.legs, call.status,
                     "incoming" if call.incoming else "not incoming")
        if new_stage == SEEN and stage != SEEN:
            self.run.report.new_calls += 1

    def began_earlier(self, groups: list[Group]) -> set[str]:
        """Keys with a leg before the walk's start (we saw only their later legs)."""
        start, lookback = self.walk.start, self.axis.lookback
        suspects = [g.key for g in groups if g.first_position < start + lookback]
        return self.source.keys_before(suspects, start - lookback, start, self.axis.column)

    def take(self, calls: list[Call]) -> None:
        """Record new calls in the ledger: incoming ones pending, the others skipped."""
        report = self.run.report
        for call in calls:
            for disposition in call.unknown_dispositions:
                log.warning("call %s: unknown disposition %r counted as unanswered", call.key,
                            disposition)
        if self.run.options.dry_run:
            planned = [c for c in calls if c.incoming and c.key not in self.unbuilt]
            report.planned.extend(planned)
            report.new_calls += len(planned)
            report.skipped += sum(1 for c in calls if not c.incoming and c.key not in self.unbuilt)
            return
        for call in (c for c in calls if c.key in self.unbuilt):
            if self.run.ledger.park_unbuilt(call, self.unbuilt[call.key]):
                log.error("call %s: %s; parked as unbuilt (see poller status; please report "
                          "this, with the traceback -v shows)", call.key, self.unbuilt[call.key])
                report.failures += 1
                report.parked += 1
        calls = [c for c in calls if c.key not in self.unbuilt]
        report.new_calls += self.run.ledger.add_many(
            [(c, SEEN, None) for c in calls if c.incoming])
        report.skipped += self.run.ledger.add_many(
            [(c, SKIPPED, "not incoming") for c in calls if not c.incoming])

    def move_watermark(self) -> None:
        """Move the marks to the calls taken, never past a call held back, never backwards."""
        run = self.run
        if run.options.backfill or run.options.dry_run or self.highest is None:
            return  # a backfill never moves them; nothing new leaves them alone
        mark = _lowest(self.highest, self.unsettled)
        old = run.ledger.watermark()
        if old is None or mark > old:
            run.ledger.set_watermark(mark)
            old = mark
        run.report.watermark = old.isoformat()
        if self.axis.column != "calldate":
            position = _lowest(self.highest_position, self.unsettled_position)
            previous = run.ledger.cursor_mark(self.axis.column)
            if previous is None or position > previous:
                run.ledger.set_cursor_mark(self.axis.column, position)


def _lowest(current: Any, value: Any) -> Any:
    return value if current is None else current if value is None else min(current, value)


def _highest(current: Any, value: Any) -> Any:
    return value if current is None else current if value is None else max(current, value)


class _EmptyLedger:
    """Stands in for a ledger that does not exist yet, in a dry run (which writes nothing)."""

    def watermark(self) -> None:
        return None

    def get(self, name: str) -> None:
        return None

    def known(self, keys: Any) -> dict[str, str]:
        return {}

    def known_legs(self, keys: Any) -> dict[str, Known]:
        return {}

    def pruned_before(self) -> None:
        return None

    def cursor_mark(self, column: str) -> None:
        return None

    def due(self, *args: Any, **kwargs: Any) -> list[Entry]:
        return []
