"""What every source is: the small interface a run reads cdr legs through.

A source hands out legs by "position" along one axis: calldate, an insertion-ordered column of
a table (`source.cursor`), or the byte offset in Master.csv (OFFSET). A run asks for windows of
positions, and keeps how far it got as the source's own mark: a watermark column value for a
table, a checkpoint (which file, which offset) for Master.csv.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from poller.model import Leg

# the axis of Master.csv: byte offsets of its lines (insertion-ordered, like an id)
OFFSET = "offset"


class Marks(Protocol):
    """Where a source keeps its mark: the ledger's settings (or a dry run's stand-in)."""

    def cursor_mark(self, column: str) -> Any: ...

    def set_cursor_mark(self, column: str, mark: Any) -> None: ...

    def checkpoint(self, name: str) -> dict[str, Any] | None: ...

    def set_checkpoint(self, name: str, value: dict[str, Any]) -> None: ...


class Source(Protocol):
    """A PBX's cdr legs, read-only."""

    cursor: str  # the axis live runs read by: "calldate", a column, or OFFSET
    backfill_column: str  # the axis a backfill (`run --since`) reads by
    warnings: list[str]  # what the source makes of the configuration, said once a day

    def read_window(self, lo: Any, hi: Any | None, column: str = "calldate") -> list[Leg]:
        """All legs with lo <= position < hi, in order."""

    def next_position(self, after: Any, column: str) -> Any:
        """The first position at or after `after` that holds a leg, or None."""

    def newest_calldate(self) -> dt.datetime | None:
        """The latest calldate (naive local), for the clock check and `status`."""

    def newest_position(self, column: str) -> Any:
        """The position of the newest leg, or None when there is none."""

    def first_position_since(self, column: str, calldate: dt.datetime) -> Any:
        """Where reading starts for the calls from `calldate` on (a fresh ledger's origin,
        a backfill's start)."""

    def keys_before(self, keys: Sequence[str], lo: Any, hi: Any,
                    column: str = "calldate") -> set[str]:
        """Which call keys have a leg with lo <= position < hi."""

    def cursor_mark(self, marks: Marks) -> Any:
        """How far live runs have read along `cursor` (None: never)."""

    def set_cursor_mark(self, marks: Marks, position: Any) -> None:
        """Keep how far this run read; only ever moved forward."""

    def describe(self) -> str:
        """What was found, for `check`: the server and driver, or the file."""

    def close(self) -> None:
        """Release connections and files."""
