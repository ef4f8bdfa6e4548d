"""Telling another call with the same key from more legs of the same call (run/reuse.py):
pure table tests of the decision, the split of one key's legs, and the keys assigned."""

from __future__ import annotations

import datetime as dt

import pytest
from support import MSK, leg

from poller.model import Leg
from poller.run.reuse import Limits, Span, assign_keys, same_call, split

LIMITS = Limits(longest=dt.timedelta(hours=24), patience=dt.timedelta(hours=4))
T0 = dt.datetime(2026, 11, 26, 10, 0, 0)
CALLER, OTHER, AGENT = "+79161002301", "+79169998877", "201"


def span(first: str, seconds: int, number: str = CALLER) -> Span:
    """A call whose first leg begins `first` ([-]h:mm from T0) and whose legs end `seconds`
    later."""
    sign = -1 if first.startswith("-") else 1
    hours, minutes = (int(part) for part in first.lstrip("-").split(":"))
    start = T0 + sign * dt.timedelta(hours=hours, minutes=minutes)
    aware = start.replace(tzinfo=MSK)
    return Span(start, aware, aware + dt.timedelta(seconds=seconds), number)


HELD = span("0:00", 120)  # a two-minute call from CALLER at 10:00


@pytest.mark.parametrize(("read", "same", "why"), [
    # more legs of the held call
    (span("0:00", 120), True, "its very first leg: the call re-read"),
    (span("0:00", 600), True, "the same first leg and more: a late row, rebuilt"),
    (span("0:01", 30), True, "a leg within the call: a queue round, read without the first"),
    (span("0:02", 0), True, "the Hangup row, at the second the call ended"),
    (span("0:05", 0), True, "a row a few minutes after the end: within the slack"),
    (span("0:01", 30, AGENT), True, "another number within the span: a transfer's leg"),
    (span("-0:01", 600), True, "an earlier leg posted late, spanning the held ones"),
    (span("0:40", 30), True, "the same caller after a wait with no rows (a busy queue)"),
    (span("3:59", 30), True, "the same caller, the wait within the lookback"),
    # another call under the same key
    (span("23:30", 60, OTHER), False, "another caller 23.5 h later, within max_call_length"),
    (span("0:40", 30, OTHER), False, "another caller 40 minutes after the call ended"),
    (span("4:30", 30), False, "the same caller beyond the lookback: a call of its own"),
    (span("49:00", 60), False, "two days apart: beyond max_call_length whatever the number"),
    (span("-23:30", 60, OTHER), False, "an older call read after the held one (a backfill)"),
    (span("0:40", 30, "anonymous"), False, "no number to go by: the gap decides"),
])
def test_same_call_or_another_with_the_same_key(read, same, why):
    assert same_call(read, HELD, LIMITS) is same, why
    assert same_call(HELD, read, LIMITS) is same, f"{why} (the other way round)"


def test_a_long_call_is_never_apart_from_its_own_legs():
    """A 5-hour call (beyond the lookback) read in part: its later legs fall in its span."""
    long = span("0:00", 5 * 3600)
    assert same_call(span("4:30", 60, AGENT), long, LIMITS)


# P1-06's shape: a queue's member leg, unanswered
QUEUE_LEG = {"uniqueid": "1795675156.25", "linkedid": "1795675156.24", "sequence": 1,
             "dst": "270", "dcontext": "ext-queues",
             "channel": "Local/74951230004@from-pstn-0000000c;2",
             "dstchannel": "Local/221@from-queue-1;1", "lastapp": "Queue", "billsec": 0,
             "disposition": "NO ANSWER", "did": "", "cnum": "", "cnam": "", "recordingfile": ""}


def queued(at: str, duration: int, src: str = CALLER, **columns: str) -> Leg:
    """A leg of P1-06's queue call from `src`, `at` (h:mm:ss) after T0, lasting `duration`."""
    hours, minutes, seconds = (int(part) for part in at.split(":"))
    calldate = T0 + dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return leg(calldate, **{**QUEUE_LEG, "src": src, "clid": f'"" <{src}>',
                            "duration": duration, **columns})


@pytest.mark.parametrize(("legs", "parts", "why"), [
    ([queued("0:00:00", 9), queued("0:00:00", 3)], [2], "a queue round: one call"),
    ([queued("0:00:00", 12), queued("0:00:05", 8), queued("0:00:13", 0, dstchannel="")], [3],
     "a ring group and its Hangup row"),
    ([queued("0:00:00", 20), queued("0:12:00", 15)], [2],
     "two rounds twelve minutes apart from the same caller: a busy queue"),
    ([queued("0:00:00", 20), queued("0:12:00", 15, src=OTHER)], [1, 1],
     "another caller twelve minutes later: the key was used again"),
    ([queued("0:00:00", 20), queued("2:00:00", 15, src=OTHER), queued("2:00:10", 5, src=OTHER)],
     [1, 2], "another call of two legs two hours later"),
    ([queued("0:00:00", 7200), queued("1:30:00", 60, src=AGENT)], [2],
     "a transfer leg within a two-hour call"),
    ([queued("0:12:00", 15, src=OTHER), queued("0:00:00", 20)], [1, 1], "read in any order"),
])
def test_the_legs_of_one_key_are_split_into_the_calls_they_make(legs, parts, why):
    assert [len(part) for part in split(legs, MSK, LIMITS)] == parts, why


def test_assigned_keys_keep_the_held_call_and_date_the_others():
    raw = "1795675156.24"
    later = span("23:30", 60, OTHER)
    dated = f"{raw}@20261127T093000"
    # the held call re-read, and another call that reuses its key
    assert assign_keys(raw, [HELD, later], {raw: HELD}, LIMITS) == [raw, dated]
    # the same again once the other call is recorded under its dated key
    assert assign_keys(raw, [later], {raw: HELD, dated: later}, LIMITS) == [dated]
    # a later leg of the dated call, read without its first: still the dated call
    assert assign_keys(raw, [span("23:31", 10, OTHER)], {raw: HELD, dated: later},
                       LIMITS) == [dated]
    # two calls of one key, neither held yet: the first keeps the key
    assert assign_keys(raw, [HELD, later], {}, LIMITS) == [raw, dated]
    # the older call read by a backfill after the newer one holds the plain key
    assert assign_keys(raw, [HELD], {raw: later}, LIMITS) == [f"{raw}@20261126T100000"]
