"""What `poller status` shows: watermark and lag, waiting and failed calls, the last run.

Every time is shown in the source time zone with its offset, beside a "now" in that zone;
every value that came from the PBX is shown with its control characters escaped. The ledger is
opened read-only, so a monitoring user that may only read it can look.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from poller.config.schema import Config
from poller.errors import PollerError
from poller.ledger.health import error_text
from poller.ledger.schema import Entry
from poller.ledger.settings import TargetOutage
from poller.ledger.store import Ledger
from poller.logs import escape_controls
from poller.model import PENDING, UNBUILT, IncidentStage, Stage
from poller.run.history import UnreadHistory
from poller.run.ledgerlock import held_in_ledger, is_server
from poller.run.lock import held_by
from poller.run.report import waiting_phrase
from poller.source.kinds import open_source
from poller.source.skew import rows_ahead

SHOWN = 50  # calls listed per section; the JSON and the text say when a list is cut
T = TypeVar("T")


@dataclass
class Overview:
    """What `poller status` shows, as read at one moment."""

    watermark: dt.datetime | None
    newest_row: dt.datetime | None
    source_error: str | None
    counts: dict[Stage, int]
    pending: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    last_run: dict[str, Any] | None = None
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))  # aware
    target_down: TargetOutage | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    run_pid: int | None = None  # the run working now (it holds the lock), if any
    run_host: str | None = None  # ... and its host, when the lock is the server ledger's
    clock_warning: str | None = None
    incidents: dict[IncidentStage, int] = field(default_factory=dict)
    failed_incidents: list[dict[str, Any]] = field(default_factory=list)
    reconciled_total: int = 0  # calls taken from Master.csv: the cdr table lacked them
    ledger_error: str | None = None  # the ledger, or a part of it, could not be read
    source: str = ""  # source.name: the PBX whose part of the ledger this is
    unread: UnreadHistory | None = None  # rows before the origin no run has read
    pages: str | None = None  # the archive's index.html, with the archive target

    @property
    def failing(self) -> bool:
        """Whether what status read says the runs fail: an unreadable ledger, or a last run
        that stopped on an unexpected error (status then exits 1, never 0)."""
        return self.ledger_error is not None or bool((self.last_run or {}).get("error"))

    @property
    def waiting(self) -> int:
        return sum(self.counts.get(stage, 0) for stage in PENDING)

    @property
    def lag(self) -> dt.timedelta | None:
        """How far the watermark is behind the newest cdr row."""
        if self.watermark is None or self.newest_row is None:
            return None
        return max(self.newest_row - self.watermark, dt.timedelta(0))

    @property
    def oldest_waiting(self) -> Entry | None:
        """The undelivered call that started first (the list is ordered by start)."""
        return self.pending[0] if self.pending else None

    def local(self, naive_local: dt.datetime | None) -> dt.datetime | None:
        return naive_local.replace(tzinfo=self.zone) if naive_local is not None else None

    def from_utc(self, naive_utc: dt.datetime | None) -> dt.datetime | None:
        if naive_utc is None:
            return None
        return naive_utc.replace(tzinfo=dt.UTC).astimezone(self.zone)


def collect(config: Config, now: dt.datetime | None = None, own_source: bool = True) -> Overview:
    """What status shows; `own_source` False: the ledger's part of another source (another
    PBX's config names its cdr table, so none is read)."""
    zone = ZoneInfo(config.source.timezone)
    status = Overview(None, None, None, {}, now=now or dt.datetime.now(dt.UTC), zone=zone,
                      run_pid=held_by(config.state.dir) if own_source else None,
                      source=config.source.name)
    if config.target.kind == "archive":
        status.pages = str(Path(config.target.archive.dir) / "index.html")
    if is_server(config.state.database_url):  # the lock that counts is the ledger's
        holder = held_in_ledger(config.state.database_url, config.source.name)
        if holder is not None:
            status.run_pid, status.run_host = holder.pid, holder.host
    ledger = _read(status, lambda: Ledger.open_existing(config.state.database_url,
                                                        read_only=True,
                                                        source=config.source.name), None)
    if ledger is not None:
        try:
            # each part on its own: a damaged one is said, the others still shown
            status.target_down = _read(status, ledger.target_down, None)
            status.counts = _read(status, ledger.counts, {})
            status.watermark = _read(status, ledger.watermark, None)
            status.pending = _read(status, lambda: ledger.entries(PENDING, limit=SHOWN), [])
            status.failed = _read(status, lambda: ledger.entries([Stage.FAILED], limit=SHOWN),
                                  [])
            status.last_run = _read(status, ledger.last_run, None)
            status.incidents = _read(status, ledger.incident_counts, {})
            status.failed_incidents = _read(
                status, lambda: ledger.failed_incidents(limit=SHOWN), [])
            status.reconciled_total = _read(status, ledger.reconciled_total, 0)
            status.unread = UnreadHistory.from_setting(_read(status, ledger.unread_history,
                                                             None))
        finally:
            ledger.close()
    if not own_source:
        status.source_error = "another PBX's (its own config's status shows its cdr table)"
        return status
    try:
        source = open_source(config.source)
        try:
            status.newest_row = source.newest_calldate()
        finally:
            source.close()
    except PollerError as exc:
        status.source_error = str(exc)
    status.clock_warning = rows_ahead(status.newest_row, zone, status.now)
    return status


