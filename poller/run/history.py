"""What a fresh ledger did not read: the cdr rows before its origin.

The first run starts at `source.start` (by default the lookback before now), so a new install
does not flood the target with years of calls. The rows before it are not lost, but nobody is
told they were passed over unless the run says so: the first run notes how many there are and
since when, `status` repeats it with the backfill that delivers them, and a backfill that
covers them clears the note.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

SETTING = "unread_history"


@dataclass(frozen=True)
class UnreadHistory:
    """cdr rows before `before` (the ledger's origin, naive local) that no run has read."""

    before: dt.datetime
    oldest: dt.datetime  # the oldest row's calldate (naive local)
    rows: int | None  # None: not counted again after a backfill shortened the span

    def to_setting(self) -> str:
        return json.dumps({"before": self.before.isoformat(), "oldest": self.oldest.isoformat(),
                           "rows": self.rows})

    @classmethod
    def from_setting(cls, text: str | None) -> UnreadHistory | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(dt.datetime.fromisoformat(data["before"]),
                       dt.datetime.fromisoformat(data["oldest"]), data.get("rows"))
        except (ValueError, KeyError, TypeError):
            return None  # a note only: a damaged one is dropped, never a failed run

    def backfill(self) -> str:
        """The command that delivers them: up to the minute after `before` (the origin has
        seconds; a backfill reaching into what the runs read delivers nothing twice)."""
        end = self.before
        if end.second or end.microsecond:
            end = end.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        until = end.strftime("%Y-%m-%d %H:%M" if end.time() else "%Y-%m-%d")
        return f"poller run --since {self.oldest:%Y-%m-%d} --until '{until}'"

    def said(self, shown: str) -> str:
        """`14 cdr rows from … to … were not read: …`; `shown` is `before` as the caller
        shows times."""
        what = "cdr rows" if self.rows is None else \
            f"{self.rows} cdr row{'' if self.rows == 1 else 's'}"
        return (f"{what} before {shown} (back to {self.oldest:%Y-%m-%d %H:%M}) were not read: "
                f"`{self.backfill()}` delivers them")


def after_backfill(history: UnreadHistory, since: dt.datetime,
                   until: dt.datetime | None) -> UnreadHistory | None:
    """The note once a backfill delivered [since, until): gone when the backfill covered it,
    shortened when it covered its end, unchanged otherwise."""
    reaches_end = until is None or until >= history.before
    if not reaches_end or since >= history.before:
        return history
    if since <= history.oldest:
        return None
    return UnreadHistory(since, history.oldest, None)
