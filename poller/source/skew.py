"""A newest cdr row in the future: almost always a wrong `source.timezone`, else a clock.

With the default `timezone = "UTC"` on a PBX that writes local time, every row looks hours
ahead; a run reads only what has ended `settle` before now, so it delivers nothing, and says
nothing, until the hours have passed. `check`, `run` (once a day) and `status` say it instead.
"""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

# beyond NTP drift and a batch-mode delay: a real row is never this far ahead
TOLERANCE = dt.timedelta(minutes=5)
_HOUR = dt.timedelta(hours=1)
# the zones in use lie between UTC-12:00 and UTC+14:00 (Kiritimati): beyond, it is a clock
_FARTHEST = dt.timedelta(hours=14)


def rows_ahead(newest: dt.datetime | None, zone: ZoneInfo, now: dt.datetime) -> str | None:
    """What to tell when `newest` (naive, as calldate holds it) is ahead of `now` (aware) read
    in `zone`; None when it is not."""
    if newest is None:
        return None
    local = now.astimezone(zone)
    ahead = newest - local.replace(tzinfo=None)
    if ahead <= TOLERANCE:
        return None
    offset = local.utcoffset() or dt.timedelta(0)
    # the newest row began some time before now, so the PBX's offset is the span rounded up
    # (to the hour: the zones of half and quarter hours are too few to guess at)
    likely = offset + _HOUR * math.ceil(ahead / _HOUR)
    said = (f"the newest cdr row ({newest:%Y-%m-%d %H:%M:%S}) is {_span(ahead)} ahead of now "
            f"in source.timezone {zone.key} ({local:%Y-%m-%d %H:%M:%S}): ")
    if abs(likely) > _FARTHEST:
        return (said + f"no time zone is that far ahead of {zone.key}: check the PBX's clock "
                "(and the poller host's); until then no call is taken")
    return (said + f"the PBX probably writes calldate in UTC{_offset(likely)} — set "
            "source.timezone to its zone (`timedatectl` on the PBX shows it), or check both "
            "clocks; until then no call is taken")


def _span(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes >= 48 * 60:
        return f"{minutes // 1440}d{minutes // 60 % 24:02d}h"
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _offset(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
