"""Phase one of a run: cdr leg groups → calls → ledger rows, and how far the marks may move.

The scan writes only new calls (incoming ones pending, the rest skipped) and rebuilds of calls
nothing has been sent for; the marks it justifies are returned, and the run moves them.
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
from poller.config.schema import IncomingRules
from poller.ledger.incidents import IncidentChanges
from poller.ledger.schema import Known
from poller.model import Call, Leg, Stage, Status, reused_key
from poller.run.marks import CLOCK_SKEW, Axis, highest, lowest
from poller.run.report import Progress, RunReport
from poller.source.walk import Group, Walk

log = logging.getLogger("poller")

KNOWN_BATCH = 200
# new incoming calls → the same calls with their caller fields and incident, and what that did
# to the ledger's incidents (enrich.Enricher)
Enrich = Callable[[list[Call], Any], tuple[list[Call], IncidentChanges]]
PROGRESS_EVERY = 10.0  # seconds between progress lines on long reads


class ScanLedger(Protocol):
    """What the scan needs of the ledger (the real one, or a dry run's stand-in)."""

    def known_legs(self, keys: Iterable[str]) -> dict[str, Known]: ...

    def add_many(self, calls: Sequence[tuple[Call, Stage, str | None]],
                 incidents: IncidentChanges | None = None) -> int: ...

    def open_incidents(self, numbers: Iterable[str], earliest: dt.datetime,
                       latest: dt.datetime) -> list[OpenIncident]: ...

    def park_unbuilt(self, call: Call, error: str) -> bool: ...

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

    def __call__(self, legs: list[Leg]) -> Call:
        fixed = [plausible(leg, self.zone, self.now, self.longest, CLOCK_SKEW) for leg in legs]
        call = build_call([leg for leg, _ in fixed], self.incoming, self.zone, self.template)
        anomalies = tuple(why for _, why in fixed if why)
        return dataclasses.replace(call, anomalies=anomalies) if anomalies else call


@dataclass
class Reach:
    """The marks the calls of one scan justify, on calldate and on the walk's own column."""

    taken: dt.datetime | None = None  # last calldate of the calls taken
    held_back: dt.datetime | None = None  # first calldate of the earliest call still settling
    taken_position: Any = None
    held_back_position: Any = None


class Scan:
    """Groups from the walk → calls → ledger rows."""

    def __init__(self, walk: Walk, axis: Axis, ledger: ScanLedger, report: RunReport,
                 builder: Builder, settled_before: dt.datetime,
                 keys_before: Callable[[list[str], Any, Any, str], set[str]],
                 progress: Callable[[Progress], None] | None = None,
                 enrich: Enrich | None = None):
        self.walk = walk
        self.enrich = enrich  # callers and incidents of new incoming calls
        self.axis = axis
        self.ledger = ledger
        self.report = report
        self.builder = builder
        self.settled_before = settled_before  # aware: calls that ended later are settling
        self.keys_before = keys_before
        self.progress = progress if axis.on_calldate else None
        self.reach = Reach()
        self.unbuilt: dict[str, str] = {}  # key → why its legs could not be built

    def execute(self) -> Reach:
        batch: list[tuple[Call, Group]] = []
        progress_at = time.monotonic() + PROGRESS_EVERY
        for group in self.walk.groups():
            if self.progress is not None:
                self.progress(Progress(group.first, self.walk.start, self.walk.stop,
                                       self.walk.stats.rows, self.report.new_calls))
            elif time.monotonic() >= progress_at:
                progress_at = time.monotonic() + PROGRESS_EVERY
                log.info("reading: at %s, %d rows so far, %d new calls",
                         group.first.isoformat(sep=" "), self.walk.stats.rows,
                         self.report.new_calls)
            call = self.build(group)
            if call.end > self.settled_before:
                # it ended moments ago: late legs (CDR batch mode) may still be on their way
                self.report.settling += 1
                self.reach.held_back = lowest(self.reach.held_back, call.first_calldate)
                self.reach.held_back_position = lowest(self.reach.held_back_position,
                                                       group.first_position)
                continue
            batch.append((call, group))
            if len(batch) >= KNOWN_BATCH:
                self.record(batch)
                batch = []
        self.record(batch)
        return self.reach

    def build(self, group: Group) -> Call:
        """The call of a group; a stand-in when its legs defeat the code (a bug), which the
        ledger keeps parked so that neither the batch nor the watermark waits on it."""
        try:
            return self.builder(group.legs)
        except Exception as exc:
            # the traceback for the report; the ledger decides whether this is news (take)
            log.debug("call %s: building it failed", group.key, exc_info=True)
            self.unbuilt[group.key] = (f"could not be built from its {len(group.legs)} cdr "
                                       f"rows: {type(exc).__name__}: {exc}")
            return stand_in(group.key, group.legs, self.builder.zone)

    def record(self, batch: list[tuple[Call, Group]]) -> None:
        if not batch:
            return
        known = self.ledger.known_legs(call.key for call, _ in batch)
        batch = self.tell_reused(batch, known)
        earlier = self.began_earlier([g for c, g in batch if c.key not in known])
        taken = []
        for call, group in batch:
            if call.key in earlier:
                log.debug("call %s began before the read range: not taken", call.key)
                continue
            self.reach.taken = highest(self.reach.taken, call.last_calldate)
            self.reach.taken_position = highest(self.reach.taken_position, group.last_position)
            if call.key not in known:
                taken.append(call)
            elif call.key in self.unbuilt:
                # known already (delivered, say): nothing is lost and nothing to do each run
                log.info("call %s: kept as recorded before (%s); its cdr rows as they are now "
                         "%s", call.key, known[call.key].stage, self.unbuilt[call.key])
            elif call.legs > known[call.key].legs:
                self.late_legs(call, known[call.key])
        self.take(taken)

    def tell_reused(self, batch: list[tuple[Call, Group]],
                    known: dict[str, Known]) -> list[tuple[Call, Group]]:
        """Calls whose key the ledger holds for a call too far away in time to be the same one
        (a PBX restarted with a reset counter, a cloned systemname) get a key of their own."""
        apart = dt.timedelta(seconds=self.builder.longest)
        told: list[tuple[Call, Group]] = []
        renamed: list[str] = []
        for call, group in batch:
            held = known.get(call.key)
            if held is not None and held.first_calldate is not None and \
                    abs(call.first_calldate - held.first_calldate) > apart:
                key = reused_key(call.key, call.first_calldate)
                renamed.append(key)
                if key not in known:
                    log.warning("call %s of %s: its key is held by a call of %s; delivered as "
                                "%s", call.key, call.first_calldate, held.first_calldate, key)
                call = dataclasses.replace(call, key=key)
            told.append((call, group))
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

    def began_earlier(self, groups: list[Group]) -> set[str]:
        """Keys with a leg before the walk's start (we saw only their later legs)."""
        start, lookback = self.walk.start, self.axis.lookback
        suspects = [g.key for g in groups if g.first_position < start + lookback]
        return self.keys_before(suspects, start - lookback, start, self.axis.column)

    def take(self, calls: list[Call]) -> None:
        """Record new calls in the ledger: incoming ones pending, the others skipped."""
        report = self.report
        for call in calls:
            for disposition in call.unknown_dispositions:
                log.warning("call %s: unknown disposition %r counted as unanswered", call.key,
                            disposition)
            for anomaly in call.anomalies:
                log.warning("call %s: %s", call.key, anomaly)
        for call in (c for c in calls if c.key in self.unbuilt):
            if self.ledger.park_unbuilt(call, self.unbuilt[call.key]):
                log.error("call %s: %s; parked as unbuilt (see poller status; please report "
                          "this, with the traceback -v shows)", call.key, self.unbuilt[call.key])
                report.failures += 1
                report.parked += 1
        calls = [c for c in calls if c.key not in self.unbuilt]
        incoming = [c for c in calls if c.incoming]
        changes = None
        if self.enrich is not None and incoming:
            incoming, changes = self.enrich(incoming, self.ledger)
        report.new_calls += self.ledger.add_many(
            [(c, Stage.SEEN, None) for c in incoming], changes)
        report.skipped += self.ledger.add_many(
            [(c, Stage.SKIPPED, "not incoming") for c in calls if not c.incoming])
