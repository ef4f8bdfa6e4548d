"""The ledger's small key/value store, read and written through typed accessors only."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from poller.ledger.schema import meta_table


@dataclass(frozen=True)
class DirectoryOutage:
    """The caller directory could not be read and no usable copy was left: since when, when it
    was last tried, and why."""

    since: dt.datetime  # aware
    tried: dt.datetime  # aware
    error: str


@dataclass(frozen=True)
class TargetOutage:
    """The target did not answer: since when, and what it said last."""

    since: dt.datetime  # naive UTC
    error: str
    until: dt.datetime | None = None  # naive UTC: the target asked for no request before


# what belongs to the ledger as a whole, not to one of the sources sharing it
LEDGER_WIDE = frozenset({"schema_version"})


def setting_name(source: str, name: str) -> str:
    """The row a setting of `source` is kept in: `<source>/<name>` when the source is named
    ("/" is in no setting's own name), the name alone when not (as ledgers made before names
    existed hold it)."""
    return f"{source}/{name}" if source and name not in LEDGER_WIDE else name


class Settings:
    """Watermark, marks and what the runs leave for `status`, kept in `poller_meta`: a named
    source's under its name, so several sources share one ledger without meeting."""

    engine: sa.engine.Engine
    source: str = ""

    def setting(self, name: str) -> str:
        return setting_name(self.source, name)

    def get(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return read_setting(conn, self.setting(name))

    def put(self, name: str, value: str) -> None:
        with self.engine.begin() as conn:
            write_setting(conn, self.setting(name), value)

    def forget(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(meta_table.delete().where(meta_table.c.name == self.setting(name)))

    def watermark(self) -> dt.datetime | None:
        """The calldate (naive local, full precision) up to which calls have been taken."""
        value = self.get("watermark")
        return dt.datetime.fromisoformat(value) if value else None

    def set_watermark(self, mark: dt.datetime) -> None:
        self.put("watermark", mark.isoformat())

    def cursor_mark(self, column: str) -> Any:
        """How far the insertion-ordered `column` has been read (an int or a date-time)."""
        value = self.get(f"cursor:{column}")
        if not value:
            return None
        data = json.loads(value)
        return dt.datetime.fromisoformat(data["value"]) if data["type"] == "datetime" \
            else int(data["value"])

    def set_cursor_mark(self, column: str, mark: Any) -> None:
        data: dict[str, Any]
        if isinstance(mark, dt.datetime):
            data = {"type": "datetime", "value": mark.isoformat()}
        else:
            data = {"type": "int", "value": int(mark)}
        self.put(f"cursor:{column}", json.dumps(data))

    def checkpoint(self, name: str) -> dict[str, Any] | None:
        """How far a file source has read (Master.csv: which file, which byte offset)."""
        value = self.get(f"checkpoint:{name}")
        return json.loads(value) if value else None

    def set_checkpoint(self, name: str, value: dict[str, Any]) -> None:
        self.put(f"checkpoint:{name}", json.dumps(value, sort_keys=True))

    def reconciled_total(self) -> int:
        """Calls taken from Master.csv because the cdr table lacked them, over all runs."""
        return int(self.get("reconciled_total") or 0)

    def add_reconciled(self, count: int) -> None:
        self.put("reconciled_total", str(self.reconciled_total() + count))

    def last_run(self) -> dict[str, Any] | None:
        """The report of the last run (RunReport.to_json), for `status`."""
        value = self.get("last_run")
        return json.loads(value) if value else None

    def set_last_run(self, report: dict[str, Any]) -> None:
        self.put("last_run", json.dumps(report))

    def last_success(self) -> float | None:
        """When a run last finished without failures (a UNIX time), for an alert to watch."""
        value = self.get("last_success")
        return float(value) if value else None

    def set_last_success(self, when: float) -> None:
        self.put("last_success", repr(when))

    def origin(self) -> dt.datetime | None:
        """Where the first run of this ledger started reading (naive local)."""
        value = self.get("origin")
        return dt.datetime.fromisoformat(value) if value else None

    def set_origin(self, origin: dt.datetime) -> None:
        self.put("origin", origin.isoformat())

    def unread_history(self) -> str | None:
        """The note of the rows before the origin that no run read (poller.run.history)."""
        return self.get("unread_history")

    def set_unread_history(self, note: str | None) -> None:
        if note is None:
            self.forget("unread_history")
        else:
            self.put("unread_history", note)

    def warned_on(self) -> dt.date | None:
        """The day configuration warnings were last logged (they are logged once a day)."""
        value = self.get("warned_on")
        return dt.date.fromisoformat(value) if value else None

    def set_warned_on(self, day: dt.date) -> None:
        self.put("warned_on", day.isoformat())

    def pruned_before(self) -> dt.datetime | None:
        """Calls that began before this may have been forgotten (state.retention)."""
        value = self.get("pruned_before")
        return dt.datetime.fromisoformat(value) if value else None

    def target_down(self) -> TargetOutage | None:
        value = self.get("target_down")
        if not value:
            return None
        data = json.loads(value)
        until = data.get("until")
        return TargetOutage(dt.datetime.fromisoformat(data["since"]), data["error"],
                            dt.datetime.fromisoformat(until) if until else None)

    def set_target_down(self, since: dt.datetime, error: str,
                        until: dt.datetime | None = None) -> None:
        data = {"since": since.isoformat(), "error": error[:500]}
        if until is not None:
            data["until"] = until.isoformat()
        self.put("target_down", json.dumps(data))

    def clear_target_down(self) -> None:
        self.forget("target_down")

    def directory_loaded(self) -> dt.datetime | None:
        """When a caller directory was first read whole (later, an unreadable one is an
        outage, not a configuration error)."""
        value = self.get("directory_loaded")
        return dt.datetime.fromisoformat(value) if value else None

    def set_directory_loaded(self, when: dt.datetime) -> None:
        self.put("directory_loaded", when.isoformat())

    def directory_outage(self) -> DirectoryOutage | None:
        value = self.get("directory_down")
        if not value:
            return None
        data = json.loads(value)
        return DirectoryOutage(dt.datetime.fromisoformat(data["since"]),
                               dt.datetime.fromisoformat(data["tried"]), data["error"])

    def set_directory_outage(self, outage: DirectoryOutage) -> None:
        self.put("directory_down", json.dumps({"since": outage.since.isoformat(),
                                               "tried": outage.tried.isoformat(),
                                               "error": outage.error[:500]}))

    def clear_directory_outage(self) -> None:
        self.forget("directory_down")


def read_setting(conn: sa.Connection, name: str) -> str | None:
    """One setting, within a transaction the caller holds."""
    return conn.execute(sa.select(meta_table.c.value).where(meta_table.c.name == name)).scalar()


def write_setting(conn: sa.Connection, name: str, value: str) -> None:
    """Set one setting within a transaction the caller holds (committed with its other work)."""
    updated = conn.execute(meta_table.update().where(meta_table.c.name == name)
                           .values(value=value))
    if updated.rowcount == 0:
        conn.execute(meta_table.insert().values(name=name, value=value))