def _read(status: Overview, read: Callable[[], T], default: T) -> T:
    """One read of the ledger; whatever stops it (a file that is no database, a table gone,
    a value that does not parse) is kept as the ledger's error, never raised: status must
    always answer, most of all about a ledger in trouble."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - reported, with the parts that still read
        if status.ledger_error is None:
            status.ledger_error = error_text(exc)
        return default


STATUS_SCHEMA = 1


def to_json(status: Overview) -> dict[str, Any]:
    """`poller status --json`: the documented, stable form (see the README). Every time is
    ISO 8601 in the source time zone with its offset: one format a script parses once."""
    def when(value: dt.datetime | None) -> str | None:
        return _iso(status.local(value))

    def utc(value: dt.datetime | None) -> str | None:
        return _iso(status.from_utc(value))

    def entry(e: Entry) -> dict[str, Any]:
        return {
            "key": e.key, "stage": e.stage, "start": _iso(e.call.start.astimezone(status.zone)),
            "number": e.call.number, "status": e.call.status, "attempts": e.attempts,
            "last_error": e.last_error,
            "reason": _why_waiting(e, status) if e.stage in PENDING else None,
            "next_attempt_at": utc(e.next_attempt_at), "object_id": e.object_id,
        }

    lag, oldest = status.lag, status.oldest_waiting
    down = status.target_down
    return {
        "schema": STATUS_SCHEMA,
        "now": _iso(status.now.astimezone(status.zone)),
        "zone": status.zone.key,
        "source": status.source,
        "watermark": when(status.watermark),
        "newest_row": when(status.newest_row),
        "lag_seconds": int(lag.total_seconds()) if lag is not None else None,
        "oldest_waiting": None if oldest is None else {
            "key": oldest.key, "start": _iso(oldest.call.start.astimezone(status.zone)),
            "seconds": int((status.now - oldest.call.start).total_seconds())},
        "source_error": status.source_error,
        "clock_warning": status.clock_warning,
        "run_in_progress": status.run_pid,
        "run_host": status.run_host,
        "calls": {stage: status.counts.get(stage, 0) for stage in Stage},
        "target": ({"up": False, "down_since": utc(down.since), "error": down.error,
                    "not_before": utc(down.until)} if down
                   else {"up": True, "down_since": None, "error": None, "not_before": None}),
        "waiting": [entry(e) for e in status.pending],
        "waiting_total": status.waiting,
        "failed": [entry(e) for e in status.failed],
        "failed_total": status.counts.get(Stage.FAILED, 0),
        "incidents": {stage: status.incidents.get(stage, 0) for stage in IncidentStage},
        "failed_incidents": [{"key": i["incident_key"], "attempts": i["attempts"],
                              "last_error": i["last_error"]} for i in status.failed_incidents],
        "reconciled_total": status.reconciled_total,
        "last_run": _last_run_json(status),
        "ledger_error": status.ledger_error,
        "unread_history": None if status.unread is None else {
            "before": _iso(status.local(status.unread.before)),
            "oldest": _iso(status.local(status.unread.oldest)),
            "rows": status.unread.rows, "backfill": status.unread.backfill()},
        "pages": status.pages,
    }


def _iso(moment: dt.datetime | None) -> str | None:
    """`2026-11-26T09:40:00+03:00`: whole seconds, as everything else `status` shows."""
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _last_run_json(status: Overview) -> dict[str, Any] | None:
    """The last run as the ledger keeps it, its times put in the one format: the ledger stores
    calldates naive (source zone) and moments as UTC with `Z`."""
    run = status.last_run
    if run is None:
        return None
    shown = dict(run)
    for name in ("watermark", "newest_row", "finished_at", "target_down_since"):
        if not isinstance(shown.get(name), str):
            continue  # absent or null
        try:
            if name in ("watermark", "newest_row"):
                shown[name] = _iso(status.local(dt.datetime.fromisoformat(shown[name])))
            else:
                shown[name] = _iso(_from_stamp(shown[name]).astimezone(status.zone))
        except ValueError:
            pass  # not a time (a damaged ledger): shown as it is
    return shown


def _from_stamp(text: str) -> dt.datetime:
    """A UTC stamp the ledger stored (`…Z`) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def render(status: Overview) -> str:
    lines = [f"now:         {_at(status.now.astimezone(status.zone))} ({status.zone.key}; "
             "every time below is in this zone)"]
    if status.source:
        lines.append(f"source:      {status.source} (its calls are keyed {status.source}:…)")
    lines += [f"watermark:   {_at(status.local(status.watermark)) or 'none yet'}"]
    if status.ledger_error:
        lines.append(f"ledger:      cannot be read: {status.ledger_error} (`poller check` says "
                     "what; the runs cannot use it either)")
    if status.source_error:
        lines.append(f"cdr table:   unreachable: {status.source_error}")
    elif status.newest_row is not None:
        lag = status.lag
        lines.append(f"newest row:  {_at(status.local(status.newest_row))}"
                     + (f" (watermark {_duration(lag)} behind)" if lag is not None else ""))
    else:
        lines.append("newest row:  the cdr table is empty")
    if status.clock_warning:
        lines.append(f"clock:       {status.clock_warning}")
    oldest = status.oldest_waiting
    if oldest is not None:
        lines.append(f"lag:         the oldest call waiting started "
                     f"{_duration(status.now - oldest.call.start)} ago "
                     f"({_at(oldest.call.start.astimezone(status.zone))}, {oldest.key})")
    if status.unread is not None:
        lines.append(f"history:     {status.unread.said(_at(status.local(status.unread.before)))}")
    counts = ", ".join(f"{stage} {n}" for stage, n in sorted(status.counts.items())) or "none"
    lines.append(f"calls:       {counts}")
    if status.pages:
        lines.append(f"pages:       {status.pages}")
    lines.extend(_callers_and_incidents(status))
    if status.reconciled_total:
        last = (status.last_run or {}).get("reconciled", 0)
        lines.append(f"reconciled:  {_count(status.reconciled_total, 'call')} taken from "
                     f"Master.csv because the cdr table lacked them ({last} in the last run)")
    if status.run_pid is not None:
        where = f" on host {status.run_host}" if status.run_host else ""
        lines.append(f"run:         in progress{where} (pid {status.run_pid})")
    if status.target_down is not None:
        down = status.target_down
        again = ("the next run tries again" if down.until is None else
                 f"it asked for no request before {_at(status.from_utc(down.until))}")
        lines.append(f"target:      down since {_at(status.from_utc(down.since))} "
                     f"({down.error}), {status.waiting} calls waiting; no call is charged "
                     f"for it, {again}")
    settling = (status.last_run or {}).get("settling", 0)
    if settling:
        lines.append(f"settling:    {_count(settling, 'call')} ended less than source.settle "
                     "before the last run; the next run takes them")
    if status.pending:
        lines.append(f"waiting{_cut(len(status.pending), status.waiting)}:")
        for entry in status.pending:
            lines.append(f"  {entry.key:<24} {entry.stage:<8} {_why_waiting(entry, status)}")
    if status.failed:
        total = status.counts.get(Stage.FAILED, 0)
        lines.append(f"failed{_cut(len(status.failed), total)} (requeue: `poller retry KEY ...` "
                     "or `poller retry --failed`):")
        for entry in status.failed:
            line = f"  {entry.key:<24} {_count(entry.attempts, 'attempt')}: {entry.last_error}"
            if entry.call.status == UNBUILT:  # retry cannot help: its rows must be read again
                since = entry.call.first_calldate.date().isoformat()
                line += f" (once fixed: poller run --since {since})"
            lines.append(line)
    lines.extend(_last_run(status))
    return "\n".join(escape_controls(line) for line in lines)


