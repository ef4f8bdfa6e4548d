"""The archive's files: the `YYYY/MM/DD` day folders, and whole files written atomically and
durably (a reader sees the old file or the new one, never a part)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poller.errors import DeliveryError, TargetUnavailable
from poller.localfiles import SHARED, reason, refuses_writes, set_mode, write_whole

log = logging.getLogger("poller")

DAY_GLOB = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"
# the pages are read, then written again, by every poller that delivers to the archive: the
# pollers of several PBXs share it, each under a run lock of its own
PAGES_LOCK = ".pages.lock"


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


def atomic_write(path: Path, write: Any) -> None:
    """Write beside the final name, flush to disk, then rename: readers see all or nothing.
    The file is `0640`: the archive's reader (a web server) reads it through the group."""
    try:
        write_whole(path, write, SHARED)
    except OSError as exc:
        raise write_error(f"archive: cannot write {path}: {reason(exc)}", exc) from None


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


@contextlib.contextmanager
def pages_lock(root: Path) -> Iterator[None]:
    """Hold the archive's pages for one pass. Two pollers appending to a day's last part at
    once would each write it with its own call alone: the other's would be gone from the day
    for good (a later run appends after it). An archive that takes no lock file gets none:
    its pages fail to be written anyway, and say why."""
    try:
        fd = os.open(root / PAGES_LOCK, os.O_RDWR | os.O_CREAT, SHARED)
    except OSError as exc:
        log.debug("archive pages: no lock in %s: %s", root, reason(exc))
        yield
        return
    try:
        set_mode(fd, SHARED)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed
        except OSError as exc:  # a file system without locks (ENOLCK): the pages go on
            log.debug("archive pages: %s not locked: %s", root / PAGES_LOCK, reason(exc))
        yield
    finally:
        os.close(fd)
