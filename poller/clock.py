"""Local PBX time ↔ aware instants, including the repeated hour when clocks fall back."""

from __future__ import annotations

import datetime as dt
import functools
import re
from zoneinfo import ZoneInfo

_EPOCH = re.compile(r"(?:^|-)(\d{9,11})\.\d+$")
# calldate is truncated to the second and may lag the channel's creation slightly
_SLACK = 2.0


def uniqueid_epoch(uniqueid: str) -> float | None:
    """The UTC epoch that starts a uniqueid (`1795672100.1`, `pbx1-1795672100.1`), if any."""
    match = _EPOCH.search(uniqueid.strip())
    return float(match.group(1)) if match else None


def to_aware(local: dt.datetime, zone: ZoneInfo, uniqueid: str = "") -> dt.datetime:
    """Attach the source time zone to a naive calldate.

    In the hour that repeats when clocks fall back, the uniqueid's epoch (when the channel was
    created) tells which of the two instants it was: a leg never starts before its channel.
    """
    if local.tzinfo is None:  # aware values equal by instant would share a cache entry
        return _naive_to_aware(local, zone, uniqueid)
    return _to_aware(local, zone, uniqueid)


def _to_aware(local: dt.datetime, zone: ZoneInfo, uniqueid: str) -> dt.datetime:
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    epoch = uniqueid_epoch(uniqueid)
    if epoch is None:
        return first
    candidates = [c for c in (first, second) if c.timestamp() >= epoch - _SLACK]
    return min(candidates, key=lambda c: c.timestamp()) if candidates else second


# building a call asks it of each leg several times
_naive_to_aware = functools.lru_cache(maxsize=1024)(_to_aware)


def parse_local(text: str) -> dt.datetime:
    """A date or date-time as written on the command line, naive (in the source time zone)."""
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M",
                "%Y-%m-%dT%H:%M:%S"):
        try:
            moment = dt.datetime.strptime(text, fmt)  # noqa: DTZ007 - local by contract
        except ValueError:
            continue
        if moment.year < 1970:  # reads reach a lookback before it: year 1 would overflow
            raise ValueError(f"{text!r} is before 1970: no cdr row is older than the Unix "
                             "epoch its uniqueid counts from")
        return moment
    raise ValueError(f"not a date or date-time: {text!r} (use YYYY-MM-DD[ HH:MM[:SS]])")


def earliest_local(since: dt.datetime, until: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The earliest wall-clock reading the zone shows between two instants (naive).

    Wall-clock time runs backwards once a year: after the autumn change, rows of the repeated
    hour carry local times earlier than those written just before it.
    """
    lowest = since.astimezone(zone).replace(tzinfo=None)
    step = dt.timedelta(minutes=15)  # every zone changes its offset on a quarter hour (UTC)
    moment = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    while moment <= until:
        if moment > since:
            lowest = min(lowest, moment.astimezone(zone).replace(tzinfo=None))
        moment += step
    return lowest