def _callers_and_incidents(status: Overview) -> list[str]:
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
                     f"{_count(incident['attempts'], 'attempt')}: {incident['last_error']} "
                     "(requeue: `poller retry KEY`)")
    return lines


def _last_run(status: Overview) -> list[str]:
    run = status.last_run
    if not run:
        return ["last run:    never"]
    finished = run.get("finished_at")
    shown = finished or "?"
    if finished:
        shown = _at(_from_stamp(finished).astimezone(status.zone))
    if run.get("config_error"):
        return [f"last run:    {shown}: stopped by the configuration: {run['config_error']}"]
    if run.get("error"):
        return [f"last run:    {shown}: stopped by an unexpected error: {run['error']} (run "
                "with -v for the traceback)"]
    delivered = sum(run.get("delivered", {}).values())
    parked = run.get("parked", 0)
    waiting = waiting_phrase(run.get("waiting", 0), run.get("failures", 0) - parked,
                             run.get("held", 0), bool(run.get("unavailable")))
    lines = [f"last run:    {shown}: {delivered} delivered, {waiting}, {parked} failed, "
             f"{_count(run.get('rows', 0), 'row')} read, {run.get('seconds', 0)}s"]
    lines += [f"  stopped by: {problem}" for problem in run.get("unavailable", [])]
    return lines


def _why_waiting(entry: Entry, status: Overview) -> str:
    if entry.last_error:
        when = _at(status.from_utc(entry.next_attempt_at)) or "the next run"
        return f"retry at {when} after: {entry.last_error}"
    if entry.note:
        return entry.note
    if status.run_pid is not None:
        return f"due: the run in progress (pid {status.run_pid}) is delivering it, or will"
    return "due at the next run"


def _at(moment: dt.datetime | None) -> str:
    """`2026-11-26 09:40:00 +03:00`, or "" for none."""
    return f"{moment:%Y-%m-%d %H:%M:%S} {moment.isoformat()[-6:]}" if moment is not None else ""


def _cut(shown: int, total: int) -> str:
    return f" ({shown} of {total} shown)" if total > shown else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "?"
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, rest = divmod(seconds, 3600)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
