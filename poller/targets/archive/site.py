"""The archive's face: `index.html` over the day folders and one `index.html` in each day.

Pages are static files beside the JSON and MP3s, so they work from `file://` and behind any
static web server, with no network: the CSS and the JS are inline. Jinja2 renders them with
autoescaping on, because caller names come from the PBX and are untrusted. Each rendered day
keeps a small `.summary` (counts, missed calls, numbers answered) so that the index is built
without reading every record of every day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from poller.errors import ConfigError, PollerError
from poller.targets.archive.files import (
    DAY_GLOB,
    day_of_folder,
    pages_lock,
    write_atomically,
)
from poller.targets.archive.pages import (
    FOLLOW_UP_DAYS,
    FOLLOW_UP_SHOWN,
    PAGE,
    PART_GLOB,
    PART_ROWS,
    STATUSES,
    SUMMARY,
    CallRow,
    DaySummary,
    callback_key,
    follow_ups,
    part_name,
    part_script,
    read_day,
    read_part,
    read_records,
    read_summary,
    records_in,
)
from poller.targets.archive.text import STRINGS, clock, long_date, month_title, short_date

log = logging.getLogger("poller")

# what the pages are made of is read in site_data; these are also known by this module
__all__ = ["PAGE", "SUMMARY", "ArchiveSite", "DaySummary", "build_site", "callback_key",
           "follow_ups", "read_day"]

INDEX_DAYS = ".index-days"


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


def archive_pbxs(summaries: Iterable[DaySummary]) -> dict[str, int]:
    """Calls per PBX over the whole archive."""
    total: dict[str, int] = {}
    for summary in summaries:
        for pbx, count in summary.pbxs.items():
            total[pbx] = total.get(pbx, 0) + count
    return total


def shown_pbxs(pbxs: Mapping[str, int]) -> list[tuple[str, int]]:
    """The PBXs a page names, with their calls: none unless the calls came through more than
    one (one PBX's archive looks as it always did)."""
    return sorted(pbxs.items()) if len(pbxs) > 1 else []


class ArchiveSite:
    """Renders the pages of one archive folder."""

    def __init__(self, root: Path, locale: str = "en", timezone: str = "UTC",
                 now: dt.datetime | None = None):
        self.root = Path(root)
        self.locale = locale
        self.zone = ZoneInfo(timezone)
        self.now = (now or dt.datetime.now(self.zone)).astimezone(self.zone)
        self.env = _environment()
        self.written: dict[dt.date, DaySummary] = {}  # this pass's: the index reads no copy

    def days_on_disk(self) -> dict[dt.date, Path]:
        found = {}
        for folder in self.root.glob(DAY_GLOB):
            day = day_of_folder(folder)
            if day is not None and folder.is_dir():
                found[day] = folder
        return found

    def update(self, changed: Iterable[dt.date],
               records: Mapping[dt.date, Collection[Path]] | None = None) -> SiteReport:
        """Write the pages of the `changed` days and of days never rendered (or whose last
        rendering failed), then the index when any day page was written or a day went.

        `records` names the records written in a changed day: when they all come after the
        day's last call, they are appended to its last part, and the day is not read again."""
        started = time.monotonic()
        report = SiteReport()
        with pages_lock(self.root):
            self._update(changed, records or {}, report)
        report.seconds = time.monotonic() - started
        return report

    def _update(self, changed: Iterable[dt.date], records: Mapping[dt.date, Collection[Path]],
                report: SiteReport) -> None:
        on_disk = self.days_on_disk()
        due = {day for day in changed if day in on_disk}
        due |= {day for day, folder in on_disk.items() if not _summary_there(folder)}
        for day in sorted(due):
            self._write_day(day, on_disk[day], report, records.get(day))
        if due or self._indexed_days() != set(on_disk) or not (self.root / PAGE).exists():
            self._write_index(on_disk, due, report)

    def build(self) -> SiteReport:
        """Write every day page and the index."""
        return self.update(self.days_on_disk())

    def render_day(self, summary: DaySummary, first: Sequence[CallRow]) -> str:
        """The day page's HTML: its counts, the calls of its first part, the later parts'
        files."""
        counts = summary.counts
        later = [(name, count) for name, count in summary.parts[1:]]
        return self.env.get_template("day.html.j2").render(
            self._common(), title=long_date(summary.day, self.locale), day=summary.day,
            rows=first, later=later, counts=counts, total=summary.total, others=sum(
                n for status, n in counts.items() if status not in STATUSES),
            view=PART_ROWS, pbxs=shown_pbxs(summary.pbxs))

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
            follow_up_days=FOLLOW_UP_DAYS, pbxs=shown_pbxs(archive_pbxs(summaries)))

    def _common(self) -> dict[str, Any]:
        offset = self.now.strftime("%z")
        return {"lang": self.locale, "t": STRINGS[self.locale], "statuses": STATUSES,
                "zone": f"{self.zone.key} (UTC{offset[:3]}:{offset[3:]})",
                "generated": f"{short_date(self.now.date(), self.locale)} {self.now:%H:%M}",
                "css": _asset("site.css"), "js": _asset("site.js"),
                "short_date": lambda day: short_date(day, self.locale),
                "month_title": lambda year, month: month_title(year, month, self.locale)}

    def _write_day(self, day: dt.date, folder: Path, report: SiteReport,
                   added: Collection[Path] | None = None) -> None:
        try:
            written = self._append(day, folder, added) if added else None
            if written is None:
                written = self._rewrite(day, folder)
        except (OSError, ValueError, PollerError) as exc:
            # no summary makes the next run try this day again; in a folder that refuses us
            # the summary cannot go either, and the day's page stays as it was
            with contextlib.suppress(OSError):
                (folder / SUMMARY).unlink(missing_ok=True)
            log.error("archive pages: %s: %s", day, exc)
            report.failed.append(f"{day}: {exc}")
            return
        report.days += 1
        report.calls += written

    def _rewrite(self, day: dt.date, folder: Path) -> int:
        """The whole day from its records: every part, the page, the summary."""
        rows = read_day(folder)
        parts = _write_parts(folder, rows, 1)
        for stale in sorted(folder.glob(PART_GLOB))[len(parts):]:
            stale.unlink(missing_ok=True)
        summary = DaySummary.of(day, rows).placed(parts, rows[-1] if rows else None)
        self._write_page(folder, summary, rows[:PART_ROWS])
        return len(rows)

    def _append(self, day: dt.date, folder: Path, added: Collection[Path]) -> int | None:
        """New calls after the day's last one, added to its last part (and the parts after
        it): the count of them, or None when the day must be rewritten whole (a call that
        sorts among the others, or a summary or last part that does not agree)."""
        summary = read_summary(folder)
        rows = read_records(added)
        if summary is None or not summary.parts or not rows or not summary.follows(rows[0]):
            return None
        if records_in(folder) != summary.total + len(rows):
            # records no pass has shown: a run killed between its records and its pages (the
            # ledger holds those calls done, so no run writes them again), or a poller sharing
            # the archive that has not reached its pages yet
            return None
        name, count = summary.parts[-1]
        number = len(summary.parts)
        try:
            kept = read_part(folder / name)
            first = [] if number == 1 else read_part(folder / summary.parts[0][0])
        except (OSError, ValueError) as exc:
            log.warning("archive pages: %s: written again whole (%s)", day, exc)
            return None
        if len(kept) != count:  # a run stopped between the part and the summary
            return None
        tail = kept + rows
        parts = [*summary.parts[:-1], *_write_parts(folder, tail, number)]
        first = first or tail[:PART_ROWS]
        self._write_page(folder, summary.merged(DaySummary.of(day, rows)).placed(
            parts, rows[-1]), first)
        return len(rows)

    def _write_page(self, folder: Path, summary: DaySummary, first: Sequence[CallRow]) -> None:
        # the summary last: it says what the parts and the page hold
        write_atomically(folder / PAGE, self.render_day(summary, first).encode())
        write_atomically(folder / SUMMARY,
                         json.dumps(summary.to_json(), ensure_ascii=False).encode())
        self.written[summary.day] = summary

    def _write_index(self, on_disk: Mapping[dt.date, Path], tried: set[dt.date],
                     report: SiteReport) -> None:
        summaries = []
        for day, folder in sorted(on_disk.items()):
            summary = self.written.get(day) or read_summary(folder)
            if summary is None and day not in tried:  # a summary damaged since
                self._write_day(day, folder, report)
                summary = self.written.get(day) or read_summary(folder)
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


