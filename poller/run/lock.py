"""The run lock: a file lock in state.dir, so two runs never work at once."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

from poller.errors import ConfigError, LockHeld, StorageUnavailable
from poller.localfiles import SHARED, make_folders, reason, refuses_writes, set_mode

log = logging.getLogger("poller")


class RunLock:
    """flock on `<state.dir>/poller.lock`; released by the kernel if the process dies."""

    def __init__(self, state_dir: str | Path, wait: bool = False):
        self.path = Path(state_dir) / "poller.lock"
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            make_folders(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, SHARED)
        except OSError as exc:
            if refuses_writes(exc):  # a root run's folder, a read-only or full disk
                raise StorageUnavailable(f"state.dir: cannot make the lock {self.path}: "
                                         f"{reason(exc)}") from None
            raise ConfigError(f"state.dir: cannot use {self.path.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not self.wait:
                os.close(fd)
                raise LockHeld(f"another run holds {self.path}") from None
            # a backfill waits its turn: say so, or it looks hung
            log.info("another run holds %s; waiting for it to finish", self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        set_mode(fd, SHARED)  # `status` reads it as a member of the poller's group
        with contextlib.suppress(OSError):  # only for `status` to show: a full disk refuses it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def held_by(state_dir: str | Path) -> int | None:
    """The process id of the run holding the lock, or None when no run works now. Only reads
    the lock file (a monitoring user may not write state.dir)."""
    path = Path(state_dir) / "poller.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
