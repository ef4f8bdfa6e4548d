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
from typing import TYPE_CHECKING, Literal, Protocol, cast
from zoneinfo import ZoneInfo

from poller.callers.incidents import CallFacts, IncidentRule, OpenIncident, apply, decide
from poller.config.hours import parse_hours
from poller.config.schema import CallersConfig, IncidentsConfig
from poller.ledger.incidents import IncidentChanges
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


class CallerLookup:
    """The run's view of the directory: read once a run (or, for a `:numbers` query, once per
    batch for the numbers not asked yet), never once per call."""

    def __init__(self, config: CallersConfig, state_dir: str, now: dt.datetime):
        self.config = config
        self.state_dir = state_dir
        self.now = now
        self.whole: Mapping[str, Caller] | None = None
        self.found: dict[str, Caller] = {}
        self.asked: set[str] = set()

    def find(self, numbers: Iterable[str | None]) -> dict[str, Caller]:
        """The callers among these E.164 numbers."""
        wanted = {n for n in numbers if n}
        if not self.config.enabled or not wanted:
            return {}
        from poller.callers import directory  # with the first new call only (see above)

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


@dataclass
class Enricher:
    """Identifies the callers of new incoming calls and decides their incidents."""

    callers: CallerLookup
    callers_config: CallersConfig
    rule: IncidentRule | None  # None: no incidents
    report: RunReport

    @classmethod
    def build(cls, callers: CallersConfig, incidents: IncidentsConfig, state_dir: str,
              zone: ZoneInfo, now: dt.datetime, report: RunReport) -> Enricher:
        rule = None
        if incidents.enabled:
            rule = IncidentRule(frozenset(incidents.statuses),
                                cast(Literal["known", "any"], incidents.callers),
                                parse_hours(incidents.hours), dt.timedelta(seconds=incidents.fold),
                                zone)
        return cls(CallerLookup(callers, state_dir, now), callers, rule, report)

    def __call__(self, calls: Sequence[Call], ledger: IncidentLedger
                 ) -> tuple[list[Call], IncidentChanges]:
        """The calls with their caller fields and incident, and the incidents they touched."""
        from poller.callers.numbers import normalise  # the phone-number library, as above

        region = self.callers_config.country
        numbered = [replace(call, number_e164=normalise(call.number, region)) for call in calls]
        found = self.callers.find(call.number_e164 for call in numbered)
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
                              call.number_e164 in found)
            decision = decide(rule, facts, open_now)
            open_now = apply(decision, facts, open_now)
            if decision.incident is not None:
                self._note(decision.action, decision.incident, call, open_now, changes)
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
