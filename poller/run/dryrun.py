"""The ledger a dry run works on: what the real one holds, with this run's writes in memory.

A dry run walks the same code as a real run; only its ledger differs, so nothing it would do
is written, not even a ledger that does not exist yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from poller.callers.incidents import OpenIncident
from poller.ledger.incidents import IncidentChanges
from poller.ledger.schema import Entry, Known
from poller.ledger.store import Ledger
from poller.model import Call, Stage


class DryRunLedger:
    """Reads through to the real ledger (if there is one); keeps writes to itself."""

    def __init__(self, base: Ledger | None):
        self.base = base
        self.calls: dict[str, tuple[Call, Stage]] = {}  # recorded or rebuilt by this run
        self.marks: dict[str, Any] = {}

    # -- marks and settings
    def watermark(self) -> dt.datetime | None:
        return self._mark("watermark", lambda b: b.watermark())

    def set_watermark(self, mark: dt.datetime) -> None:
        self.marks["watermark"] = mark

    def cursor_mark(self, column: str) -> Any:
        return self._mark(f"cursor:{column}", lambda b: b.cursor_mark(column))

    def set_cursor_mark(self, column: str, mark: Any) -> None:
        self.marks[f"cursor:{column}"] = mark

    def checkpoint(self, name: str) -> dict[str, Any] | None:
        return self._mark(f"checkpoint:{name}", lambda b: b.checkpoint(name))

    def set_checkpoint(self, name: str, value: dict[str, Any]) -> None:
        self.marks[f"checkpoint:{name}"] = value

    def origin(self) -> dt.datetime | None:
        return self._mark("origin", lambda b: b.origin())

    def set_origin(self, origin: dt.datetime) -> None:
        self.marks["origin"] = origin

    def set_unread_history(self, note: str | None) -> None:
        self.marks["unread_history"] = note

    def warned_on(self) -> dt.date | None:
        return self._mark("warned_on", lambda b: b.warned_on())

    def set_warned_on(self, day: dt.date) -> None:
        self.marks["warned_on"] = day

    def pruned_before(self) -> dt.datetime | None:
        return self.base.pruned_before() if self.base is not None else None

    def _mark(self, name: str, read: Any) -> Any:
        if name in self.marks:
            return self.marks[name]
        return read(self.base) if self.base is not None else None

    # -- calls
    def known_legs(self, keys: Iterable[str]) -> dict[str, Known]:
        wanted = list(keys)
        found = self.base.known_legs(wanted) if self.base is not None else {}
        for key in wanted:
            if key in self.calls:
                call, stage = self.calls[key]
                found[key] = Known(stage, call.legs, call.status, False, call.first_calldate)
        return found

    def held_calls(self, key: str) -> dict[str, Call]:
        found = self.base.held_calls(key) if self.base is not None else {}
        found.update((held, call) for held, (call, _) in self.calls.items()
                     if held == key or held.startswith(f"{key}@"))
        return found

    def open_incidents(self, numbers: Iterable[str], earliest: dt.datetime,
                       latest: dt.datetime) -> list[OpenIncident]:
        return self.base.open_incidents(numbers, earliest, latest) if self.base else []

    def add_many(self, calls: Sequence[tuple[Call, Stage, str | None]],
                 incidents: IncidentChanges | None = None) -> int:
        known = self.known_legs(call.key for call, _, _ in calls)
        new = [(call, stage) for call, stage, _ in calls if call.key not in known]
        self.calls.update((call.key, (call, stage)) for call, stage in new)
        return len(new)

    def park_unbuilt(self, call: Call, error: str) -> bool:
        return False  # a real run would park it; a dry run lists only what it would deliver

    def set_legs(self, key: str, legs: int) -> None:
        pass

    def rebuild(self, call: Call, stage: Stage, fresh: bool = False) -> None:
        self.calls[call.key] = (call, stage)

    def due(self, now: dt.datetime | None, since: dt.datetime | None = None,
            until: dt.datetime | None = None) -> list[Call]:
        """The calls a real run would go on to deliver, oldest first."""
        stored: list[Entry] = self.base.due(now, since, until) if self.base is not None else []
        due = {entry.key: entry.call for entry in stored if entry.key not in self.calls}
        due.update((key, call) for key, (call, stage) in self.calls.items()
                   if stage == Stage.SEEN and call.starts_within(since, until))
        return sorted(due.values(), key=lambda call: (call.first_calldate, call.key))

