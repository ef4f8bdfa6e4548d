"""Local PBX time to instants: uniqueid epochs, the repeated fall-back hour, command-line dates."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from support import local

from poller.clock import parse_local, to_aware, uniqueid_epoch

BERLIN = ZoneInfo("Europe/Berlin")
MSK = ZoneInfo("Europe/Moscow")



def epoch(*utc: int) -> int:
    return int(dt.datetime(*utc, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(("uniqueid", "expected"), [
    ("1795675107.1", 1795675107.0),
    ("pbx1-1795675107.1", 1795675107.0),  # asterisk.conf systemname = pbx1
    ("pbx-east-1795675107.129", 1795675107.0),  # a systemname with a dash in it
    (" 1795675107.1 ", 1795675107.0),
    ("garbage", None),
    ("", None),
    ("1795675107", None),  # no counter: not a uniqueid
])
def test_uniqueid_epoch(uniqueid, expected):
    """The UTC epoch that starts a uniqueid, with or without a systemname prefix."""
    assert uniqueid_epoch(uniqueid) == expected


def test_sample_uniqueid_matches_its_calldate():
    """README: calldate 2026-11-26 09:38:27 MSK ↔ uniqueid 1795675107.1 (06:38:27 UTC)."""
    aware = to_aware(local("2026-11-26 09:38:27"), MSK, "1795675107.1")
    assert aware.timestamp() == uniqueid_epoch("1795675107.1")
    assert aware.isoformat() == "2026-11-26T09:38:27+03:00"


# Europe/Berlin falls back on 2026-10-25 at 03:00 CEST → 02:00 CET: 02:30 happens twice,
# first at 00:30 UTC (CEST, +02:00), then at 01:30 UTC (CET, +01:00).
REPEATED = local("2026-10-25 02:30")


def test_repeated_hour_first_pass_chosen_by_uniqueid():
    """A call at 02:30 whose channel was created at 00:30 UTC is the first 02:30 (CEST)."""
    aware = to_aware(REPEATED, BERLIN, f"{epoch(2026, 10, 25, 0, 30)}.5")
    assert aware.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)
    assert aware.utcoffset() == dt.timedelta(hours=2)


def test_repeated_hour_second_pass_chosen_by_uniqueid():
    """A call at 02:30 whose channel was created at 01:30 UTC is the second 02:30 (CET)."""
    aware = to_aware(REPEATED, BERLIN, f"pbx1-{epoch(2026, 10, 25, 1, 30)}.9")
    assert aware.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)
    assert aware.utcoffset() == dt.timedelta(hours=1)


def test_repeated_hour_leg_after_fall_back_of_a_channel_created_before():
    """A channel created at 02:59:50 CEST whose leg starts at 02:00:10 local: that is CET."""
    aware = to_aware(local("2026-10-25 02:00:10"), BERLIN,
                     f"{epoch(2026, 10, 25, 0, 59, 50)}.3")
    assert aware.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 1, 0, 10, tzinfo=dt.UTC)


def test_repeated_hour_calldate_a_second_before_uniqueid_still_first_pass():
    """calldate is truncated to the second and may lag the channel: 1 s before is still CEST."""
    aware = to_aware(REPEATED, BERLIN, f"{epoch(2026, 10, 25, 0, 30, 1)}.5")
    assert aware.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)


def test_repeated_hour_without_uniqueid_takes_the_first_instant():
    """No epoch to tell (garbage uniqueid): the earlier of the two instants is assumed."""
    aware = to_aware(REPEATED, BERLIN, "garbage")
    assert aware.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("local", "offset"), [
    (local("2026-07-01 12:00"), 2),  # summer, CEST
    (local("2026-10-25 01:59:59"), 2),  # just before the repeated hour
    (local("2026-10-25 03:00"), 1),  # just after it, CET
    (local("2026-12-01 09:00"), 1),  # winter
])
def test_outside_the_repeated_hour_the_zone_offset_is_attached(local, offset):
    """Away from the fall-back hour the uniqueid does not matter: the zone's offset is used."""
    for uniqueid in ("", "garbage", f"{epoch(2026, 1, 1)}.1", f"{epoch(2027, 1, 1)}.1"):
        aware = to_aware(local, BERLIN, uniqueid)
        assert aware.replace(tzinfo=None) == local
        assert aware.utcoffset() == dt.timedelta(hours=offset), uniqueid


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-01", local("2026-01-01")),
    ("2026-01-01 10:00", local("2026-01-01 10:00")),
    ("2026-01-01T10:00:05", local("2026-01-01 10:00:05")),
    (" 2026-11-26 09:38:27 ", local("2026-11-26 09:38:27")),
])
def test_parse_local_accepts_dates_and_times(text, expected):
    """--since/--until and source.start accept a date or a date-time, naive local time."""
    parsed = parse_local(text)
    assert parsed == expected
    assert parsed.tzinfo is None


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "26.11.2026"])
def test_parse_local_rejects_other_text(text):
    """Anything else is refused with a message showing the accepted form."""
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_local(text)


def test_aware_values_for_one_instant_keep_their_own_wall_clock():
    """to_aware is cached for naive calldates; aware values that are equal as instants but read
    differently on the wall clock must not share an answer."""
    utc_noon = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    same_instant = dt.datetime(2026, 7, 1, 15, 0, tzinfo=MSK)
    assert utc_noon == same_instant
    assert to_aware(utc_noon, BERLIN).hour == 12
    assert to_aware(same_instant, BERLIN).hour == 15
    # and the cached naive path answers as often as it is asked
    for _ in range(3):
        assert to_aware(local("2026-07-01 15:00:00"), BERLIN) == \
            dt.datetime(2026, 7, 1, 15, 0, tzinfo=BERLIN)
