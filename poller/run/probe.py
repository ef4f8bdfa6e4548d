"""Follow mode's quiet polls: between full polls, a question on kept connections.

A full poll (lock, ledger, a read of the lookback, delivery, upkeep, the last-run record) cost
some 7 times a warm query. Between full polls — one at least every FULL_EVERY seconds, as cron
would run — a poll asks only whether there could be anything to do: a cdr row that was not
there at the last full poll (their count and newest calldate since the lookback's start), a
call taken but not past the watermark (one settling), or a call or incident due in the ledger.
When nothing is, the poll ends there. Anything the question cannot answer (a table that is not
read by calldate, an error) makes the poll a full one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from poller.config.schema import Config
from poller.ledger.store import Ledger
from poller.source.table import CdrSource

log = logging.getLogger("poller")

FULL_EVERY = 60.0  # seconds: the longest a quiet poll may stand in for a full one


@dataclass(frozen=True)
class Seen:
    """What a full poll left: the rows since `since` and the newest of them."""

    since: dt.datetime  # naive, the source's time zone
    rows: int
    newest: dt.datetime | None
    at: float  # the clock's seconds


def nothing_to_do(seen: Seen | None, rows: int, newest: dt.datetime | None,
                  watermark: dt.datetime | None, due: bool, now: float) -> bool:
    """Whether a poll can end without a full one (pure): no row since the last full poll,
    every row's call taken, nothing due, and a full poll not yet owed."""
    if seen is None or now - seen.at >= FULL_EVERY or due:
        return False
    if (rows, newest) != (seen.rows, seen.newest) or newest is None:
        return False
    return watermark is not None and watermark >= newest


class Probe:
    """The kept connections and what the last full poll saw."""

    def __init__(self, config: Config):
        self.config = config
        self.zone = ZoneInfo(config.source.timezone)
        self.source: CdrSource | None = None
        self.ledger: Ledger | None = None
        self.seen: Seen | None = None

    @staticmethod
    def applies(config: Config) -> bool:
        """Only a table read by calldate says by a count that no row came."""
        return config.source.kind == "table" and config.source.cursor == "calldate"

    def quiet(self, now: float) -> bool:
        """True when this poll can end here."""
        if self.seen is None or now - self.seen.at >= FULL_EVERY:
            return False
        try:
            rows, newest = self._source().rows_since(self.seen.since)
            ledger = self._ledger()
            utc = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            due = bool(ledger.due(utc, limit=1)) or (
                self.config.incidents.enabled and bool(ledger.due_incidents(utc, limit=1)))
            return nothing_to_do(self.seen, rows, newest, ledger.watermark(), due, now)
        except Exception as exc:  # noqa: BLE001 - the full poll says what is wrong
            log.debug("follow: a full poll, the quiet one could not ask: %s", exc)
            self.close()
            return False

    def before_full(self, now: float) -> None:
        """Before a full poll: what it will have seen (asked first, so that a row written
        during the poll makes the next one full too). The ledger is opened again after it."""
        if self.ledger is not None:
            self.ledger.close()  # a state.db replaced meanwhile is the next poll's
            self.ledger = None
        since = dt.datetime.now(self.zone).replace(tzinfo=None, microsecond=0) - \
            dt.timedelta(seconds=float(self.config.source.lookback))
        try:
            rows, newest = self._source().rows_since(since)
        except Exception as exc:  # noqa: BLE001 - the full poll says what is wrong
            log.debug("follow: the rows since %s could not be counted: %s", since, exc)
            self.close()
            self.seen = None
            return
        self.seen = Seen(since, rows, newest, now)

    def _source(self) -> CdrSource:
        if self.source is None:
            self.source = CdrSource(self.config.source)
        return self.source

    def _ledger(self) -> Ledger:
        if self.ledger is None:
            self.ledger = Ledger(self.config.state.database_url, create=False,
                                 source=self.config.source.name)
        return self.ledger

    def close(self) -> None:
        for kept in (self.source, self.ledger):
            if kept is not None:
                try:
                    kept.close()
                except Exception as exc:  # noqa: BLE001 - nothing to do but forget it
                    log.debug("follow: closing a kept connection: %s", exc)
        self.source = self.ledger = None
