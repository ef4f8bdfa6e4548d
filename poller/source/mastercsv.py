"""Asterisk's Master.csv, read as a log shipper tails a log (a Source).

A checkpoint in the ledger names the file (device, inode and a hash of its first line) and the
byte offset reached. A run reads complete lines only, from the checkpoint on; the run's own
marks put the checkpoint at the first line of the earliest call still settling, so its lines
are read again. Asterisk appends a call's lines when it ends, so the offset is an
insertion-ordered cursor: a run reads it as a table's id column is read, in windows of bytes.

Rotation: a file renamed away (logrotate's `create`) is found by its identity among
`Master.csv*` in the same folder and finished, then the files after it are read from their
start; a file truncated in place (`copytruncate`) is read from its start, with a warning. The
positions a run hands out run on across the files it reads: the first file's offsets, then
each next file's offsets after the previous file's end.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import gzip
import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from poller.config.schema import SourceConfig
from poller.errors import ConfigError, ServiceUnavailable
from poller.logs import escape_controls
from poller.model import Leg
from poller.source.csvlines import (
    LONGEST,
    Line,
    columns_for,
    fields_of,
    fields_of_many,
    leg_of,
    settings_of,
    split_lines,
)
from poller.source.interface import OFFSET, Marks

log = logging.getLogger("poller")

CHUNK = 1024 * 1024
HEAD = 4096  # the first line's bytes that make a file's identity


@dataclass(frozen=True)
class Identity:
    """Which file: its device and inode, and a hash of its first line (a file truncated and
    written anew keeps its inode; a compressed copy keeps only its first line)."""

    device: int
    inode: int
    head: str

    def same_file(self, other: Identity) -> bool:
        return (self.device, self.inode) == (other.device, other.inode)


@dataclass
class Segment:
    """One file of the stream a run reads: positions base + offset for its offsets."""

    path: Path
    identity: Identity
    handle: IO[bytes]
    base: int  # the position of the file's first byte
    begin: int  # the offset reading starts at
    limit: int  # the offset after the last newline (complete lines end before it)
    size: int  # the bytes there were when the run opened it

    @property
    def first(self) -> int:
        return self.base + self.begin

    @property
    def last(self) -> int:
        return self.base + self.limit


class CsvSource:
    """Master.csv and, where the checkpoint or a backfill needs them, its rotated copies."""

    cursor = OFFSET
    backfill_column = OFFSET

    def __init__(self, config: SourceConfig, backfill: bool = False, checkpoint: str = "csv"):
        self.config = config
        self.path = Path(config.csv.path)
        self.backfill = backfill
        self.name = checkpoint  # the ledger keeps the checkpoint under this name
        self.warnings: list[str] = []
        if config.incoming.did_set:
            self.warnings.append(
                "source.incoming.did_set is on but Master.csv has no did column: only "
                "incoming.contexts and incoming.channels recognise incoming calls; set "
                "did_set = false to say that is intended")
        self.segments: list[Segment] | None = None
        self.mark: int | None = None
        self.marks: Marks | None = None
        # (position, the first line at or after it): where parsing may start without guessing
        self._starts: list[tuple[int, int]] = []
        self._said: set[str] = set()  # warnings about lines, once a run each
        self._columns: tuple[str, ...] | None = None
        self.skipped = 0  # lines a first run left to a backfill

    # -- the Source interface
    def cursor_mark(self, marks: Marks) -> int | None:
        """The checkpoint as a position of this run's stream (opened on first use)."""
        if self.segments is None:
            self.marks = marks
            self._open(marks.checkpoint(self.name))
        return self.mark

    def set_cursor_mark(self, marks: Marks, position: int) -> None:
        segment = self._segment_at(position)
        marks.set_checkpoint(self.name, {
            "path": str(segment.path), "device": segment.identity.device,
            "inode": segment.identity.inode, "head": segment.identity.head,
            "offset": position - segment.base, "fields": len(self._columns or ())})
        self.mark = position

    def read_window(self, lo: int, hi: int | None, column: str = OFFSET) -> list[Leg]:
        lines = list(self._lines(lo, hi))
        values = fields_of_many([line.raw for line in lines], self.config.legacy_encoding)
        return [leg for line, fields in zip(lines, values, strict=True)
                if (leg := self._leg(line, fields=fields)) is not None]

    def next_position(self, after: int, column: str) -> int | None:
        for segment in self._stream():
            if after < segment.last:
                return max(after, segment.first)
        return None

    def newest_position(self, column: str) -> int | None:
        ends = [s.last for s in self._stream() if s.last > s.first]
        return ends[-1] - 1 if ends else None

    def first_position_since(self, column: str, calldate: dt.datetime) -> int | None:
        """The first line of a call that ended at or after `calldate` (lines are written as
        calls end): a fresh checkpoint or a backfill starts there."""
        skipped, found = 0, None
        stream = self._stream()
        for line in self._lines(stream[0].first if stream else 0, None):
            leg = self._leg(line, quiet=True)
            if leg is None:
                continue  # not a call's line: said when it is read, if it is
            if leg.end >= calldate:
                found = line.position
                break
            skipped += 1
        self.skipped = skipped
        if not self.backfill and self.marks is not None:
            # where the next runs go on from, even when nothing new is there yet: a quiet
            # PBX must not make every run read the whole file again
            self.set_cursor_mark(self.marks, found if found is not None else
                                 self._end())
            if skipped:
                log.warning(
                    "%s: first run: %d older lines (calls that ended before %s) left out; "
                    "`poller run --since DATE` delivers them (it reads the rotated copies "
                    "too)", self.path, skipped, calldate.isoformat(sep=" "))
        return found

    def keys_before(self, keys: Sequence[str], lo: int, hi: int,
                    column: str = OFFSET) -> set[str]:
        """Keys with a line in [lo, hi), read from the first place this run knows a line
        starts at or after `lo`: never before the checkpoint. Every call with a line before
        it was taken already, or held back with the checkpoint at its first line; only a
        first run leaves older lines out, on purpose."""
        wanted = set(keys)
        if not wanted:
            return set()
        known = [start for _, start in self._starts if start >= lo]
        if not known:
            return set()
        return {leg.key for line in self._lines(min(known), hi)
                if (leg := self._leg(line, quiet=True)) is not None and leg.key in wanted}

    def newest_calldate(self) -> dt.datetime | None:
        """When the newest call in the file started (its last complete line)."""
        last = self._last_line()
        leg = self._leg(last, quiet=True) if last is not None else None
        return leg.calldate if leg is not None else None

    def describe(self) -> str:
        """`Master.csv /var/log/…: 1.2 MiB, 21 fields (loguniqueid = yes, …)`."""
        size = _stat(self.path).st_size
        last = self._last_line()
        columns = columns_for(fields_of(last.raw, self.config.legacy_encoding),
                              self.config.csv.columns) if last is not None else None
        shape = settings_of(columns) if columns else "no complete line yet"
        return f"Master.csv {self.path}: {size:,} bytes, {shape}"

    def close(self) -> None:
        for segment in self.segments or ():
            with contextlib.suppress(OSError):
                segment.handle.close()
        self.segments = []

    # -- which files, from where
    def _stream(self) -> list[Segment]:
        if self.segments is None:
            if not self.backfill:
                raise RuntimeError("the checkpoint is read first (cursor_mark)")
            self._open(None)
        assert self.segments is not None
        return self.segments

    def _open(self, checkpoint: dict[str, Any] | None) -> None:
        current = self._current()
        self.segments = []
        self._columns_said(checkpoint)
        if self.backfill:
            for path in self._copies():
                self._add(path, 0)
            self._add(current, 0)
            return
        if checkpoint is None:
            self._add(current, 0)
            return
        saved = Identity(checkpoint["device"], checkpoint["inode"], checkpoint["head"])
        offset = int(checkpoint["offset"])
        now = _identity(current)
        if now.same_file(saved):
            if now.head != saved.head or _stat(current).st_size < offset:
                log.warning(
                    "%s was truncated in place (logrotate copytruncate?): read from its "
                    "start; lines written between the copy and the truncation may be "
                    "missing — `poller reconcile --since DATE` or `run --since DATE` reads "
                    "the copy", current)
                offset = 0
            self.mark = self._add(current, offset).base + offset
            return
        older = self._find(saved)
        if older is None:
            log.warning(
                "%s: the file read up to byte %d (inode %d) is no longer among %s*: lines "
                "it got after the last run may be missing (`poller run --since DATE` reads "
                "the rotated copies); reading the new file from its start", current, offset,
                saved.inode, current.name)
            self.mark = self._add(current, 0).base
            return
        segment = self._add(older, offset)
        self.mark = segment.base + offset
        log.info("%s was rotated to %s: finishing it from byte %d, then the newer files",
                 current, older.name, offset)
        for path in self._copies(newer_than=older):
            self._add(path, 0)
        self._add(current, 0)

    def _columns_said(self, checkpoint: dict[str, Any] | None) -> None:
        """The column set chosen: said when it is new (a first run, a changed cdr.conf);
        no uniqueid in the newest line is a configuration error."""
        last = self._last_line()
        if last is None:
            return
        fields = fields_of(last.raw, self.config.legacy_encoding)
        columns = columns_for(fields, self.config.csv.columns)
        if columns is None:
            return  # its own warning, when the line is read
        if "uniqueid" not in columns:
            raise ConfigError(
                f"{self.path}: its lines have {settings_of(columns)}: without uniqueid no "
                "call has a key; set loguniqueid = yes in cdr.conf's [csv] section (then "
                "`module reload cdr`)")
        if checkpoint is None or checkpoint.get("fields") != len(columns):
            log.info("%s: lines of %s: %s", self.path, settings_of(columns), ", ".join(columns))
        self._columns = columns

    def _current(self) -> Path:
        try:
            info = _stat(self.path)
        except FileNotFoundError:
            raise ServiceUnavailable(
                f"source.csv.path {self.path} not found (Asterisk writes it with the first "
                "CDR once cdr_csv is loaded; a rotation without `create`?): nothing read, "
                "nothing charged") from None
        except PermissionError:
            raise ConfigError(f"source.csv.path {self.path} is not readable by this user "
                              "(add it to the asterisk group)") from None
        if not _regular(info.st_mode):
            raise ServiceUnavailable(f"source.csv.path {self.path} is not a regular file "
                                     "(a folder?): nothing read, nothing charged")
        return self.path

    def _copies(self, newer_than: Path | None = None) -> list[Path]:
        """The rotated copies beside the file (`Master.csv.1`, `Master.csv-20261126.gz`),
        oldest first; only those written after `newer_than`."""
        folder = self.path.parent
        found = []
        for path in folder.glob(f"{_glob_escape(self.path.name)}?*"):
            with contextlib.suppress(OSError):
                info = path.stat()
                if _regular(info.st_mode) and path != newer_than:
                    found.append((info.st_mtime, path.name, path))
        found.sort()
        if newer_than is not None:
            since = newer_than.stat().st_mtime
            found = [item for item in found if item[0] >= since]
        return [path for _, _, path in found]

    def _find(self, saved: Identity) -> Path | None:
        """The checkpoint's file among the copies: by inode, else (compressed since) by its
        first line."""
        copies = self._copies()
        for path in copies:
            with contextlib.suppress(OSError):
                if _identity(path).same_file(saved):
                    return path
        for path in copies:
            if path.suffix == ".gz":
                with contextlib.suppress(OSError):
                    if _identity(path).head == saved.head:
                        return path
        return None

    def _add(self, path: Path, begin: int) -> Segment:
        assert self.segments is not None
        try:
            handle = _open_bytes(path)  # kept open for the run: close() closes it
            identity = _identity(path, handle)
            size, limit = _extent(handle)
        except OSError as exc:
            raise ServiceUnavailable(f"{path}: {exc.strerror or exc}") from None
        base = self.segments[-1].base + self.segments[-1].size if self.segments else 0
        if 0 < limit < size and path != self.path:
            self._say(f"{path}: its last {size - limit} bytes are an unfinished line (Asterisk "
                      "stopped mid-write?): not read")
        segment = Segment(path, identity, handle, base, min(begin, limit), limit, size)
        self.segments.append(segment)
        self._starts.append((segment.first, segment.first))
        self._starts.sort()
        return segment

    def _segment_at(self, position: int) -> Segment:
        segments = self._stream()
        for segment in reversed(segments):
            if segment.base <= position:
                return segment
        return segments[0]

    def _end(self) -> int:
        stream = self._stream()
        return stream[-1].last if stream else 0

    # -- lines
    def _lines(self, lo: int, hi: int | None) -> Iterator[Line]:
        """The complete lines starting in [lo, hi), in order."""
        for segment in self._stream():
            if segment.last <= lo or (hi is not None and hi <= segment.first):
                continue
            start = max(self._start_at(lo), segment.first)
            for line in self._read(segment, start):
                if hi is not None and line.position >= hi:
                    self._learn(hi, line.position)
                    return
                if line.position >= lo:
                    yield line
        if hi is not None:
            self._learn(hi, max(hi, self._end()))

    def _start_at(self, position: int) -> int:
        """Where to parse from to find the lines at or after `position`: the start of the
        first line at or after the nearest place this run knows about (never before the
        first one: the checkpoint, or a file's start)."""
        index = bisect.bisect_right(self._starts, (position, float("inf"))) - 1
        if index < 0:
            return self._starts[0][1] if self._starts else 0
        return self._starts[index][1]

    def _learn(self, position: int, start: int) -> None:
        item = (position, start)
        index = bisect.bisect_left(self._starts, item)
        if index == len(self._starts) or self._starts[index] != item:
            self._starts.insert(index, item)

    def _read(self, segment: Segment, start: int) -> Iterator[Line]:
        """The complete lines of one file from `start` (a line's start) to its limit."""
        handle = segment.handle
        offset = start - segment.base
        handle.seek(offset)
        pending = b""
        while offset < segment.limit:
            chunk = handle.read(min(CHUNK, segment.limit - offset))
            if not chunk:
                self._shrank(segment, offset)
                return
            offset += len(chunk)
            buffer = pending + chunk
            lines, used = split_lines(buffer, segment.base + offset - len(buffer))
            yield from lines
            pending = buffer[used:]
        if pending and len(pending) > LONGEST:
            self._say(f"{segment.path}: {len(pending)} bytes from byte "
                      f"{segment.limit - len(pending)} never make a complete line")

    def _shrank(self, segment: Segment, offset: int) -> None:
        """The file became shorter than it was when the run opened it: truncated meanwhile.
        This run stops there; the next one finds it truncated and reads it from its start."""
        self._say(f"{segment.path} shrank to {offset} bytes while it was read (truncated by "
                  "logrotate copytruncate?): the next run reads it from its start")
        segment.limit = max(offset, segment.begin)

    def _leg(self, line: Line, quiet: bool = False,
             fields: list[str] | None = None) -> Leg | None:
        """The leg of a line; None for a line that is none (said, unless `quiet`)."""
        if fields is None:
            fields = fields_of(line.raw, self.config.legacy_encoding)
        if not quiet and b"\x00" in line.raw:
            self._say(f"{self._where(line)}: NUL bytes removed from the line (a crash left a "
                      "hole in the file?)")
        columns = columns_for(fields, self.config.csv.columns)
        if columns is None or "uniqueid" not in columns:
            if not quiet:
                why = "no uniqueid (loguniqueid = no then)" if columns else \
                    f"{len(fields)} fields, which no cdr_csv column set has"
                self._say(f"{self._where(line)}: line left out, {why}: {_excerpt(line.raw)}")
            return None
        try:
            return leg_of(fields, columns, line.position, self.config.name)
        except ValueError:
            if not quiet:
                self._say(f"{self._where(line)}: line left out, its start is no date-time: "
                          f"{_excerpt(line.raw)}")
            return None

    def _where(self, line: Line) -> str:
        segment = self._segment_at(line.position)
        return f"{segment.path} byte {line.position - segment.base}"

    def _last_line(self) -> Line | None:
        """The last complete line of the file (read from its end)."""
        try:
            with open(self._current(), "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(size - LONGEST, 0))
                tail = handle.read()
        except OSError as exc:
            raise ServiceUnavailable(f"{self.path}: {exc.strerror or exc}") from None
        cut = tail.rfind(b"\n")
        if cut < 0:
            return None
        start = tail.rfind(b"\n", 0, cut) + 1
        return Line(size - len(tail) + start, tail[start:cut])

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.warning("%s", escape_controls(message))


def _stat(path: Path) -> os.stat_result:
    return path.stat()


def _regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _open_bytes(path: Path) -> IO[bytes]:
    """A file's bytes; a compressed copy's (`.gz`) as they were before compression."""
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def _identity(path: Path, handle: IO[bytes] | None = None) -> Identity:
    """A file's identity; of a compressed copy, the file's own inode and the first line of
    what it holds."""
    if handle is None:
        with _open_bytes(path) as own:
            return _identity(path, own)
    info = path.stat() if isinstance(handle, gzip.GzipFile) else os.fstat(handle.fileno())
    handle.seek(0)
    first = handle.read(HEAD).split(b"\n", 1)[0]
    return Identity(info.st_dev, info.st_ino, hashlib.sha256(first).hexdigest())


def _extent(handle: IO[bytes]) -> tuple[int, int]:
    """The file's size now, and the offset after its last newline."""
    size = handle.seek(0, os.SEEK_END)
    position = size
    while position > 0:
        step = min(CHUNK, position)
        handle.seek(position - step)
        block = handle.read(step)
        cut = block.rfind(b"\n")
        if cut >= 0:
            return size, position - step + cut + 1
        position -= step
    return size, 0


def _glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _excerpt(raw: bytes) -> str:
    text = raw[:120].decode("utf-8", errors="replace")
    return text + ("…" if len(raw) > 120 else "")

