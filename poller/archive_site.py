"""The archive's face: `index.html` over the day folders and one `index.html` in each day.

Pages are static files beside the JSON and MP3s, so they work from `file://` and behind any
static web server, with no network: the CSS and the JS are inline. Jinja2 renders them with
autoescaping on, because caller names come from the PBX and are untrusted. Each rendered day
keeps a small `.summary` (counts, missed calls, numbers answered) so that the index is built
without reading every record of every day.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from .errors import PollerError
from .site_text import STRINGS, clock, long_date, month_title, short_date
from .targets.archive import DAY_GLOB, day_of_folder, write_atomically

log = logging.getLogger("poller")

PAGE = "index.html"
SUMMARY = ".summary"  # not *.json: readers of the archive take every *.json for a call record
INDEX_DAYS = ".index-days"
SUMMARY_VERSION = 1
STATUSES = ("answered", "unanswered", "busy", "impossible")
MISSED = ("unanswered", "busy", "impossible")
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
        counts = {status: 0 for status in STATUSES}
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


@dataclass
class SiteReport:
    """What one rendering pass did."""

    days: int = 0
    calls: int = 0
    index: bool = False
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        text = (f"{self.days} day page(s) with {self.calls} call(s) written"
                f"{', index written' if self.index else ''} in {self.seconds:.2f}s")
        return text + (f"; {len(self.failed)} failed: " + "; ".join(self.failed)
                       if self.failed else "")


class ArchiveSite:
    """Renders the pages of one archive folder."""

    def __init__(self, root: Path, locale: str = "en", timezone: str = "UTC",
                 now: dt.datetime | None = None):
        self.root = Path(root)
        self.locale = locale
        self.zone = ZoneInfo(timezone)
        self.now = (now or dt.datetime.now(self.zone)).astimezone(self.zone)
        self.env = _environment()

    def days_on_disk(self) -> dict[dt.date, Path]:
        found = {}
        for folder in self.root.glob(DAY_GLOB):
            day = day_of_folder(folder)
            if day is not None and folder.is_dir():
                found[day] = folder
        return found

    def update(self, changed: Iterable[dt.date]) -> SiteReport:
        """Write the pages of the `changed` days and of days never rendered (or whose last
        rendering failed), then the index when any day page was written or a day went."""
        started = time.monotonic()
        report = SiteReport()
        on_disk = self.days_on_disk()
        due = {day for day in changed if day in on_disk}
        due |= {day for day, folder in on_disk.items() if not (folder / SUMMARY).exists()}
        for day in sorted(due):
            self._write_day(day, on_disk[day], report)
        if due or self._indexed_days() != set(on_disk) or not (self.root / PAGE).exists():
            self._write_index(on_disk, due, report)
        report.seconds = time.monotonic() - started
        return report

    def build(self) -> SiteReport:
        """Write every day page and the index."""
        return self.update(self.days_on_disk())

    def render_day(self, day: dt.date, rows: list[CallRow]) -> str:
        """The day page's HTML."""
        counts = DaySummary.of(day, rows).counts
        return self.env.get_template("day.html.j2").render(
            self._common(), title=long_date(day, self.locale), day=day, rows=rows,
            counts=counts, total=len(rows), others=sum(
                n for status, n in counts.items() if status not in STATUSES))

    def render_index(self, summaries: list[DaySummary]) -> str:
        """The index page's HTML, newest month first."""
        since = self.now - dt.timedelta(days=FOLLOW_UP_DAYS)
        waiting = follow_ups((s for s in summaries if s.day >= since.date()), since)
        months: dict[tuple[int, int], list[DaySummary]] = {}
        for summary in sorted(summaries, key=lambda s: s.day, reverse=True):
            months.setdefault((summary.day.year, summary.day.month), []).append(summary)
        return self.env.get_template("index.html.j2").render(
            self._common(), title=STRINGS[self.locale]["archive"], months=months,
            waiting=waiting[:FOLLOW_UP_SHOWN], waiting_total=len(waiting),
            follow_up_days=FOLLOW_UP_DAYS)

    def _common(self) -> dict[str, Any]:
        offset = self.now.strftime("%z")
        return {"lang": self.locale, "t": STRINGS[self.locale], "statuses": STATUSES,
                "zone": f"{self.zone.key} (UTC{offset[:3]}:{offset[3:]})",
                "generated": f"{short_date(self.now.date(), self.locale)} {self.now:%H:%M}",
                "css": _asset("site.css"), "js": _asset("site.js"),
                "short_date": lambda day: short_date(day, self.locale),
                "month_title": lambda year, month: month_title(year, month, self.locale)}

    def _write_day(self, day: dt.date, folder: Path, report: SiteReport) -> None:
        try:
            rows = read_day(folder)
            page = self.render_day(day, rows)
            write_atomically(folder / PAGE, page.encode())
            summary = json.dumps(DaySummary.of(day, rows).to_json(), ensure_ascii=False)
            write_atomically(folder / SUMMARY, summary.encode())
        except (OSError, PollerError) as exc:
            # no summary makes the next run try this day again
            (folder / SUMMARY).unlink(missing_ok=True)
            log.error("archive pages: %s: %s", day, exc)
            report.failed.append(f"{day}: {exc}")
            return
        report.days += 1
        report.calls += len(rows)

    def _write_index(self, on_disk: Mapping[dt.date, Path], tried: set[dt.date],
                     report: SiteReport) -> None:
        summaries = []
        for day, folder in sorted(on_disk.items()):
            summary = read_summary(folder)
            if summary is None and day not in tried:  # a summary damaged since
                self._write_day(day, folder, report)
                summary = read_summary(folder)
            if summary is not None:
                summaries.append(summary)
        try:
            write_atomically(self.root / PAGE, self.render_index(summaries).encode())
            days = json.dumps(sorted(day.isoformat() for day in on_disk))
            write_atomically(self.root / INDEX_DAYS, days.encode())
        except PollerError as exc:
            log.error("archive pages: index: %s", exc)
            report.failed.append(f"index: {exc}")
            return
        report.index = True

    def _indexed_days(self) -> set[dt.date] | None:
        try:
            return {dt.date.fromisoformat(day)
                    for day in json.loads((self.root / INDEX_DAYS).read_text())}
        except (OSError, ValueError, TypeError):
            return None


def read_day(folder: Path) -> list[CallRow]:
    """The call records of a day folder in time order; one that cannot be read is skipped."""
    rows = []
    for path in folder.glob("*.json"):
        if path.name.startswith("."):
            continue  # a record waiting for its MP3, or a write in progress
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


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("poller", "templates"),
        autoescape=True,  # every template is HTML, and the values are the PBX's
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["clock"] = clock
    return env


def _asset(name: str) -> Markup:
    """A file shipped with the templates, trusted, placed inline."""
    return Markup(resources.files("poller").joinpath("templates", name).read_text("utf-8"))


def build_site(root: Path, locale: str, timezone: str) -> SiteReport:
    """Write every page of the archive in `root` (`poller archive build`)."""
    if not root.is_dir():
        from .errors import ConfigError

        raise ConfigError(f"archive folder {root} does not exist")
    return ArchiveSite(root, locale, timezone).build()
