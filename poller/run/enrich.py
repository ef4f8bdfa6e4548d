"""What the scan adds to a call it records for the first time: who called, and its incident.

Both are decided once, when the call enters the ledger, and kept with it: a retry sends the
same values, and a backfill decides only the calls the ledger has not seen, so it applies the
rules as the live run did and never makes an incident twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from poller.callers.incidents import (
    CallFacts,
    IncidentRule,
    OpenIncident,
    apply,
    decide,
    passed_over,
    rule_of,
)
from poller.config.schema import CallersConfig, IncidentsConfig
from poller.ledger.incidents import IncidentChanges
from poller.ledger.settings import DirectoryOutage
from poller.model import Call
from poller.run.report import RunReport

if TYPE_CHECKING:
    from poller.callers.caller import Caller

# The directory and the phone-number library (some 25 ms of imports) are imported where a new
# call needs them: the minutely run that finds nothing new never does.

log = logging.getLogger("poller")


class IncidentLedger(Protocol):
    def open_incidents(self, numbers: Iterable[str], earliest: dt.datetime,
                       latest: dt.datetime) -> list[OpenIncident]: ...


class EnrichLedger(IncidentLedger, Protocol):
    """What enriching needs of the ledger: the incidents, and what it knows of the
    directory (read once before; unreadable since when)."""

    def directory_loaded(self) -> dt.datetime | None: ...

    def set_directory_loaded(self, when: dt.datetime) -> None: ...

    def directory_outage(self) -> DirectoryOutage | None: ...

    def set_directory_outage(self, outage: DirectoryOutage) -> None: ...

    def clear_directory_outage(self) -> None: ...


class CallerLookup:
    """The run's view of the directory: read once a run (or, for a `:numbers` query, once per
    batch for the numbers not asked yet), never once per call.

    A directory that cannot be read, with no usable copy, stops the first run (a
    configuration error). Once a directory was read, it is an outage instead: the calls go on
    without caller fields, the outage is warned about once and tried again a refresh later,
    and each run that needed it says so (exit 1)."""

    def __init__(self, config: CallersConfig, state_dir: str, now: dt.datetime,
                 report: RunReport | None = None):
        self.config = config
        self.state_dir = state_dir
        self.now = now
        self.report = report or RunReport()
        self.whole: Mapping[str, Caller] | None = None
        self.found: dict[str, Caller] = {}
        self.asked: set[str] = set()
        self.unreadable: str | None = None  # this run found the directory out
        self.checked = False  # the ledger's outage was looked at this run
        self.noted = False  # a good read was noted in the ledger this run

    def find(self, numbers: Iterable[str | None], ledger: EnrichLedger | None = None
             ) -> dict[str, Caller]:
        """The callers among these E.164 numbers."""
        wanted = {n for n in numbers if n}
        if not self.config.enabled or not wanted:
            return {}
        from poller.callers import directory  # with the first new call only (see above)

        if self.unreadable is not None or (ledger is not None and self._waiting(ledger)):
            return {}
        try:
            found = self._read(wanted)
        except directory.DirectoryUnreadable as exc:
            if ledger is None or not self._read_before(ledger):
                raise  # the first run: the configuration names something that is not there
            self._outage(ledger, str(exc))
            return {}
        if ledger is not None:
            self._readable(ledger)
        return found

    def _read(self, wanted: set[str]) -> dict[str, Caller]:
        from poller.callers import directory  # as above

        if not directory.wants_numbers(self.config):
            if self.whole is None:
                cache = directory.Cache(Path(self.state_dir) / directory.CACHE_NAME,
                                        directory.fingerprint(self.config))
                self.whole = directory.load(self.config, cache, self.now)[0]
            whole = self.whole
            return {n: whole[n] for n in wanted if n in whole}
        new = wanted - self.asked
        if new:
            self.found.update(directory.lookup(self.config, self.state_dir, new, self.now).matches)
            self.asked |= new
        return {n: self.found[n] for n in wanted if n in self.found}

    def _read_before(self, ledger: EnrichLedger) -> bool:
        """Whether a directory was read before: the ledger says so, or a copy (even one
        damaged, or made for other settings) is left in state.dir."""
        from poller.callers import directory  # as above

        return ledger.directory_loaded() is not None or \
            (Path(self.state_dir) / directory.CACHE_NAME).exists()

    def _waiting(self, ledger: EnrichLedger) -> bool:
        """During an outage, the directory is tried again a refresh after the last try."""
        if self.checked:
            return False
        self.checked = True
        outage = ledger.directory_outage()
        if outage is None or (self.now - outage.tried).total_seconds() >= self.config.refresh:
            return False
        self._still_out(outage.error)
        return True

    def _outage(self, ledger: EnrichLedger, error: str) -> None:
        outage = ledger.directory_outage()
        if outage is None:
            log.warning("%s; no usable copy is left in state.dir: new calls go without caller "
                        "fields until it reads again (tried again every %gs)", error,
                        self.config.refresh)
            outage = DirectoryOutage(self.now, self.now, error)
        else:
            log.debug("%s (since %s)", error, outage.since.isoformat(timespec="seconds"))
        ledger.set_directory_outage(DirectoryOutage(outage.since, self.now, error))
        self._still_out(error)

    def _still_out(self, error: str) -> None:
        self.unreadable = error
        said = f"{error}: new calls went without caller fields"
        if said not in self.report.unavailable:
            self.report.unavailable.append(said)

    def _readable(self, ledger: EnrichLedger) -> None:
        """A read that worked: the first is remembered, an outage is over (once a run)."""
        if self.noted:
            return
        self.noted = True
        outage = ledger.directory_outage()
        if outage is not None:
            log.info("the caller directory reads again (it could not since %s): new calls get "
                     "their caller fields", outage.since.isoformat(timespec="seconds"))
            ledger.clear_directory_outage()
        if ledger.directory_loaded() is None:
            ledger.set_directory_loaded(self.now)


@dataclass
class Enricher:
    """Identifies the callers of new incoming calls and decides their incidents."""

    callers: CallerLookup
    callers_config: CallersConfig
    rule: IncidentRule | None  # None: no incidents
    report: RunReport
    # why a missed call opened no incident: INFO in a live run, DEBUG in a backfill (a
    # line per call of a year would bury the backfill's own lines)
    passed_over_level: int = logging.INFO

    @classmethod
    def build(cls, callers: CallersConfig, incidents: IncidentsConfig, state_dir: str,
              zone: ZoneInfo, now: dt.datetime, report: RunReport,
              quiet: bool = False) -> Enricher:
        return cls(CallerLookup(callers, state_dir, now, report), callers,
                   rule_of(incidents, zone, callers.country), report,
                   logging.DEBUG if quiet else logging.INFO)

    def __call__(self, calls: Sequence[Call], ledger: EnrichLedger
                 ) -> tuple[list[Call], IncidentChanges]:
        """The calls with their caller fields and incident, and the incidents they touched."""
        from poller.callers.numbers import normalise  # the phone-number library, as above

        region = self.callers_config.country
        numbered = [replace(call, number_e164=normalise(call.number, region)) for call in calls]
        found = self.callers.find((call.number_e164 for call in numbered), ledger)
        identified = [self._identify(call, found.get(call.number_e164 or "")) for call in numbered]
        if self.callers_config.enabled:
            matched = sum(1 for call in identified if call.number_e164 in found)
            self.report.callers_matched += matched
            self.report.callers_unmatched += len(identified) - matched
        if self.rule is None or not identified:
            return identified, IncidentChanges()
        return self._decide(identified, found, ledger)

    def _identify(self, call: Call, caller: Caller | None) -> Call:
        if not self.callers_config.enabled:
            return call
        from poller.callers.caller import caller_fields  # with the directory, as above

        fields = caller_fields(caller, self.callers_config.fields)
        return replace(call, caller=tuple(fields.items()))

    def _decide(self, calls: list[Call], found: Mapping[str, Caller],
                ledger: IncidentLedger) -> tuple[list[Call], IncidentChanges]:
        rule = self.rule
        assert rule is not None
        # in start order, as the calls happened; the ledger's incidents of these numbers that
        # a call of this batch may join
        ordered = sorted(calls, key=lambda call: (call.start.astimezone(dt.UTC), call.key))
        numbers = {call.number_e164 for call in ordered if call.number_e164}
        earliest = ordered[0].start - rule.fold
        latest = ordered[-1].start + rule.fold
        open_now: tuple[OpenIncident, ...] = tuple(
            ledger.open_incidents(numbers, earliest, latest)) if numbers else ()
        changes = IncidentChanges()
        decided: dict[str, Call] = {}
        for call in ordered:
            facts = CallFacts(call.key, call.start, str(call.status), call.number_e164,
                              call.number_e164 in found, call.number)
            decision = decide(rule, facts, open_now)
            open_now = apply(decision, facts, open_now)
            if decision.incident is not None:
                self._note(decision.action, decision.incident, call, open_now, changes)
            elif facts.status in rule.statuses:
                log.log(self.passed_over_level, "call %s from %s (%s): %s", call.key,
                        call.number or "unknown", facts.status, passed_over(rule, facts))
            decided[call.key] = replace(call, incident=decision.incident)
        return [decided[call.key] for call in calls], changes

    def _note(self, action: str, key: str, call: Call, open_now: Sequence[OpenIncident],
              changes: IncidentChanges) -> None:
        changes.incidents[key] = next(i for i in open_now if i.key == key)
        if action == "open":
            changes.opened[key] = call.first_calldate
            self.report.incidents_opened += 1
            log.info("call %s from %s opens an incident", call.key, call.number_e164)
        else:
            changes.joined.setdefault(key, []).append(call.key)
            self.report.incidents_joined += 1
            log.info("call %s from %s joins incident %s", call.key, call.number_e164, key)
