"""The local archive target: `<dir>/YYYY/MM/DD/<key>.json` and `<key>.mp3`, written atomically."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..config import ArchiveConfig
from ..errors import ConfigError, DeliveryError
from ..model import Call
from . import safe_name


class ArchiveTarget:
    """Date folders of JSON records and MP3 files, for sites without an ITSM system."""

    def __init__(self, config: ArchiveConfig, timezone: str):
        self.root = Path(config.dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"target.archive.dir: cannot create {self.root}: {exc}") from None
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"target.archive.dir: {self.root} is not writable")

    def folder(self, call: Call) -> Path:
        return self.root / call.start.strftime("%Y/%m/%d")

    def create(self, call: Call, record: dict[str, Any]) -> str:
        folder = self.folder(call)
        path = folder / f"{safe_name(call.key)}.json"
        data = json.dumps(record, ensure_ascii=False, indent=2).encode() + b"\n"
        _atomic_write(path, lambda handle: handle.write(data))
        return str(path.relative_to(self.root))

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        path = self.root / Path(object_id).with_suffix(".mp3")
        with open(mp3, "rb") as source:
            _atomic_write(path, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))

    def close(self) -> None:
        pass


def _atomic_write(path: Path, write: Any) -> None:
    """Write beside the final name, flush to disk, then rename: readers see all or nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise DeliveryError(f"archive: cannot write in {path.parent}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as exc:
        os.unlink(temporary)
        if isinstance(exc, OSError):
            raise DeliveryError(f"archive: cannot write {path}: {exc}") from None
        raise


def prune_archive(root: Path, before: dt.date) -> int:
    """Remove day folders (YYYY/MM/DD) older than `before`; returns how many went."""
    removed = 0
    for day in sorted(root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]")):
        try:
            date = dt.date(int(day.parent.parent.name), int(day.parent.name), int(day.name))
        except ValueError:
            continue  # not one of ours
        if date < before:
            shutil.rmtree(day, ignore_errors=True)
            removed += 1
            for parent in (day.parent, day.parent.parent):
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only when empty
    return removed
