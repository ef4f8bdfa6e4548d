"""The directory's last good copy in state.dir: a JSON file, written atomically, 0600."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poller.callers.caller import Caller
from poller.localfiles import make_folders, reason

log = logging.getLogger("poller")

CACHE_FORMAT = 2


@dataclass(frozen=True)
class CacheState:
    """The directory's last good copy, with when it was read and what was already warned."""

    callers: Mapping[str, Caller]
    loaded_at: dt.datetime
    failed_at: dt.datetime | None
    warned: tuple[str, ...]


class Cache:
    """The JSON copy of the directory in state.dir, written atomically."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.fingerprint = fingerprint

    def read(self) -> CacheState | None:
        """The copy, or None when there is none for this configuration (or it is damaged)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("format") != CACHE_FORMAT or data.get("fingerprint") != self.fingerprint:
                return None
            return CacheState(
                Entries(data["subscribers"]),
                dt.datetime.fromisoformat(data["loaded_at"]),
                dt.datetime.fromisoformat(data["failed_at"]) if data["failed_at"] else None,
                tuple(data["warned"]))
        except FileNotFoundError:
            return None
        except PermissionError as exc:  # not damaged: a root run left it root's
            log.warning("%s: cannot read the directory copy: %s: chown it to the poller's "
                        "user", self.path, reason(exc))
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: ignoring a damaged directory copy (%s)", self.path, exc)
            return None

    def write(self, state: CacheState) -> None:
        data = {
            "format": CACHE_FORMAT,
            "fingerprint": self.fingerprint,
            "loaded_at": state.loaded_at.isoformat(),
            "failed_at": state.failed_at.isoformat() if state.failed_at else None,
            "warned": list(state.warned),
            "subscribers": entries(state.callers),  # the key of every copy written so far
        }
        try:
            make_folders(self.path.parent)
            # mkstemp makes it 0600: the copy holds customers' names and numbers
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                             dir=self.path.parent)
        except OSError as exc:
            log.warning("%s: cannot keep the directory's copy: %s", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("%s: cannot keep the directory's copy: %s", self.path, exc)
            Path(temporary).unlink(missing_ok=True)


class Entries(Mapping[str, Caller]):
    """The copy's callers as read from JSON, made into Callers only when asked for:
    a run looks up its few numbers, never builds 100,000 objects."""

    def __init__(self, entries: dict[str, list[Any]]):
        self.entries = entries

    def __getitem__(self, number: str) -> Caller:
        name, ident, extra, written = self.entries[number]
        return Caller(number=number, name=name, id=ident, extra=extra or None,
                      written=written)

    def __contains__(self, number: object) -> bool:
        return number in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def entries(callers: Mapping[str, Caller]) -> dict[str, list[Any]]:
    if isinstance(callers, Entries):
        return callers.entries
    return {n: [s.name, s.id, dict(s.extra or {}), s.written] for n, s in callers.items()}


def written_index(callers: Mapping[str, Caller]) -> dict[str, str]:
    """Number as written → E.164, from the previous copy."""
    if isinstance(callers, Entries):
        return {entry[3]: number for number, entry in callers.entries.items() if entry[3]}
    return {s.written: number for number, s in callers.items() if s.written}
