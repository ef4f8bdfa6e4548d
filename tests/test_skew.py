"""What a newest cdr row ahead of now is said to mean (source/skew.py): a zone's offset when
one fits, a clock when none can."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from poller.source.skew import rows_ahead

UTC = ZoneInfo("UTC")
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("ahead", "said", "not_said"), [
    (dt.timedelta(minutes=4), None, None),  # within the tolerance: nothing to say
    (dt.timedelta(hours=2, minutes=50), "UTC+03:00", None),  # Moscow read as UTC
    (dt.timedelta(hours=13, minutes=40), "UTC+14:00", None),  # Kiritimati: the farthest zone
    (dt.timedelta(hours=14, minutes=30), "no time zone is", "UTC+15"),
    (dt.timedelta(days=2), "no time zone is", "UTC+48"),  # a clock two days off
])
def test_the_zone_hint_names_only_offsets_that_exist(ahead, said, not_said):
    newest = (NOW + ahead).replace(tzinfo=None)
    text = rows_ahead(newest, UTC, NOW)
    if said is None:
        assert text is None
        return
    assert text is not None and said in text, text
    if not_said:
        assert not_said not in text, text
        assert "check the PBX's clock" in text, text


def test_a_zone_already_ahead_of_utc_adds_its_own_offset():
    moscow = ZoneInfo("Europe/Moscow")
    # a PBX in UTC+12 read as Moscow: 9 hours ahead of Moscow's clock
    newest = (NOW.astimezone(moscow) + dt.timedelta(hours=8, minutes=50)).replace(tzinfo=None)
    assert "UTC+12:00" in (rows_ahead(newest, moscow, NOW) or "")
    # 12 hours ahead of Moscow would be UTC+15: no zone
    newest = (NOW.astimezone(moscow) + dt.timedelta(hours=11, minutes=50)).replace(tzinfo=None)
    assert "UTC+15" not in (rows_ahead(newest, moscow, NOW) or "")
