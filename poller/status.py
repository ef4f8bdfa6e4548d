"""What `poller status` shows: watermark and lag, waiting and failed calls, the last run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from .clock import local_now
from .config import Config
from .errors import PollerError
from .ledger import Entry, Ledger, TargetDown
from .model import PENDING, UNBUILT, IncidentStage, Stage


@dataclass
class Status:
    watermark: dt.datetime | None
    newest_row: dt.datetime | None
    source_error: str | None
    counts: dict[Stage, int]
    pending: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    last_run: dict[str, Any] | None = None
    now_local: dt.datetime | None = None
    target_down: TargetDown | None = None
    incidents: dict[IncidentStage, int] = field(default_factory=dict)
    failed_incidents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return sum(self.counts.get(stage, 0) for stage in PENDING)

    @property
    def lag(self) -> dt.timedelta | None:
        """How far the watermark is behind the newest cdr row."""
        if self.watermark is None or self.newest_row is None:
            return None
        return max(self.newest_row - self.watermark, dt.timedelta(0))


def collect(config: Config) -> Status:
    ledger = Ledger.open_existing(config.state.database_url)
    counts: dict[Stage, int] = {}
    watermark, pending, failed, last, down = None, [], [], None, None
    incidents: dict[IncidentStage, int] = {}
    failed_incidents: list[dict[str, Any]] = []
    if ledger is not None:
        try:
            down = ledger.target_down()
            counts = ledger.counts()
            watermark = ledger.watermark()
            pending = ledger.entries(PENDING)
            failed = ledger.entries([Stage.FAILED])
            last = ledger.last_run()
            incidents = ledger.incident_counts()
            failed_incidents = ledger.failed_incidents()
        finally:
            ledger.close()
    newest, error = None, None
    try:
        from .source import CdrSource

        source = CdrSource(config.source)
        try:
            newest = source.newest_calldate()
        finally:
            source.close()
    except PollerError as exc:
        error = str(exc)
    return Status(watermark, newest, error, counts, pending, failed, last,
                  local_now(ZoneInfo(config.source.timezone)), down, incidents,
                  failed_incidents)


STATUS_SCHEMA = 1


def to_json(status: Status) -> dict[str, Any]:
    """`poller status --json`: the documented, stable form (see the README)."""
    def when(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    def entry(e: Entry) -> dict[str, Any]:
        return {
            "key": e.key, "stage": e.stage, "start": e.call.start.isoformat(),
            "number": e.call.number, "status": e.call.status, "attempts": e.attempts,
            "last_error": e.last_error, "reason": _why_waiting(e) if e.stage in PENDING else None,
            "next_attempt_at": e.next_attempt_at.isoformat() + "Z" if e.next_attempt_at else None,
            "object_id": e.object_id,
        }

    lag = status.lag
    return {
        "schema": STATUS_SCHEMA,
        "now": when(status.now_local),
        "watermark": when(status.watermark),
        "newest_row": when(status.newest_row),
        "lag_seconds": int(lag.total_seconds()) if lag is not None else None,
        "source_error": status.source_error,
        "calls": {stage: status.counts.get(stage, 0) for stage in Stage},
        "target": ({"up": False, "down_since": status.target_down.since.isoformat() + "Z",
                    "error": status.target_down.error} if status.target_down
                   else {"up": True, "down_since": None, "error": None}),
        "waiting": [entry(e) for e in status.pending],
        "failed": [entry(e) for e in status.failed],
        "incidents": {stage: status.incidents.get(stage, 0) for stage in IncidentStage},
        "failed_incidents": [{"key": i["incident_key"], "attempts": i["attempts"],
                              "last_error": i["last_error"]} for i in status.failed_incidents],
        "last_run": status.last_run,
    }


def render(status: Status) -> str:
    lines = []
    mark = status.watermark.isoformat(sep=" ") if status.watermark else "none yet"
    lines.append(f"watermark:   {mark}")
    if status.source_error:
        lines.append(f"cdr table:   unreachable: {status.source_error}")
    elif status.newest_row is not None:
        lag = status.lag
        lines.append(f"newest row:  {status.newest_row.isoformat(sep=' ')}"
                     + (f" (watermark {_duration(lag)} behind)" if lag is not None else ""))
    else:
        lines.append("newest row:  the cdr table is empty")
    counts = ", ".join(f"{stage} {n}" for stage, n in sorted(status.counts.items())) or "none"
    lines.append(f"calls:       {counts}")
    lines.extend(_callers_and_incidents(status))
    if status.target_down is not None:
        down = status.target_down
        lines.append(f"target:      down since {down.since.isoformat(sep=' ', timespec='seconds')} "
                     f"UTC ({down.error}), {status.waiting} calls waiting; no call is charged "
                     "for it, the next run tries again")
    settling = (status.last_run or {}).get("settling", 0)
    if settling:
        lines.append(f"settling:    {settling} calls ended less than source.settle before the "
                     "last run; the next run takes them")
    if status.pending:
        lines.append("waiting:")
        for entry in status.pending:
            lines.append(f"  {entry.key:<24} {entry.stage:<8} {_why_waiting(entry)}")
    if status.failed:
        lines.append("failed (requeue: `poller retry KEY ...` or `poller retry --failed`):")
        for entry in status.failed:
            line = f"  {entry.key:<24} {entry.attempts} attempts: {entry.last_error}"
            if entry.call.status == UNBUILT:  # retry cannot help: its rows must be read again
                since = entry.call.first_calldate.date().isoformat()
                line += f" (once fixed: poller run --since {since})"
            lines.append(line)
    if status.last_run:
        run = status.last_run
        delivered = sum(run.get("delivered", {}).values())
        lines.append(f"last run:    {run.get('finished_at', '?')}: {delivered} delivered, "
                     f"{run.get('failures', 0)} failed, {run.get('rows', 0)} rows read, "
                     f"{run.get('seconds', 0)}s")
        for problem in run.get("unavailable", []):
            lines.append(f"  stopped by: {problem}")
    else:
        lines.append("last run:    never")
    return "\n".join(lines)


def _callers_and_incidents(status: Status) -> list[str]:
    lines = []
    callers = (status.last_run or {}).get("callers") or {}
    if callers.get("matched") or callers.get("unmatched"):
        lines.append(f"callers:     {callers['matched']} matched, {callers['unmatched']} "
                     "unmatched in the last run")
    if status.incidents:
        counts = ", ".join(f"{stage} {n}" for stage, n in sorted(status.incidents.items()))
        lines.append(f"incidents:   {counts}")
    for incident in status.failed_incidents:
        lines.append(f"  incident {incident['incident_key']:<15} parked after "
                     f"{incident['attempts']} attempts: {incident['last_error']} "
                     "(requeue: `poller retry KEY`)")
    return lines


def _why_waiting(entry: Entry) -> str:
    if entry.last_error:
        when = entry.next_attempt_at.isoformat(sep=" ", timespec="seconds") if \
            entry.next_attempt_at else "next run"
        return f"retry at {when} UTC after: {entry.last_error}"
    if entry.note:
        return entry.note
    return "due at the next run"


def _duration(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "?"
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
