"""Recording files: naming calls' files from the template, path safety, and readiness."""

from __future__ import annotations

import datetime as dt
import grp
import logging
import os
import pwd
import re
import stat as st
import time
from dataclasses import dataclass
from pathlib import Path

from poller.config.schema import RecordingsConfig
from poller.errors import DeliveryError, RecordingsUnavailable
from poller.localfiles import user
from poller.model import Call
from poller.templates import WILDCARD, is_pattern

log = logging.getLogger(__name__)

WAV_HEADER_BYTES = 44


class RefusedPath(Exception):
    """A recording name that resolves outside the recordings directory."""


class RecordingDenied(DeliveryError):
    """A recording the poller's user may not read (a file 0600 root's, a folder it cannot
    enter). Said at once, never taken for a file still being written, and charged to the
    call (design §4: a recording that cannot be read is the call's): it backs off, then is
    parked, until the administrator gives the user the right and runs `poller retry`."""

    @classmethod
    def of(cls, path: Path) -> RecordingDenied:
        return cls(f"recording {path}: Permission denied (as {user()}{_owned_by(path)}): the "
                   "poller's user must be able to read the recordings (group asterisk)")


def _owned_by(path: Path) -> str:
    try:
        info = path.stat()
    except OSError:
        return ""  # a folder on the way is closed: its own mode is not visible either
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"; the file is {owner}:{group} {st.S_IMODE(info.st_mode):04o}"


def resolve_inside(base: Path, name: str) -> Path:
    """The real path of `name` under `base`; RefusedPath if it escapes (`..`, symlinks)."""
    real = _inside(base, name)
    if real.exists() and not real.is_file():
        # a FIFO would block the run (holding the lock) on open; a device or folder is no WAV
        raise RefusedPath(f"{name!r} is not a regular file")
    return real


def _inside(base: Path, name: str) -> Path:
    if ".." in Path(name).parts:
        raise RefusedPath(f"{name!r} climbs out with '..'")  # even when it lands inside again
    root = base.resolve()
    candidate = Path(name) if os.path.isabs(name) else root / name
    try:
        real = candidate.resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise RefusedPath(f"{name!r}: {exc}") from None
    if root not in real.parents:
        raise RefusedPath(f"{name!r} resolves outside {root}")
    return real


@dataclass(frozen=True)
class FileState:
    """What a look at a recording file found."""

    path: Path
    exists: bool
    size: int = 0
    mtime: float = 0.0
    header_final: bool = False


def inspect(path: Path) -> FileState:
    """Size, time and whether a RIFF/WAVE header has its final sizes written. A file this
    user may not read raises RecordingDenied: it would never look complete."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return FileState(path, exists=False)
    except PermissionError:
        raise RecordingDenied.of(path) from None
    return FileState(path, True, stat.st_size, stat.st_mtime, _header_final(path, stat.st_size))


def _header_final(path: Path, size: int) -> bool:
    # MixMonitor writes zeros in the RIFF and data sizes until the file is closed
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except PermissionError:
        raise RecordingDenied.of(path) from None
    except OSError:
        return False
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return True  # not a RIFF file: nothing to wait for in its header
    riff_size = int.from_bytes(head[4:8], "little")
    return riff_size != 0 and riff_size + 8 <= size


def is_settled(state: FileState, quiet: float = 2.0) -> bool:
    """A file is complete when its header is final and it has not changed for `quiet` seconds.

    File times are compared with the real clock, not a run's (possibly pinned) time.
    """
    return state.exists and state.header_final and time.time() - state.mtime >= quiet


@dataclass(frozen=True)
class Plan:
    """The files to encode for a call (in time order), or why there are none."""

    files: tuple[Path, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class Wait:
    """An expected file is missing or still being written: look again at `until`."""

    until: dt.datetime
    note: str


_PROBLEM_ORDER = ("refused_path", "unreadable", "missing", "empty")


def plan_recording(call: Call, config: RecordingsConfig, now: dt.datetime) -> Plan | Wait:
    """Decide what to attach: ready files, a reason for none, or to wait."""
    if not call.recordings:
        return Plan()
    give_up = call.end + dt.timedelta(seconds=config.wait)
    base = Path(config.dir)
    if not base.is_dir():
        # every file would look missing: wait for the folder instead of sending calls without
        raise RecordingsUnavailable(f"recordings.dir {base} is not a folder (the "
                                    "spool not mounted?); calls with recordings wait for it")
    found: list[Path] = []
    problems: list[str] = []
    for name in call.recordings:
        try:
            paths = locate(base, name)
        except PermissionError as exc:  # a folder on the way this user cannot enter
            raise RecordingDenied.of(Path(exc.filename or base / name)) from None
        except RefusedPath as exc:
            log.warning("call %s: recording refused: %s", call.key, exc)
            problems.append("refused_path")
            continue
        if call.recording_search:
            if any(_exists(path) for path in paths):
                found = paths  # the first place that holds a file holds the recording
                break
            continue
        found += [p for p in paths if p not in found]
    if call.recording_search and not found:
        # the call has settled and no file is where one would be: it was not recorded
        return Plan((), min(problems, key=_PROBLEM_ORDER.index) if problems else None)
    writing = open_for_writing(found)
    files: list[Path] = []
    for path in found:
        state = inspect(path)
        if (not is_settled(state) or path in writing) and now < give_up:
            what = "still being written" if state.exists else "not there yet"
            return Wait(min(now + dt.timedelta(seconds=config.quiet), give_up),
                        f"waiting for recording {path.name} ({what})")
        if not state.exists:
            log.warning("call %s: recording %s still missing %.0fs after the call ended",
                        call.key, path, config.wait)
            problems.append("missing")
        elif state.size <= WAV_HEADER_BYTES or state.size < config.min_bytes:
            problems.append("empty")  # MixMonitor's bare header for a call nobody answered
        else:
            files.append(path)
    if files:
        return Plan(tuple(files))
    return Plan((), min(problems, key=_PROBLEM_ORDER.index) if problems else None)


def unreadable_sample(folders: list[Path], limit: int = 20) -> tuple[int, list[Path]]:
    """How many of the newest files of `folders` (the spool and its newest day folder) were
    opened, and which of them, or of the folders, this user may not read: `check`'s look at
    what the next calls' recordings will be like."""
    denied: list[Path] = []
    files: list[Path] = []
    for folder in folders:
        try:
            entries = [entry for entry in os.scandir(folder) if entry.is_file()]
        except PermissionError:
            denied.append(folder)
            continue
        except OSError:
            continue
        entries.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
        files += [Path(entry.path) for entry in entries[:limit]]
    for path in files:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except PermissionError:
            denied.append(path)
        except OSError:
            continue  # gone meanwhile, or not a file to read: not a question of rights
    return len(files), denied


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except PermissionError:
        raise RecordingDenied.of(path) from None


