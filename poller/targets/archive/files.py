"""The archive's files: the `YYYY/MM/DD` day folders, and whole files written atomically and
durably (a reader sees the old file or the new one, never a part)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

from poller.errors import DeliveryError, TargetUnavailable
from poller.localfiles import reason, refuses_writes

DAY_GLOB = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"


class ArchiveUnavailable(DeliveryError, TargetUnavailable):
    """The archive refuses writes (its disk full or read-only, a folder a root run left
    root's): the target's failure, nobody's call's."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write a whole file so that readers see the old one or the new one, never a part."""
    atomic_write(path, lambda handle: handle.write(data))


def day_of_folder(folder: Path) -> dt.date | None:
    """The date a `YYYY/MM/DD` folder holds, None for a folder that is not one of ours."""
    try:
        return dt.date(int(folder.parent.parent.name), int(folder.parent.name), int(folder.name))
    except ValueError:
        return None


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable: the ledger says done only after this."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Write beside the final name, flush to disk, then rename: readers see all or nothing."""
    # one name per file, not a random one: only one run writes (the lock), and a killed run's
    # remains are simply written over — no search of the whole day folder for leftovers
    temporary = str(path.parent / f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # a killed run's: made afresh, so the umask decides the mode
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise write_error(f"archive: cannot write in {path.parent}: {reason(exc)}", exc) \
            from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        sync_folder(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):  # renamed already
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise write_error(f"archive: cannot write {path}: {reason(exc)}", exc) from None
        raise


def write_error(text: str, exc: OSError) -> DeliveryError:
    """A folder that refuses writes (full, read-only, not the poller's user's) stops the run
    charging nobody; anything else is the call's."""
    return ArchiveUnavailable(text) if refuses_writes(exc) else DeliveryError(text)


def prune_archive(root: Path, before: dt.date) -> int:
    """Remove day folders (YYYY/MM/DD) older than `before`; returns how many went."""
    removed = 0
    for day in sorted(root.glob(DAY_GLOB)):
        date = day_of_folder(day)
        if date is not None and date < before:
            shutil.rmtree(day, ignore_errors=True)
            removed += 1
            for parent in (day.parent, day.parent.parent):
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only when empty
    return removed
