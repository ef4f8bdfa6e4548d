"""What a run did, for the summary line, `status`, metrics and the exit code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from poller.errors import ExitCode
from poller.model import Call


@dataclass
class RunReport:
    """What a run did, for the summary line, `status` and the exit code."""

    rows: int = 0
    new_calls: int = 0
    skipped: int = 0
    delivered: Counter[str] = field(default_factory=Counter)
    recordings: int = 0
    recording_bytes: int = 0
    failures: int = 0
    parked: int = 0
    waiting: int = 0
    held: int = 0  # pending calls this run did not try: not due yet, or kept back by an outage
    settling: int = 0  # calls that ended less than source.settle ago: taken next run
    unavailable: list[str] = field(default_factory=list)
    target_down_since: str | None = None  # ISO UTC, while the target does not answer
    planned: list[Call] = field(default_factory=list)
    seconds: float = 0.0
    watermark: str | None = None
    newest_row: str | None = None  # the latest calldate this run read
    source_read: bool = False  # the cdr table was read (even if nothing new was there)
    finished_at: str = ""
    config_error: str | None = None  # what stopped the run with exit 2, never a clean run
    error: str | None = None  # an unexpected error that stopped the run (a bug, a damaged ledger)
    callers_matched: int = 0  # new incoming calls whose caller the directory knows
    callers_unmatched: int = 0
    incidents_opened: int = 0  # decided by this run's new calls
    incidents_joined: int = 0
    incidents_created: int = 0  # made in the target
    reconciled: int = 0  # new calls taken from Master.csv: the cdr table lacks them

    @property
    def exit_code(self) -> ExitCode:
        if self.config_error:
            return ExitCode.CONFIG
        return ExitCode.PARTIAL if self.failures or self.unavailable or self.error \
            else ExitCode.OK

    @property
    def delivered_count(self) -> int:
        return sum(self.delivered.values())

    def add(self, other: RunReport) -> None:
        """Count another batch of the same run in (a backfill's days): figures add up, the
        latest marks and times stand."""
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if isinstance(mine, bool):
                setattr(self, item.name, mine or theirs)
            elif isinstance(mine, int | float | Counter):
                setattr(self, item.name, mine + theirs)
            elif isinstance(mine, list):
                mine.extend(x for x in theirs if x not in mine)
            elif theirs not in (None, ""):
                setattr(self, item.name, theirs)

    def plus(self, other: RunReport) -> RunReport:
        """A new report counting both."""
        both = RunReport()
        both.add(self)
        both.add(other)
        return both

    def summary(self) -> str:
        statuses = ", ".join(f"{name} {count}" for name, count in sorted(self.delivered.items()))
        callers = ""
        if self.callers_matched or self.callers_unmatched:
            callers = (f"callers {self.callers_matched} matched, {self.callers_unmatched} "
                       "unmatched, ")
        incidents = ""
        if self.incidents_opened or self.incidents_joined or self.incidents_created:
            incidents = (f"incidents {self.incidents_opened} opened, {self.incidents_joined} "
                         f"calls joined, {self.incidents_created} made, ")
        reconciled = (f" ({self.reconciled} from Master.csv, missing in the cdr table)"
                      if self.reconciled else "")
        return (f"delivered {plural(sum(self.delivered.values()), 'call')} "
                f"({statuses or 'none'}), {plural(self.recordings, 'recording')}, "
                f"{self.new_calls} new{reconciled}, {self.skipped} skipped, "
                f"{callers}{incidents}"
                f"{self.waiting_phrase()}, "
                f"{self.parked} failed, "
                f"{self.rows} rows read, {self.seconds:.2f}s")

    def brief(self) -> str:
        """A short line for one day of a backfill: what it found and did."""
        failed = f", {self.failures} failed" if self.failures else ""
        waiting = f", {self.waiting} waiting" if self.waiting else ""
        return (f"{plural(self.new_calls, 'new call')}, {self.delivered_count} delivered"
                f"{failed}{waiting} ({plural(self.rows, 'row')} read)")

    def waiting_phrase(self) -> str:
        return waiting_phrase(self.waiting, self.failures - self.parked, self.held,
                              bool(self.unavailable))

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "new_calls": self.new_calls, "skipped": self.skipped,
            "delivered": dict(self.delivered), "recordings": self.recordings,
            "recording_bytes": self.recording_bytes,
            "failures": self.failures, "parked": self.parked, "waiting": self.waiting,
            "held": self.held, "settling": self.settling,
            "unavailable": self.unavailable, "target_down_since": self.target_down_since,
            "seconds": round(self.seconds, 3),
            "watermark": self.watermark, "newest_row": self.newest_row,
            "finished_at": self.finished_at,
            "callers": {"matched": self.callers_matched, "unmatched": self.callers_unmatched},
            "incidents": {"opened": self.incidents_opened, "joined": self.incidents_joined,
                          "created": self.incidents_created},
            "reconciled": self.reconciled,
        }


def waiting_phrase(deferred: int, retrying: int, held: int = 0, outage: bool = False) -> str:
    """`3 waiting (1 to retry after a failed attempt)`: the calls that go out at a later run,
    as `status` lists them under `waiting:`. A call that failed an attempt and backs off is
    waiting, not failed: only a parked call is (`status`'s `failed:`); so is a call the run
    did not try (`held`: not due yet, or kept back by an `outage`)."""
    untried = "held back by the outage" if outage else "not due yet"
    why = ([f"{retrying} to retry after a failed attempt"] if retrying else []) + \
        ([f"{held} {untried}"] if held else [])
    after = f" ({', '.join(why)})" if why else ""
    return f"{deferred + retrying + held} waiting{after}"


def plural(count: int, noun: str) -> str:
    """`1 call`, `2 calls`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
