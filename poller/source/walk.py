"""Walking the cdr table in bounded windows and handing out complete leg groups.

Windows run over calldate, or over an insertion-ordered cursor column (`source.cursor`, e.g. an
auto-increment id); "position" below is the value of that column.


A call belongs to the window of its first leg, but its later legs (queue rounds, the Hangup row,
transfers) carry later calldates: a group is handed out only once the walk is `lookback` past
its first leg, or the walk reached the end. Memory holds the legs of one lookback span, whatever
the length of the range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from poller.model import Leg

MIN_WIDTH = dt.timedelta(seconds=1)
MAX_WIDTH = dt.timedelta(days=1)


@dataclass
class Group:
    """The legs of one call seen so far."""

    key: str
    first_position: Any = None
    last_position: Any = None
    legs: list[Leg] = field(default_factory=list)

    @property
    def first(self) -> dt.datetime:
        return self.legs[0].calldate


@dataclass
class WalkStats:
    rows: int = 0
    newest: dt.datetime | None = None  # the latest calldate read
    oldest: dt.datetime | None = None  # the earliest calldate read


@dataclass
class Walk:
    """One pass over [start, stop) with read-ahead to `horizon` (all naive local times)."""

    read_window: Callable[[dt.datetime, dt.datetime], list[Leg]]
    next_position: Callable[[Any], Any]  # the first position at or after a value, or None
    start: dt.datetime
    stop: dt.datetime  # calls whose first leg is at or after this belong to a later range
    horizon: dt.datetime  # the walk reads legs up to here (stop + lookback, capped at now)
    lookback: Any  # a timedelta on calldate, a count or a timedelta on a cursor column
    batch_size: int = 1000
    stats: WalkStats = field(default_factory=WalkStats)
    position: Callable[[Leg], Any] = field(default=lambda leg: leg.calldate)
    first_width: Any = None
    min_width: Any = MIN_WIDTH
    max_width: Any = MAX_WIDTH

    def groups(self) -> Iterator[Group]:
        """Complete groups in the order of their first leg; legs outside the range dropped."""
        open_groups: dict[str, Group] = {}
        width = self.first_width or min(self.lookback, dt.timedelta(hours=1))
        pos = self.start
        while pos < self.horizon:
            if pos >= self.stop and not open_groups:
                break  # only calls of a later range lie ahead
            hi = min(pos + width, self.horizon)
            legs = self.read_window(pos, hi)
            self.stats.rows += len(legs)
            for leg in legs:
                if self.stats.newest is None or leg.calldate > self.stats.newest:
                    self.stats.newest = leg.calldate
                if self.stats.oldest is None or leg.calldate < self.stats.oldest:
                    self.stats.oldest = leg.calldate
                position = self.position(leg)
                group = open_groups.get(leg.key)
                if group is None:
                    if position >= self.stop:
                        continue  # a call of the next range; its own run builds it
                    group = open_groups[leg.key] = Group(leg.key, position, position)
                group.legs.append(leg)
                group.last_position = max(group.last_position, position)
            pos = hi
            yield from self._flush(open_groups, pos - self.lookback)
            width = self._next_width(width, len(legs))
            if not legs and not open_groups:
                pos = self._skip_empty(pos)
        yield from self._flush(open_groups, None)

    def _flush(self, open_groups: dict[str, Group], before: dt.datetime | None) -> Iterator[Group]:
        ready = [g for g in open_groups.values() if before is None or g.first_position < before]
        for group in sorted(ready, key=lambda g: (g.first_position, g.key)):
            del open_groups[group.key]
            yield group

    def _next_width(self, width: dt.timedelta, rows: int) -> dt.timedelta:
        # keep one window near batch_size rows: its cost stays flat however large the table
        if rows > self.batch_size:
            return max(width // 2 if isinstance(width, int) else width / 2, self.min_width)
        if rows < self.batch_size // 4:
            return min(width * 2, self.max_width)
        return width

    def _skip_empty(self, pos: dt.datetime) -> dt.datetime:
        upcoming = self.next_position(pos)
        if upcoming is None or upcoming >= self.horizon:
            return self.horizon
        if isinstance(upcoming, dt.datetime):
            upcoming = upcoming.replace(microsecond=0)
        return max(pos, upcoming)
