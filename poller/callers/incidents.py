"""The incident rule, as pure functions: working hours, which calls open an incident, folding
repeated calls from one number into one incident, and the incident's attribute templates.

The run owns all state: it hands `decide` the open incidents it keeps for the caller's number
and records the decision, so a retry or a backfill never decides twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast
from zoneinfo import ZoneInfo

from poller.config.hours import Hours, parse_hours, within
from poller.config.schema import IncidentsConfig

# ---------------------------------------------------------------------------------------------
# which calls open an incident, and folding


@dataclass(frozen=True)
class IncidentRule:
    """`[incidents]` as the rule needs it (built from the config by the run)."""

    statuses: frozenset[str]
    callers: Literal["known", "any"]
    hours: Hours
    fold: dt.timedelta
    zone: ZoneInfo
    hours_text: str = ""  # `incidents.hours` as written, for messages
    region: str = ""  # callers.country: without it a national number is no number to call


def rule_of(incidents: IncidentsConfig, zone: ZoneInfo, region: str = ""
            ) -> IncidentRule | None:
    """The rule `[incidents]` sets, or None when no call opens an incident."""
    if not incidents.enabled:
        return None
    return IncidentRule(frozenset(incidents.statuses),
                        cast(Literal["known", "any"], incidents.callers),
                        parse_hours(incidents.hours), dt.timedelta(seconds=incidents.fold),
                        zone, incidents.hours, region)


@dataclass(frozen=True)
class CallFacts:
    """What the rule looks at in a call."""

    key: str
    start: dt.datetime  # aware
    status: str
    number_e164: str | None
    known: bool  # the caller was found in the directory
    number: str | None = None  # as the PBX wrote it


@dataclass(frozen=True)
class OpenIncident:
    """An incident calls of `number` may still join: the state the ledger keeps per number.

    `first_start`/`last_start` are the starts of the earliest and latest calls in it; once
    `last_start + fold` has passed (by call start time) nothing can join it any more and the
    ledger may forget it for folding."""

    key: str  # the opening call's key: the incident's identity
    number: str  # E.164
    first_start: dt.datetime
    last_start: dt.datetime


@dataclass(frozen=True)
class Decision:
    """What to do with one call: open a new incident (its key = the call's key), join the
    incident `incident`, or nothing (`incident` None)."""

    action: Literal["open", "join", "none"]
    incident: str | None = None  # the call field `incident`: the key of its incident


NONE = Decision("none")


def selects(rule: IncidentRule, call: CallFacts) -> bool:
    """Whether the call would open an incident of its own (status, caller, working hours)."""
    return call.status in rule.statuses and passed_over(rule, call) is None


def passed_over(rule: IncidentRule, call: CallFacts) -> str | None:
    """Why a call of one of the rule's statuses opens no incident, or None when it does not
    fail the rule: said to the administrator, who otherwise cannot tell a rule from a bug.

    "any" caller still needs a normalised number: an anonymous or unparsable caller cannot be
    called back, and folding needs a number to compare."""
    if call.number_e164 is None:
        if call.number and not rule.region and any(c.isdigit() for c in call.number):
            return ("no incident: its number has no country code and callers.country is not "
                    "set (e.g. \"RU\"), so it cannot be read as a number to call back")
        return "no incident: the caller's number is hidden or not a phone number"
    if rule.callers == "known" and not call.known:
        return ("no incident: the caller is not in the directory (incidents.callers = "
                "\"known\")")
    if not within(rule.hours, call.start, rule.zone):
        local = call.start.astimezone(rule.zone)
        return (f"no incident: it came at {local:%a %H:%M}, outside incidents.hours "
                f"({rule.hours_text}, {rule.zone.key})")
    return None


def describe(rule: IncidentRule) -> str:
    """The rule in one line, for `check`."""
    statuses = " or ".join(sorted(rule.statuses))
    who = "a known caller" if rule.callers == "known" else "any caller with a number"
    when = (f"within {rule.hours_text} ({rule.zone.key})" if not rule.hours.always
            else "at any hour")
    fold = (f"; later calls of the number within {_span(rule.fold)} join it"
            if rule.fold > dt.timedelta(0) else "")
    numbers = ("" if rule.region else "; numbers count only with their country code "
               "(+…): set callers.country to read national ones")
    return f"a call {statuses} from {who}, {when}, opens an incident{fold}{numbers}"


def _span(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def decide(rule: IncidentRule, call: CallFacts, open_incidents: Iterable[OpenIncident]
           ) -> Decision:
    """Open, join or nothing, for a call the run has not decided on before.

    Only a call the rule selects folds: it joins an open incident of the same number when it
    starts within `fold` after the incident's latest call (or before its first one: the run
    may meet calls out of start order, e.g. in a backfill or after a retry). Of several, the
    one with the nearest latest call wins. `fold` 0 never folds.
    """
    if not selects(rule, call):
        return NONE
    joinable = [i for i in open_incidents
                if i.number == call.number_e164 and _in_fold(i, call.start, rule.fold)]
    if not joinable:
        return Decision("open", call.key)
    nearest = min(joinable, key=lambda i: (abs(_utc(call.start) - _utc(i.last_start)), i.key))
    return Decision("join", nearest.key)


def _in_fold(incident: OpenIncident, start: dt.datetime, fold: dt.timedelta) -> bool:
    if fold <= dt.timedelta(0):
        return False
    return _utc(incident.first_start) - fold <= _utc(start) <= _utc(incident.last_start) + fold


def _utc(moment: dt.datetime) -> dt.datetime:
    # Python compares and subtracts two datetimes sharing one tzinfo by their wall clocks,
    # ignoring `fold`: 02:10 after 02:50 on the autumn change would look 40 minutes earlier
    return moment.astimezone(dt.UTC)


def apply(decision: Decision, call: CallFacts, open_incidents: Sequence[OpenIncident]
          ) -> tuple[OpenIncident, ...]:
    """The open incidents after a decision: a new one for "open", a widened one for "join"."""
    if decision.action == "open" and call.number_e164 is not None:
        return (*open_incidents, OpenIncident(call.key, call.number_e164, call.start, call.start))
    if decision.action == "join":
        return tuple(
            OpenIncident(i.key, i.number, min(i.first_start, call.start, key=_utc),
                         max(i.last_start, call.start, key=_utc))
            if i.key == decision.incident else i
            for i in open_incidents)
    return tuple(open_incidents)


