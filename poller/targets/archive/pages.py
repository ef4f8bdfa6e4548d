"""What the archive pages show, read from the call records: rows, day summaries, follow-ups."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poller.model import STATUSES, Status

log = logging.getLogger("poller")

PAGE = "index.html"
SUMMARY = ".summary"  # not *.json: readers of the archive take every *.json for a call record
SUMMARY_VERSION = 4  # 3: callers matched on the last ten digits; 4: calls per PBX
# A day page holds its first part of calls as HTML; each part after it is a script beside the
# page (`<script src>` works from file://, where a fetch() does not) that the page's JS shows a
# screenful at a time: 50,000 calls as one table were 25 MB that a browser took 99 s to open.
# New calls are appended to the last part, so a run rewrites a part, not the day.
PART_ROWS = 1000
PART_GLOB = "calls-[0-9][0-9][0-9][0-9].js"
_PART_HEAD = b"(window.archiveParts = window.archiveParts || []).push("
_PART_TAIL = b");\n"
MISSED = tuple(status for status in STATUSES if status != Status.ANSWERED)
FOLLOW_UP_DAYS = 30  # how far back a missed call still asks to be returned
FOLLOW_UP_SHOWN = 200
# a call key's epoch: Asterisk's uniqueid (and linkedid) is `<epoch>.<sequence>`, after a
# `systemname-` or a `source.name:` when there is one
_EPOCH_KEY = re.compile(r"(?:^|[^\d])(\d{9,10})\.\d+$")
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
    pbx: str = ""  # source.name of the PBX the call came through

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
            number_e164=data.get("number_e164") or None, pbx=_text(data.get("pbx")))

    def to_data(self) -> list[Any]:
        """The row as a part file holds it (and the page's JS reads it)."""
        return [self.key, self.start.isoformat(), self.number, self.shown_name, self.status,
                self.duration, self.talk_time, self.answered_by, self.anchor, self.mp3,
                self.recording_problem, self.incident, self.pbx]

    @classmethod
    def from_data(cls, data: Sequence[Any]) -> CallRow:
        """A row read back from a part file; TypeError or ValueError when it is not one."""
        key, start, number, name, status, duration, talk, by, anchor, mp3, problem, incident, \
            pbx = data
        return cls(key=str(key), start=dt.datetime.fromisoformat(start), number=str(number),
                   name=str(name), status=str(status), duration=int(duration),
                   talk_time=int(talk), answered_by=str(by), anchor=str(anchor), mp3=mp3,
                   recording_problem=problem, incident=incident, pbx=str(pbx))

    @property
    def order(self) -> tuple[dt.datetime, str]:
        """Where the row sorts in its day."""
        return self.start, self.key

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
    def shown_problem(self) -> str | None:
        """The recording problem worth a word: a call nobody answered has nothing to record,
        and its header-only file (MixMonitor writes one) is no news. site.js does the same."""
        if self.recording_problem == "empty" and self.status != "answered":
            return None
        return self.recording_problem

    def incident_label(self, words: Mapping[str, Any]) -> str:
        """The incident badge: whether this call opened it, else the time of the call that
        did (a call key begins with the epoch Asterisk's uniqueid starts with), never the raw
        key. site.js does the same for the rows it makes."""
        if self.incident == self.key:
            return str(words["incident_opened"])
        match = _EPOCH_KEY.search(self.incident or "")
        if match is None:
            return str(words["incident_joined"])
        opened = dt.datetime.fromtimestamp(int(match.group(1)), self.start.tzinfo)
        when = f"{opened:%H:%M}" if opened.date() == self.start.date() else \
            f"{opened:%Y-%m-%d %H:%M}"
        return str(words["incident_of"]).format(when=when)

    @property
    def callback(self) -> str | None:
        """What makes two calls "the same caller", or None for a caller nobody can ring back."""
        return callback_key(self.number, self.number_e164)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def callback_key(number: str, e164: str | None = None) -> str | None:
    """The last ten digits of the number (of its normalised form when caller identification
    gave one): `89161234567` and `+79161234567` are one caller, whether or not the record was
    written before `callers.country` was set and so lacks `number_e164`."""
    if not e164 and number.strip().lower() in _NO_CALLER:
        return None
    digits = re.sub(r"\D+", "", e164 or number)
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
    parts: tuple[tuple[str, int], ...] = ()  # the part files of the page and their calls
    last: tuple[str, str] | None = None  # the start and key of the day's last call
    pbxs: Mapping[str, int] = field(default_factory=dict)  # calls per PBX ("": unnamed)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def of(cls, day: dt.date, rows: list[CallRow]) -> DaySummary:
        counts: dict[str, int] = {str(status): 0 for status in STATUSES}
        answered: dict[str, str] = {}
        missed = []
        pbxs: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
            pbxs[row.pbx] = pbxs.get(row.pbx, 0) + 1
            callback = row.callback
            if callback is None:
                continue
            if row.status == "answered":
                answered[callback] = max(answered.get(callback, ""), row.start.isoformat())
            elif row.status in MISSED:
                missed.append(Missed(row.key, row.start.isoformat(), row.number, row.shown_name,
                                     row.status, row.anchor, callback))
        return cls(day, counts, tuple(missed), answered, pbxs=pbxs)

    def merged(self, later: DaySummary) -> DaySummary:
        """This day's summary with the calls of `later` (all after this one's) added."""
        counts = dict(self.counts)
        for status, number in later.counts.items():
            counts[status] = counts.get(status, 0) + number
        answered = dict(self.answered)
        for callback, when in later.answered.items():
            answered[callback] = max(answered.get(callback, ""), when)
        pbxs = dict(self.pbxs)
        for pbx, number in later.pbxs.items():
            pbxs[pbx] = pbxs.get(pbx, 0) + number
        return dataclasses.replace(self, counts=counts, missed=self.missed + later.missed,
                                   answered=answered, pbxs=pbxs)

    def placed(self, parts: Sequence[tuple[str, int]], last: CallRow | None) -> DaySummary:
        """The summary with where the page's calls are."""
        return dataclasses.replace(self, parts=tuple(parts), last=None if last is None else (
            last.start.isoformat(), last.key))

    def follows(self, row: CallRow) -> bool:
        """Whether `row` sorts after every call of the day: a new call to append."""
        if self.last is None:
            return not self.parts
        return row.order > (dt.datetime.fromisoformat(self.last[0]), self.last[1])

    def to_json(self) -> dict[str, Any]:
        return {"version": SUMMARY_VERSION, "day": self.day.isoformat(),
                "counts": dict(self.counts), "answered": dict(self.answered),
                "missed": [vars(item) for item in self.missed],
                "parts": [list(part) for part in self.parts],
                "last": None if self.last is None else list(self.last),
                "pbxs": dict(self.pbxs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DaySummary:
        if data.get("version") != SUMMARY_VERSION:
            raise OldSummary(f"summary version {data.get('version')!r}")
        last = data["last"]
        return cls(dt.date.fromisoformat(data["day"]), dict(data["counts"]),
                   tuple(Missed(**item) for item in data["missed"]), dict(data["answered"]),
                   tuple((str(name), int(count)) for name, count in data["parts"]),
                   None if last is None else (str(last[0]), str(last[1])),
                   {str(name): int(count) for name, count in data["pbxs"].items()})


class OldSummary(ValueError):
    """A summary an earlier version wrote: the day is rendered again, without a warning."""


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
    return read_records(folder.glob("*.json"))


def is_record(name: str) -> bool:
    """Whether a day folder's file `name` is a call record: not one waiting for its MP3, a
    write in progress, or an incident."""
    return not name.startswith(".") and name.endswith(".json") and \
        not name.endswith(".incident.json")


def records_in(folder: Path) -> int:
    """How many call records a day folder holds (their names only: none is read)."""
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if is_record(entry.name))


def read_records(paths: Iterable[Path]) -> list[CallRow]:
    """The call records among `paths` in time order; one that cannot be read, or is gone,
    is skipped."""
    rows = []
    for path in paths:
        if not is_record(path.name):
            continue
        try:
            rows.append(CallRow.from_record(json.loads(path.read_bytes()), path))
        except FileNotFoundError:
            continue
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.warning("archive pages: skipping %s: %s", path, exc)
    return sorted(rows, key=lambda row: row.order)


def part_name(number: int) -> str:
    """The file name of a day page's part `number` (from 1)."""
    return f"calls-{number:04d}.js"


def part_script(rows: Sequence[CallRow]) -> bytes:
    """A part file: a script adding its rows to the page's list."""
    data = json.dumps([row.to_data() for row in rows], ensure_ascii=False,
                      separators=(",", ":")).encode()
    return _PART_HEAD + data + _PART_TAIL


def read_part(path: Path) -> list[CallRow]:
    """The rows of a part file; ValueError when it is not one of ours."""
    data = path.read_bytes()
    if not (data.startswith(_PART_HEAD) and data.endswith(_PART_TAIL)):
        raise ValueError(f"{path.name} is not a part of a day page")
    try:
        return [CallRow.from_data(item)
                for item in json.loads(data[len(_PART_HEAD):-len(_PART_TAIL)])]
    except TypeError as exc:
        raise ValueError(f"{path.name}: {exc}") from None


def read_summary(folder: Path) -> DaySummary | None:
    try:
        return DaySummary.from_json(json.loads((folder / SUMMARY).read_bytes()))
    except FileNotFoundError:
        return None
    except OldSummary:
        return None  # written by an earlier version: the day is rendered again
    except (OSError, KeyError, TypeError, ValueError) as exc:
        log.warning("archive pages: %s: rebuilding its summary (%s)", folder, exc)
        return None
