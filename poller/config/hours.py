"""`incidents.hours`, a value of the configuration: working-hour ranges in the PBX's wall
clock, read once at load and asked per call."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SECONDS = 86400
_RANGE = re.compile(
    r"^(?:(?P<first>[A-Za-z]{3})(?:\s*-\s*(?P<last>[A-Za-z]{3}))?\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


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
