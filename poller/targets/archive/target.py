"""The local archive target: `<dir>/YYYY/MM/DD/<key>.json` and `<key>.mp3`, written atomically,
with HTML pages over them (poller.archive_site) for the days a run changed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from poller.config.schema import ArchiveConfig
from poller.errors import ConfigError, DeliveryError
from poller.localfiles import make_folders, reason, refuses_writes, sync_folder, user
from poller.model import Call
from poller.targets.archive.files import (
    ArchiveUnavailable,
    atomic_write,
    write_atomically,
    write_error,
)
from poller.targets.archive.site import ArchiveSite
from poller.targets.interface import safe_name

log = logging.getLogger("poller")


class ArchiveTarget:
    """Date folders of JSON records and MP3 files, for sites without an ITSM system."""

    sends_recording_with_call = False  # the MP3 is copied in by attach, then the record shown

    def __init__(self, config: ArchiveConfig, timezone: str):
        self.root = Path(config.dir)
        try:
            make_folders(self.root)
        except OSError as exc:
            if refuses_writes(exc):  # an outage of the archive's disk, not the configuration
                raise ArchiveUnavailable(f"archive: cannot create {self.root}: {reason(exc)}"
                                         ) from None
            raise ConfigError(f"target.archive.dir: cannot create {self.root}: {exc}") from None
        if not os.access(self.root, os.W_OK):
            raise ArchiveUnavailable(f"archive: {self.root} is not writable by {user()}")
        self.locale = config.locale
        self.timezone = timezone
        self.changed_days: set[dt.date] = set()
        # the records a reader can see that this run wrote: new calls are appended to their
        # day's page instead of the day being read again
        self.changed_records: dict[dt.date, set[Path]] = {}

    def folder(self, call: Call) -> Path:
        return self.root / call.start.strftime("%Y/%m/%d")

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        folder = self.folder(call)
        path = folder / f"{safe_name(call.key)}.json"
        data = json.dumps(record, ensure_ascii=False, indent=2).encode() + b"\n"
        # a record naming its MP3 waits, hidden, until the MP3 is in place: a reader never
        # finds a record whose recording is not there
        final = _pending(path) if record.get("recording") else path
        atomic_write(final, lambda handle: handle.write(data))
        self.changed_days.add(call.start.date())
        if final == path:
            self._shown(call, path)
            _pending(path).unlink(missing_ok=True)  # an earlier try's, now superseded
        return str(path.relative_to(self.root))

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        record = self.root / object_id
        path = record.with_suffix(".mp3")
        with open(mp3, "rb") as source:
            atomic_write(path, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))
        if _pending(record).exists():
            try:
                os.replace(_pending(record), record)
                sync_folder(record.parent)
            except OSError as exc:
                raise write_error(f"archive: cannot write {record}: {exc}", exc) from None
        self.changed_days.add(call.start.date())
        self._shown(call, record)

    def ensure(self, object_id: str, call: Call, record: dict[str, Any]) -> None:
        path = self.root / object_id
        if path.exists():
            return
        if record.get("recording") and not path.with_suffix(".mp3").exists():
            raise DeliveryError(f"archive: {path.with_suffix('.mp3')} is gone after its upload")
        log.warning("call %s: its record %s was gone (pending copy and all): written again",
                    call.key, path)
        data = json.dumps(record, ensure_ascii=False, indent=2).encode() + b"\n"
        atomic_write(path, lambda handle: handle.write(data))
        _pending(path).unlink(missing_ok=True)
        self.changed_days.add(call.start.date())
        self._shown(call, path)

    def _shown(self, call: Call, record: Path) -> None:
        self.changed_records.setdefault(call.start.date(), set()).add(record)

    def create_incident(self, call: Call, parent: str, attributes: dict[str, str],
                        joined: list[str]) -> str:
        """`<key>.incident.json` beside the opening call's record."""
        record = self.root / parent
        path = record.with_name(record.name.removesuffix(".json") + ".incident.json")
        self.update_incident(str(path.relative_to(self.root)), call, attributes, joined)
        return str(path.relative_to(self.root))

    def update_incident(self, object_id: str, call: Call, attributes: dict[str, str],
                        joined: list[str]) -> None:
        """Rewrite the incident's file, whole, with the calls joined so far."""
        data = {"incident": call.key, "attributes": attributes, "joined": joined}
        write_atomically(self.root / object_id,
                         json.dumps(data, ensure_ascii=False, indent=2).encode() + b"\n")

    def answers(self) -> bool:
        """The archive answers while its folder is there and writable (a mount not lost)."""
        return self.root.is_dir() and os.access(self.root, os.W_OK)

    def finish(self) -> None:
        """Rewrite the HTML pages of the days this run changed, and the index.

        A page that cannot be written is logged and left for a later run to write: the calls
        are delivered whatever becomes of their pages.
        """

        index = self.root / "index.html"
        first = not index.exists()
        report = ArchiveSite(self.root, self.locale, self.timezone).update(
            self.changed_days, self.changed_records)
        self.changed_days.clear()
        self.changed_records.clear()
        if report.index and first:
            # the first pages of this archive: say where they are (later runs: -v)
            log.info("archive pages: %s (open it in a browser; `poller status` shows it)",
                     index)
        elif report.days or report.index:
            log.debug("archive pages: %s", report.summary())

    def close(self) -> None:
        pass


def _pending(record: Path) -> Path:
    return record.with_name(f".{record.name}.pending")


