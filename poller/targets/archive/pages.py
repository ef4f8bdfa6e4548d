"""What the archive pages show, read from the call records: rows, day summaries, follow-ups."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poller.model import STATUSES, Status

log = logging.getLogger("poller")

PAGE = "index.html"
SUMMARY = ".summary"  # not *.json: readers of the archive take every *.json for a call record
SUMMARY_VERSION = 1
MISSED = tuple(status for status in STATUSES if status != Status.ANSWERED)
FOLLOW_UP_DAYS = 30  # how far back a missed call still asks to be returned
FOLLOW_UP_SHOWN = 200
_NO_CALLER = {"", "anonymous", "unknown", "private", "restricted", "unavailable"}


@dataclass(frozen=True)
class CallRow:
    """One call record as a day page shows it."""

    key: str
    start: dt.datetime  # aware, in the source time zone as the record says
    number: str
    name: str
    status: str
    duration: int
    talk_time: int
    answered_by: str
    anchor: str  # the record's file stem: safe for an id and a URL
    mp3: str | None  # the MP3 beside the record, when it is there
    recording_problem: str | None
    caller_name: str | None = None
    incident: str | None = None
    number_e164: str | None = None

    @classmethod
    def from_record(cls, data: Mapping[str, Any], record: Path) -> CallRow:
        """Read a record; KeyError, TypeError or ValueError when it is not one."""
        start = dt.datetime.fromisoformat(str(data["start"]))
        if start.tzinfo is None:
            raise ValueError("start has no UTC offset")
        mp3 = record.with_suffix(".mp3")
        return cls(
            key=str(data["key"]), start=start, number=_text(data.get("number")),
            name=_text(data.get("name")), status=_text(data.get("status")),
            duration=int(data.get("duration") or 0), talk_time=int(data.get("talk_time") or 0),
            answered_by=_text(data.get("answered_by")), anchor=record.stem,
            mp3=mp3.name if data.get("recording") and mp3.is_file() else None,
            recording_problem=data.get("recording_problem") or None,
            caller_name=data.get("caller_name") or None, incident=data.get("incident") or None,
            number_e164=data.get("number_e164") or None)

    @property
    def time(self) -> str:
        return f"{self.start:%H:%M:%S}"

    @property
    def epoch(self) -> int:
        return int(self.start.timestamp())

    @property
    def digits(self) -> str:
        return re.sub(r"\D+", "", self.number)

    @property
    def shown_name(self) -> str:
        return self.caller_name or self.name

    @property
    def callback(self) -> str | None:
        """What makes two calls "the same caller", or None for a caller nobody can ring back."""
        return callback_key(self.number, self.number_e164)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def callback_key(number: str, e164: str | None = None) -> str | None:
    """The normalised number when caller identification gave one, else the last ten digits:
    `89161234567` and `+79161234567` are one caller."""
    if e164:
        return e164
    if number.strip().lower() in _NO_CALLER:
        return None
    digits = re.sub(r"\D+", "", number)
    return digits[-10:] or None


@dataclass(frozen=True)
class Missed:
    """A call nobody answered, as the index needs it to ask for a call back."""

    key: str
    start: str
    number: str
    name: str
    status: str
    anchor: str
    callback: str


@dataclass(frozen=True)
class DaySummary:
    """What the index needs of one day; kept in the day folder as `.summary`."""

    day: dt.date
    counts: Mapping[str, int]
    missed: tuple[Missed, ...] = ()
    answered: Mapping[str, str] = field(default_factory=dict)  # callback -> its last answer

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def of(cls, day: dt.date, rows: list[CallRow]) -> DaySummary:
        counts: dict[str, int] = {str(status): 0 for status in STATUSES}
        answered: dict[str, str] = {}
        missed = []
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
            callback = row.callback
            if callback is None:
                continue
            if row.status == "answered":
                answered[callback] = max(answered.get(callback, ""), row.start.isoformat())
            elif row.status in MISSED:
                missed.append(Missed(row.key, row.start.isoformat(), row.number, row.shown_name,
                                     row.status, row.anchor, callback))
        return cls(day, counts, tuple(missed), answered)

    def to_json(self) -> dict[str, Any]:
        return {"version": SUMMARY_VERSION, "day": self.day.isoformat(),
                "counts": dict(self.counts), "answered": dict(self.answered),
                "missed": [vars(item) for item in self.missed]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DaySummary:
        if data.get("version") != SUMMARY_VERSION:
            raise ValueError(f"summary version {data.get('version')!r}")
        return cls(dt.date.fromisoformat(data["day"]), dict(data["counts"]),
                   tuple(Missed(**item) for item in data["missed"]), dict(data["answered"]))


@dataclass(frozen=True)
class FollowUp:
    """A caller whose missed calls nobody has answered since: one line of the index."""

    last: Missed
    attempts: int
    name: str  # the newest name the caller gave: the last call may have come without one

    @property
    def href(self) -> str:
        day = dt.datetime.fromisoformat(self.last.start)
        return f"{day:%Y/%m/%d}/{PAGE}#c-{self.last.anchor}"

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.last.start)


def follow_ups(summaries: Iterable[DaySummary], since: dt.datetime) -> list[FollowUp]:
    """Callers missed since `since` who have not been answered after their last missed call,
    newest first. A call back made from a mobile is not in the archive: the page lets the
    reader tick such callers off."""
    summaries = list(summaries)
    answered: dict[str, dt.datetime] = {}
    for summary in summaries:
        for callback, when in summary.answered.items():
            moment = dt.datetime.fromisoformat(when)
            answered[callback] = max(answered.get(callback, moment), moment)
    waiting: dict[str, list[Missed]] = {}
    for summary in summaries:
        for missed in summary.missed:
            moment = dt.datetime.fromisoformat(missed.start)
            later_answer = answered.get(missed.callback)
            if moment >= since and (later_answer is None or later_answer <= moment):
                waiting.setdefault(missed.callback, []).append(missed)
    return sorted((_follow_up(calls) for calls in waiting.values()),
                  key=lambda item: item.when, reverse=True)


def _follow_up(calls: list[Missed]) -> FollowUp:
    newest = sorted(calls, key=lambda m: dt.datetime.fromisoformat(m.start), reverse=True)
    return FollowUp(newest[0], len(calls), next((m.name for m in newest if m.name), ""))


def read_day(folder: Path) -> list[CallRow]:
    """The call records of a day folder in time order; one that cannot be read is skipped."""
    rows = []
    for path in folder.glob("*.json"):
        if path.name.startswith(".") or path.name.endswith(".incident.json"):
            continue  # a record waiting for its MP3, a write in progress, or an incident
        try:
            rows.append(CallRow.from_record(json.loads(path.read_bytes()), path))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.warning("archive pages: skipping %s: %s", path, exc)
    return sorted(rows, key=lambda row: (row.start, row.key))


def read_summary(folder: Path) -> DaySummary | None:
    try:
        return DaySummary.from_json(json.loads((folder / SUMMARY).read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, KeyError, TypeError, ValueError) as exc:
        log.warning("archive pages: %s: rebuilding its summary (%s)", folder, exc)
        return None
