"""The incident rule, as pure functions: working hours, which calls open an incident, folding
repeated calls from one number into one incident, and the incident's attribute templates.

The run owns all state: it hands `decide` the open incidents it keeps for the caller's number
and records the decision, so a retry or a backfill never decides twice.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SECONDS = 86400
_RANGE = re.compile(
    r"^(?:(?P<first>[A-Za-z]{3})(?:\s*-\s*(?P<last>[A-Za-z]{3}))?\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


# ---------------------------------------------------------------------------------------------
# working hours


@dataclass(frozen=True)
class HoursRange:
    """One range of `incidents.hours`: on `days` (0 = Monday), from `start` to `end` seconds
    after local midnight. `end` <= `start` is a range across midnight: it begins on one of
    `days` and ends the next morning ("Fri 22:00-02:00" covers Friday night into Saturday)."""

    days: frozenset[int]
    start: int
    end: int

    def covers(self, weekday: int, second: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= second < self.end
        # across midnight: the evening part on its own day, the small hours on the day after
        return ((weekday in self.days and second >= self.start)
                or ((weekday - 1) % 7 in self.days and second < self.end))


@dataclass(frozen=True)
class Hours:
    """Working hours; no ranges means always."""

    ranges: tuple[HoursRange, ...] = ()

    @property
    def always(self) -> bool:
        return not self.ranges


def parse_hours(text: str) -> Hours:
    """Read `incidents.hours`: "" (always) or ranges separated by ",", each
    `[Day[-Day]] HH:MM-HH:MM` ("Mon-Fri 09:00-18:00, Sat 10:00-14:00", "Fri 22:00-02:00",
    "08:00-20:00" = every day). Raises ValueError naming the part it cannot read."""
    ranges = tuple(_parse_range(part.strip()) for part in text.split(",") if part.strip())
    if text.strip() and not ranges:
        raise ValueError(f"no time range in {text!r}")
    return Hours(ranges)


def _parse_range(part: str) -> HoursRange:
    match = _RANGE.match(part)
    if not match:
        raise ValueError(f"cannot read {part!r} (write e.g. \"Mon-Fri 09:00-18:00\")")
    first, last = match.group("first"), match.group("last")
    days = _days(first, last or first) if first else frozenset(range(7))
    start = _seconds(match.group("start"), part, allow_24=False)
    end = _seconds(match.group("end"), part, allow_24=True)
    if start == end:
        raise ValueError(f"{part!r} is empty or a whole day: write \"00:00-24:00\" for all day")
    return HoursRange(days, start, end)


def _days(first: str, last: str) -> frozenset[int]:
    try:
        lo, hi = DAYS.index(first.lower()), DAYS.index(last.lower())
    except ValueError:
        raise ValueError(f"unknown day in {first}-{last} (use {', '.join(DAYS)})") from None
    # "Sat-Mon" wraps over the week's end
    return frozenset((lo + step) % 7 for step in range((hi - lo) % 7 + 1))


def _seconds(text: str, part: str, allow_24: bool) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if (hours, minutes) == (24, 0) and allow_24:
        return _DAY_SECONDS
    if hours > 23 or minutes > 59:
        raise ValueError(f"not a time of day: {text!r} in {part!r}")
    return hours * 3600 + minutes * 60


def within(hours: Hours, start: dt.datetime, zone: ZoneInfo) -> bool:
    """Whether a call that started at `start` (aware) falls in the working hours.

    Hours are wall-clock times in the source time zone, so "09:00" means 09:00 on the PBX's
    clock on every day of the year, daylight saving or not: a day of 23 or 25 hours only
    shortens or lengthens the night. Both instants of the repeated autumn hour read the same
    wall-clock time and so are treated alike.
    """
    if hours.always:
        return True
    if start.tzinfo is None:
        raise ValueError("start must be an aware datetime")
    local = start.astimezone(zone)
    second = local.hour * 3600 + local.minute * 60 + local.second
    return any(r.covers(local.weekday(), second) for r in hours.ranges)


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


@dataclass(frozen=True)
class CallFacts:
    """What the rule looks at in a call."""

    key: str
    start: dt.datetime  # aware
    status: str
    number_e164: str | None
    known: bool  # the caller was found in the directory


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
    """Whether the call would open an incident of its own (status, caller, working hours).

    "any" caller still needs a normalised number: an anonymous or unparsable caller cannot be
    called back, and folding needs a number to compare."""
    if call.status not in rule.statuses or call.number_e164 is None:
        return False
    if rule.callers == "known" and not call.known:
        return False
    return within(rule.hours, call.start, rule.zone)


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


def still_open(incident: OpenIncident, fold: dt.timedelta, now: dt.datetime) -> bool:
    """Whether a new call (starting at `now` or later) could still join: for pruning state."""
    return _utc(now) <= _utc(incident.last_start) + fold


# ---------------------------------------------------------------------------------------------
# attribute templates


class _SafeFormatter(string.Formatter):
    """str.format limited to plain `{field}`: no attribute or index access (`{key.__class__}`
    would reach into Python objects), no conversions and no format specs — a spec such as
    `{duration:d}` would fail per call at render time, on a value that may be null, instead of
    once at load time."""

    def parse(self, format_string: str) -> Any:
        for literal, name, spec, conversion in super().parse(format_string):
            if name is not None:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    raise ValueError(f"{{{name}}}: only plain field names, e.g. {{number}}")
                if spec or conversion:
                    raise ValueError(f"{{{name}}}: no conversion or format spec allowed")
            yield literal, name, spec, conversion

    def format_field(self, value: Any, format_spec: str) -> str:
        return "" if value is None else str(value)


_FORMATTER = _SafeFormatter()


def template_fields(template: str) -> frozenset[str]:
    """The field names a template uses; ValueError for a malformed or unsafe template."""
    try:
        return frozenset(name for _, name, _, _ in _FORMATTER.parse(template) if name is not None)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def check_templates(templates: Mapping[str, str], fields: Iterable[str]) -> list[str]:
    """Problems with `[incidents.attributes]` (attribute → template) for the config loader."""
    known = set(fields)
    problems = []
    for attribute, template in templates.items():
        try:
            used = template_fields(template)
        except ValueError as exc:
            problems.append(f"incidents.attributes.{attribute}: {exc}")
            continue
        for name in sorted(used - known):
            problems.append(f"incidents.attributes.{attribute}: unknown field {{{name}}}")
    return problems


def render(templates: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, str]:
    """The incident's attributes: each template filled from the call's fields, null as ""."""
    return {attribute: _FORMATTER.vformat(template, (), fields)
            for attribute, template in templates.items()}
