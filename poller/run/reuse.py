"""Pure: the calls one key names. A key (linkedid, else uniqueid) names one call until a PBX
writes it again for another: a restarted PBX with a reset counter and a clock set back, a
restored snapshot, a cloned systemname. Such a call is delivered under the key dated by its
first leg (`model.reused_key`), while later legs of the same call — a queue round, the Hangup
row after a failed Dial, a CDR batch posted late, the later rows of a call longer than the
lookback — stay with it and rebuild it, never split off.

What tells them apart:

- legs of one call chain: each starts while an earlier one is still up, or the second it ends
  (the Hangup row): two sets of legs whose time spans meet (within SLACK) are one call;
- while the caller waits and no row is written (a queue whose members are all busy, a long
  hold), the rows before and after the wait are still the caller's: the same caller number
  within the lookback (which must exceed the longest plausible call) is one call;
- anything else is another call: spans that do not meet with another caller's number, the
  same number beyond the lookback, and anything further apart than source.max_call_length.

The caller's number alone decides nothing: a transfer's later legs carry the agent's number
(a different number within a span is the same call), and a reused key says nothing about who
calls (the same number far apart is another call).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from poller.calls import caller, leg_times
from poller.model import Call, Leg, reused_key

# whole-second rounding, a row written a moment after the previous one ended, clocks of the
# hosts a call crossed: legs this close still chain
SLACK = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Span:
    """What the decision needs of a call, held or read: when its first leg began (as calldate
    holds it, and as an instant), when its last leg ended, and who called."""

    first_calldate: dt.datetime  # naive local
    start: dt.datetime  # aware
    end: dt.datetime  # aware
    number: str = ""

    @classmethod
    def of_call(cls, call: Call) -> Span:
        # a stand-in (a call that could not be built) ends where it starts: its last leg's
        # start says more
        last = call.last_calldate.replace(tzinfo=call.start.tzinfo)
        return cls(call.first_calldate, call.start, max(call.end, last), call.number)

    @classmethod
    def of_legs(cls, legs: Sequence[Leg], zone: ZoneInfo) -> Span:
        times = [leg_times(leg, zone) for leg in legs]
        first = min(range(len(legs)), key=lambda i: times[i][0])
        return cls(legs[first].calldate, times[first][0], max(end for _, end in times),
                   caller([legs[first]])[0])


@dataclass(frozen=True)
class Limits:
    """How far apart the legs of one call may lie."""

    longest: dt.timedelta  # source.max_call_length: no call lasts longer
    patience: dt.timedelta  # source.lookback: no call waits longer without a row


def same_call(one: Span, other: Span, limits: Limits) -> bool:
    """Whether two sets of legs under one key are legs of one call."""
    if one.first_calldate == other.first_calldate:
        return True  # the same first leg
    if abs(one.first_calldate - other.first_calldate) > limits.longest:
        return False
    if one.start <= other.end + SLACK and other.start <= one.end + SLACK:
        return True  # the spans meet: legs of one call chain
    gap = max(one.start - other.end, other.start - one.end)
    return _known(one.number) and one.number == other.number and gap <= limits.patience


def _known(number: str) -> bool:
    """A number that names a caller (not empty, not `anonymous`)."""
    return any(char.isdigit() for char in number)


def split(legs: Sequence[Leg], zone: ZoneInfo, limits: Limits) -> list[list[Leg]]:
    """The legs of one key as the calls they make, each in time order; one list for one call
    (the rule above). A leg joins the first call it is a leg of."""
    if len(legs) < 2:
        return [list(legs)]
    ordered = sorted(legs, key=lambda leg: leg_times(leg, zone)[0])
    if _one_chain(ordered, zone, limits):
        return [ordered]
    parts: list[tuple[Span, list[Leg]]] = []
    for leg in ordered:
        mine = Span.of_legs([leg], zone)
        for number, (span, part) in enumerate(parts):
            if same_call(mine, span, limits):
                part.append(leg)
                parts[number] = (Span(span.first_calldate, span.start,
                                      max(span.end, mine.end), span.number), part)
                break
        else:
            parts.append((mine, [leg]))
    return [part for _, part in parts]


def _one_chain(ordered: Sequence[Leg], zone: ZoneInfo, limits: Limits) -> bool:
    """Whether legs in time order are one call by the rule's first two tests alone: each
    begins within SLACK of the span before it and within `limits.longest` of the first. The
    common case (every key holds one call), decided without a Span per leg."""
    first = ordered[0].calldate
    reach = leg_times(ordered[0], zone)[1]
    for leg in ordered[1:]:
        begin, end = leg_times(leg, zone)
        if begin > reach + SLACK or abs(leg.calldate - first) > limits.longest:
            return False
        reach = max(reach, end)
    return True


def assign_keys(raw: str, reads: Sequence[Span], held: Mapping[str, Span],
                limits: Limits) -> list[str]:
    """The key each call read under `raw` is recorded under, in order: the key of the held
    call it is (plain or dated; the one with its very first leg first); else `raw` while
    neither the ledger nor an earlier read holds it; else `raw` dated by its first leg."""
    taken = dict(held)
    keys = []
    for read in reads:
        same = [key for key, span in taken.items() if same_call(read, span, limits)]
        same.sort(key=lambda key: taken[key].first_calldate != read.first_calldate)
        if same:
            key = same[0]
        else:
            key = raw if raw not in taken else reused_key(raw, read.first_calldate)
            taken[key] = read
        keys.append(key)
    return keys