def _write_parts(folder: Path, rows: Sequence[CallRow], first: int) -> list[tuple[str, int]]:
    """`rows` as part files numbered from `first`: their names and sizes."""
    parts = []
    for start in range(0, len(rows), PART_ROWS):
        name = part_name(first + start // PART_ROWS)
        chunk = rows[start:start + PART_ROWS]
        write_atomically(folder / name, part_script(chunk))
        parts.append((name, len(chunk)))
    return parts


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("poller.targets.archive", "templates"),
        autoescape=True,  # every template is HTML, and the values are the PBX's
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["clock"] = clock
    return env


def _asset(name: str) -> Markup:
    """A file shipped with the templates, trusted, placed inline."""
    shipped = resources.files("poller.targets.archive") / "templates" / name
    return Markup(shipped.read_text("utf-8"))


def build_site(root: Path, locale: str, timezone: str) -> SiteReport:
    """Write every page of the archive in `root` (`poller archive build`)."""
    if not root.is_dir():
        raise ConfigError(f"archive folder {root} does not exist")
    return ArchiveSite(root, locale, timezone).build()


def _summary_there(folder: Path) -> bool:
    """Whether the day was rendered; a folder that refuses us (EACCES) counts as not, so the
    day is tried, and its failure logged, rather than stopping the run."""
    try:
        return (folder / SUMMARY).exists()
    except OSError:
        return False
