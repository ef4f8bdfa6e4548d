"""What a run is asked to do, and how far its read has come."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunOptions:
    """What one `poller run` was asked to do."""

    since: dt.datetime | None = None  # naive, source time zone; a backfill when set
    until: dt.datetime | None = None
    dry_run: bool = False
    force: bool = False  # backfill even where the ledger has forgotten delivered calls
    limit: int | None = None
    now: dt.datetime | None = None  # aware; tests pin the clock
    metrics_file: str | None = None  # overrides [metrics] file
    reconcile: bool = False  # `poller reconcile`: only Master.csv's calls the table lacks
    # asked between calls: a follow-mode service stops after the call in hand
    should_stop: Callable[[], bool] = field(default=lambda: False, compare=False)
    # told how far a long read has come (a progress bar on a terminal)
    progress: Callable[[Progress], None] | None = field(default=None, compare=False)
    # follow mode says an outage itself (when it starts, hourly, when it ends), not each poll
    follow: bool = False

    @property
    def outage_level(self) -> int:
        """The level of a line saying a service is down: follow mode keeps them for -v."""
        return logging.DEBUG if self.follow else logging.ERROR

    @property
    def backfill(self) -> bool:
        return self.since is not None or self.until is not None


@dataclass(frozen=True)
class Progress:
    """How far the read of one run has come."""

    position: dt.datetime  # the first calldate of the call just read (naive local)
    start: dt.datetime
    stop: dt.datetime
    rows: int
    new_calls: int

    @property
    def fraction(self) -> float:
        span = (self.stop - self.start).total_seconds()
        done = (self.position - self.start).total_seconds()
        return min(max(done / span, 0.0), 1.0) if span > 0 else 1.0
