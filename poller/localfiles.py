"""The poller's own files (state.dir, its tmp/, the archive, the directory's copy): their
modes, what a failure to write them means, and the user it is written as.

Every file and folder is given its mode explicitly: the umask of cron or a shell (022) would
leave recordings and callers' numbers readable by every user, and a umask can only take bits
away, never add the group read a web server needs.

A folder of ours that refuses writes — a root run left it root's (EACCES), it was remounted
read-only (EROFS), its disk or quota is full (ENOSPC, EDQUOT) — is a local outage: nobody's
call's fault (design §4), said with the place and the user so it can be fixed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# what a reader of the poller's group may see: the archive's records, recordings and pages,
# the lock, the metrics file (a web server or node_exporter reads them through the group)
SHARED = 0o640
# what only the poller reads: the ledger, its journal, the directory's copy, temporary files
PRIVATE = 0o600
FOLDER = 0o750

# a folder that takes no writes at all: every call would fail alike
REFUSING = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def refuses_writes(exc: OSError) -> bool:
    """Whether an error writing a file of ours means the place takes no writes."""
    return exc.errno in REFUSING


def user() -> str:
    """`user poller` (or `uid 998` without a name): who the files are written as."""
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:
        return f"uid {os.geteuid()}"


def reason(exc: OSError) -> str:
    """An OSError as an administrator reads it: `permission denied (as user poller)`."""
    text = (exc.strerror or str(exc)).lower()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{text} (as {user()})"
    return text


def make_folders(folder: Path) -> None:
    """Make `folder` and its missing parents, each `0750` whatever the umask. A set-group-ID
    bit a new folder inherits is kept: with it, an administrator gives the files below a
    folder to a reader's group (the web server's), and the day folders follow."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, FOLDER)
        except FileExistsError:  # another process made it meanwhile
            continue
        mode = os.stat(new).st_mode
        if stat.S_IMODE(mode) & 0o777 != FOLDER:
            os.chmod(new, FOLDER | (mode & stat.S_ISGID))


def set_mode(fd: int, mode: int) -> None:
    """Give an open file of ours its mode, whatever the umask made of it; a file of another
    user's (a root run's) keeps its own, and the write that follows says what is wrong."""
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, mode)


def write_whole(path: Path, write: Callable[[BinaryIO], object], mode: int,
                durable: bool = True) -> None:
    """Write a whole file beside its final name, then rename it: readers see the old file or
    the new one, never a part. `durable` flushes the file and the rename to disk first.
    Raises OSError, for the caller to say whose failure it is."""
    # one name per file, not a random one: only one run writes (the lock), and a killed run's
    # remains are simply written over
    temporary = path.parent / f".{path.name}.part"
    make_folders(path.parent)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # a killed run's: made afresh, with our mode
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        with os.fdopen(fd, "wb") as handle:
            set_mode(handle.fileno(), mode)
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        if durable:
            sync_folder(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # renamed already
            os.unlink(temporary)
        raise


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
