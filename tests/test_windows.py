"""Walking the cdr table in calldate windows: complete calls, in order, in bounded memory."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field

from support import leg, local

from poller.model import Leg
from poller.source.walk import Group, Walk

T0 = local("2026-11-26 10:00")
LOOKBACK = dt.timedelta(hours=4)


def of_call(key: str, calldate: dt.datetime, sequence: int = 1) -> Leg:
    """A leg of call `key` (its linkedid and uniqueid) at `calldate`."""
    return leg(calldate, uniqueid=key, linkedid=key, sequence=sequence,
               dstchannel=f"PJSIP/2{sequence:02d}-00000002")


@dataclass
class FakeTable:
    """The cdr table in memory, answering the two queries Walk makes, and counting them."""

    legs: list[Leg]
    windows: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)
    rows_read: int = 0

    def __post_init__(self) -> None:
        self.legs = sorted(self.legs, key=lambda x: (x.calldate, x.uniqueid, x.sequence))
        self._dates = [x.calldate for x in self.legs]

    def read_window(self, lo: dt.datetime, hi: dt.datetime) -> list[Leg]:
        self.windows.append((lo, hi))
        found = self.legs[bisect.bisect_left(self._dates, lo):bisect.bisect_left(self._dates, hi)]
        self.rows_read += len(found)
        return found

    def next_calldate(self, pos: dt.datetime) -> dt.datetime | None:
        i = bisect.bisect_left(self._dates, pos)
        return self._dates[i] if i < len(self._dates) else None


def walk(table: FakeTable, start: dt.datetime, stop: dt.datetime,
         horizon: dt.datetime | None = None, lookback: dt.timedelta = LOOKBACK,
         batch_size: int = 1000) -> Walk:
    return Walk(read_window=table.read_window, next_position=table.next_calldate, start=start,
                stop=stop, horizon=horizon or stop + lookback, lookback=lookback,
                batch_size=batch_size)


def keys(groups: list[Group]) -> list[str]:
    return [g.key for g in groups]


def test_call_straddling_a_window_boundary_is_one_group():
    """A call at 10:59:50 whose second leg (queue round) is at 11:00:05 is not cut in two."""
    a1 = of_call("A", T0.replace(minute=59, second=50), 1)
    a2 = of_call("A", T0 + dt.timedelta(hours=1, seconds=5), 2)
    table = FakeTable([a1, a2])
    groups = list(walk(table, T0, T0 + dt.timedelta(hours=2)).groups())
    # the walk really did read the two legs in different windows
    assert not any(lo <= a1.calldate and a2.calldate < hi for lo, hi in table.windows)
    assert keys(groups) == ["A"]
    assert groups[0].legs == [a1, a2]


def test_legs_tied_on_calldate_are_all_kept():
    """A ring group writes 3 legs with the same calldate second: all three reach the call."""
    same = T0 + dt.timedelta(minutes=5)
    legs = [of_call("RG", same, seq) for seq in (1, 2, 3)] + [of_call("B", same, 4)]
    groups = list(walk(FakeTable(legs), T0, T0 + dt.timedelta(hours=1)).groups())
    by_key = {g.key: g for g in groups}
    assert len(by_key["RG"].legs) == 3
    assert len(by_key["B"].legs) == 1


def test_ties_kept_even_with_a_tiny_batch_size():
    """More tied legs than batch_size: the window shrinks to a second but drops none."""
    same = T0 + dt.timedelta(minutes=5)
    legs = [of_call(f"C{i}", same, i) for i in range(50)]
    groups = list(walk(FakeTable(legs), T0, T0 + dt.timedelta(hours=1), batch_size=4).groups())
    assert sorted(keys(groups)) == sorted(f"C{i}" for i in range(50))


def test_groups_come_out_in_order_of_their_first_leg():
    """A 40-minute call started before a 1-minute call comes out first, with all its legs."""
    legs = [
        of_call("long", T0, 1), of_call("long", T0 + dt.timedelta(minutes=30), 2),
        of_call("short", T0 + dt.timedelta(minutes=5), 1),
        of_call("later", T0 + dt.timedelta(hours=3), 1),
        of_call("much-later", T0 + dt.timedelta(hours=9), 1),
        of_call("late-leg", T0 + dt.timedelta(hours=8, minutes=59), 1),
        of_call("late-leg", T0 + dt.timedelta(hours=10), 2),
    ]
    groups = list(walk(FakeTable(legs), T0, T0 + dt.timedelta(hours=12)).groups())
    assert keys(groups) == ["long", "short", "later", "late-leg", "much-later"]
    assert [len(g.legs) for g in groups] == [2, 1, 1, 2, 1]
    firsts = [g.first for g in groups]
    assert firsts == sorted(firsts)


def test_stop_ends_the_range_but_calls_before_it_keep_later_legs():
    """A call starting just before `stop` keeps legs after it; a call starting at `stop` waits."""
    stop = T0 + dt.timedelta(hours=1)
    before = [of_call("before", stop - dt.timedelta(seconds=10), 1),
              of_call("before", stop + dt.timedelta(minutes=20), 2)]
    at_stop = of_call("at-stop", stop, 1)
    after = of_call("after", stop + dt.timedelta(minutes=1), 1)
    beyond = of_call("before", stop + LOOKBACK + dt.timedelta(minutes=1), 3)  # after the horizon
    table = FakeTable([*before, at_stop, after, beyond])
    groups = list(walk(table, T0, stop).groups())
    assert keys(groups) == ["before"]
    assert groups[0].legs == before
    assert all(hi <= stop + LOOKBACK for _, hi in table.windows)


def test_walk_does_not_read_into_the_next_range_when_no_call_is_open():
    """With nothing open past `stop`, the walk ends there: the next range's calls are not read."""
    stop = T0 + dt.timedelta(hours=6)
    nxt = of_call("next", stop + dt.timedelta(hours=2), 1)
    table = FakeTable([of_call("A", T0, 1), nxt])
    groups = list(walk(table, T0, stop).groups())
    assert keys(groups) == ["A"]
    assert not any(lo <= nxt.calldate < hi for lo, hi in table.windows)
    assert table.rows_read == 1