def locate(base: Path, name: str) -> list[Path]:
    """The files a recording name stands for, oldest first: the file and the others of its
    channel (a paused recording), or every file a pattern matches. A name that matches
    nothing stands for the file it names (not there yet)."""
    if not is_pattern(name):
        path = resolve_inside(base, name)
        return siblings(base, path)
    folder, _, pattern = name.rpartition("/")
    root = _inside(base, folder) if folder else base.resolve()
    head, tail = pattern.split(WILDCARD)
    matches: list[Path] = []
    if root.is_dir():
        for candidate in root.iterdir():
            # matched by hand, not by glob: a value filled into the name may hold `[` or `?`
            text = candidate.name
            if len(text) >= len(head) + len(tail) and text.startswith(head) and \
                    text.endswith(tail):
                try:
                    matches.append(resolve_inside(base, str(candidate)))
                except RefusedPath:
                    continue  # a symbolic link out of the folder, or not a file: not a match
    if not matches:
        return [root / pattern]
    return sorted(set(matches), key=_age)


# the extension is a format's name, which may hold a dash (`.g726-32`)
_UNIQUEID_SUFFIX = re.compile(r"-(\d{9,11}\.\d+)(\.[A-Za-z0-9][A-Za-z0-9-]*)$")


def siblings(base: Path, path: Path) -> list[Path]:
    """The file and the others of the same channel, oldest first.

    Pausing and resuming MixMonitor (FreePBX's *7 / *8) starts a new file that differs only in
    its time stamp, and `recordingfile` names only the last one: they share the
    `-<uniqueid>.<ext>` ending.
    """
    match = _UNIQUEID_SUFFIX.search(path.name)
    if not match or _last_stamp(path.name) is None or not path.parent.is_dir():
        return [path]
    root = base.resolve()
    found = {path}
    shape = _unstamped(path.name)
    for candidate in path.parent.glob(f"*-{match.group(1)}{match.group(2)}"):
        # only the time stamp may differ: `…-pbx2-1795675107.1.wav` (another PBX's call with
        # the same counter) ends like `…-pbx1-1795675107.1.wav` but is not this call's
        if _unstamped(candidate.name) != shape:
            continue
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            continue
        if root in real.parents and real.is_file():
            found.add(real)
    return sorted(found, key=_age)


def _unstamped(name: str) -> str:
    """The name without its time stamp, the last one (a did or number field can look like
    one: `in-12345678-654321-20261126-093827-….wav`)."""
    stamp = _last_stamp(name)
    return name if stamp is None else name[:stamp.start()] + name[stamp.end():]


def _last_stamp(name: str) -> re.Match[str] | None:
    stamps = list(_NAME_STAMP.finditer(name))
    return stamps[-1] if stamps else None


# MixMonitor's `-YYYYMMDD-HHMMSS` before `-<uniqueid>`; the lookahead lets matches abut
_NAME_STAMP = re.compile(r"-(\d{8}-\d{6})(?=-)")


def _age(path: Path) -> tuple[str, float, str]:
    """Oldest first: by the start time MixMonitor put in the name, else by last write."""
    match = _last_stamp(path.name)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = float("inf")
    return (match.group(1) if match else "", mtime, path.name)


def open_for_writing(paths: list[Path]) -> set[Path]:
    """Which of the paths some process holds open for writing, as far as /proc shows.

    A poller that is not root cannot see Asterisk's descriptors; the header and quiet-time
    checks must then suffice.
    """
    wanted = {str(p) for p in paths if _exists(p)}
    busy: set[Path] = set()
    if not wanted:
        return busy
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if target in wanted and _writable(fd_dir.parent / "fdinfo" / entry.name):
                busy.add(Path(target))
    return busy


def _writable(fdinfo: Path) -> bool:
    try:
        for line in fdinfo.read_text().splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR) != 0
    except (OSError, ValueError, IndexError):
        pass
    return False
