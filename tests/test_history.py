"""The note of what a fresh ledger's first run left unread, and the backfill that clears it."""

from __future__ import annotations

import datetime as dt

from poller.clock import parse_local
from poller.run.history import UnreadHistory, after_backfill

BEFORE = dt.datetime(2026, 12, 4, 23, 17, 2)  # a first run's origin: the lookback before now
NOTE = UnreadHistory(BEFORE, dt.datetime(2026, 12, 4, 7, 23, 49), 34)


def test_the_suggested_backfill_clears_the_note_though_the_origin_has_seconds():
    """`--until '2026-12-04 23:17'` ended two seconds before the origin: the note stayed."""
    command = NOTE.backfill()
    assert command == "poller run --since 2026-12-04 --until '2026-12-04 23:18'"
    since, until = command.split("--since ")[1].split(" --until ")
    assert after_backfill(NOTE, parse_local(since), parse_local(until.strip("'"))) is None


def test_a_backfill_of_the_end_shortens_the_note_and_one_elsewhere_leaves_it():
    shorter = after_backfill(NOTE, dt.datetime(2026, 12, 4, 12, 0), None)
    assert shorter == UnreadHistory(dt.datetime(2026, 12, 4, 12, 0), NOTE.oldest, None)
    assert after_backfill(NOTE, dt.datetime(2026, 12, 4, 8), dt.datetime(2026, 12, 4, 9)) == NOTE
    assert UnreadHistory.from_setting(NOTE.to_setting()) == NOTE
    assert UnreadHistory.from_setting("{damaged") is None