def _busy_days(count: int = 5000) -> list[Leg]:
    """`count` calls one minute apart (about 3.5 days), each with a second leg 90 s later."""
    legs = []
    for i in range(count):
        start = T0 + dt.timedelta(minutes=i)
        legs += [of_call(f"K{i:05d}", start, 1),
                 of_call(f"K{i:05d}", start + dt.timedelta(seconds=90), 2)]
    return legs


def test_open_groups_stay_bounded_by_the_lookback():
    """Days of calls with a small batch_size: memory holds about 4 h of calls, not the range."""
    legs = _busy_days()
    table = FakeTable(legs)
    stop = legs[-1].calldate + dt.timedelta(minutes=1)
    w = walk(table, T0, stop, batch_size=100)
    seen: set[str] = set()
    yielded = 0
    most_open = 0
    real_read = table.read_window

    def measuring_read(lo: dt.datetime, hi: dt.datetime) -> list[Leg]:
        nonlocal most_open
        most_open = max(most_open, len(seen) - yielded)  # read but not yet handed out
        found = real_read(lo, hi)
        seen.update(x.key for x in found)
        return found

    w.read_window = measuring_read
    for group in w.groups():
        yielded += 1
        assert len(group.legs) == 2, group.key
    assert yielded == 5000
    calls_per_lookback = int(LOOKBACK / dt.timedelta(minutes=1))  # 240
    assert most_open <= calls_per_lookback + 1
    assert table.rows_read == len(legs)  # each row read once
    assert w.stats.rows == len(legs)


def test_groups_are_handed_out_before_the_range_is_read():
    """The first call is yielded long before the walk asks for the last window."""
    legs = _busy_days()
    table = FakeTable(legs)
    stop = legs[-1].calldate + dt.timedelta(minutes=1)
    groups = walk(table, T0, stop, batch_size=100).groups()
    first = next(groups)
    assert first.key == "K00000"
    assert max(hi for _, hi in table.windows) < T0 + dt.timedelta(days=1)
    assert len(list(groups)) == 4999


def test_empty_stretches_are_skipped():
    """A year-long backfill holding two calls takes a handful of queries, not 8,760 hours."""
    start = local("2026-01-01")
    stop = local("2027-01-01")
    march = of_call("march", local("2026-03-01 10:00"), 1)
    sept = [of_call("sept", local("2026-09-01 10:00"), 1),
            of_call("sept", local("2026-09-01 10:02"), 2)]
    table = FakeTable([march, *sept])
    groups = list(walk(table, start, stop).groups())
    assert keys(groups) == ["march", "sept"]
    assert groups[1].legs == sept
    assert len(table.windows) < 50


def test_empty_range_yields_nothing_cheaply():
    """No rows at all in the range: no groups, and only a couple of queries."""
    table = FakeTable([of_call("old", local("2025-01-01"), 1)])
    groups = list(walk(table, local("2026-01-01"), local("2026-02-01")).groups())
    assert groups == []
    assert len(table.windows) <= 2
