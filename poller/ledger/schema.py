"""The ledger's tables, their upgrades, and the typed rows read from them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from poller.errors import ConfigError
from poller.model import Call, Stage

SCHEMA_VERSION = 4

metadata = sa.MetaData()

meta_table = sa.Table(
    "poller_meta", metadata,
    # a named source's settings are kept as `<source>/<name>` (Settings.setting)
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

calls_table = sa.Table(
    "poller_calls", metadata,
    sa.Column("call_key", sa.String(96), primary_key=True),
    sa.Column("first_calldate", sa.DateTime, nullable=False, index=True),
    sa.Column("stage", sa.String(16), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("object_id", sa.String(255)),
    sa.Column("recording", sa.String(255)),
    sa.Column("recording_problem", sa.String(32)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("note", sa.String(255)),
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # how many cdr rows the call was built from: more rows later means a late leg arrived
    sa.Column("legs", sa.Integer, nullable=False, server_default="0"),
    # source.name of the PBX the call came through: several share one server ledger
    sa.Column("source", sa.String(16), nullable=False, server_default="", index=True),
)

# one row per incident (design §10), keyed by the call that opened it; the calls that joined
# it carry its key in their own `incident` field
incidents_table = sa.Table(
    "poller_incidents", metadata,
    sa.Column("incident_key", sa.String(96), primary_key=True),
    sa.Column("number", sa.String(32), nullable=False, index=True),  # E.164
    sa.Column("first_start", sa.DateTime, nullable=False),  # naive UTC, of its earliest call
    sa.Column("last_start", sa.DateTime, nullable=False, index=True),  # ... and of its latest
    sa.Column("first_calldate", sa.DateTime, nullable=False),  # naive local, the opening call's
    sa.Column("joined", sa.Text, nullable=False),  # JSON list of the keys of the calls joined
    sa.Column("stage", sa.String(16), nullable=False, index=True),
    sa.Column("object_id", sa.String(255)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


# upgrades of the ledger's own schema, applied in order at start: version -> step
def _add_legs_column(conn: Any) -> None:
    if not has_column(conn, "poller_calls", "legs"):
        conn.exec_driver_sql("ALTER TABLE poller_calls ADD COLUMN legs INTEGER NOT NULL DEFAULT 0")


def _add_incidents_table(conn: Any) -> None:
    # the caller fields and the incident of a call live in its payload (absent there: null)
    incidents_table.create(conn, checkfirst=True)


def has_column(conn: Any, table: str, column: str) -> bool:
    return column in {found["name"] for found in sa.inspect(conn).get_columns(table)}


def _add_source_column(conn: Any) -> None:
    # each step looks before it changes: MySQL commits DDL at once, so a run killed after the
    # ALTER but before the version moved (or a second host upgrading at the same moment) must
    # find the step done, not fail on it
    if not has_column(conn, "poller_calls", "source"):
        conn.exec_driver_sql("ALTER TABLE poller_calls ADD COLUMN source VARCHAR(16) NOT NULL "
                             "DEFAULT ''")
    index = next(i for i in calls_table.indexes if i.name == "ix_poller_calls_source")
    if index.name not in {i["name"] for i in sa.inspect(conn).get_indexes("poller_calls")}:
        index.create(conn)
    # a named source's settings carry its name: room for it
    if conn.dialect.name == "mysql":
        conn.exec_driver_sql("ALTER TABLE poller_meta MODIFY name VARCHAR(128) NOT NULL")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE poller_meta ALTER COLUMN name TYPE VARCHAR(128)")


MIGRATIONS: dict[int, Callable[[Any], None]] = {2: _add_legs_column, 3: _add_incidents_table,
                                                4: _add_source_column}


def utcnow() -> dt.datetime:
    """Naive UTC, as the ledger stores times."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Known(NamedTuple):
    """What the ledger holds of a call the scan meets again."""

    stage: Stage
    legs: int
    status: str
    has_object: bool
    first_calldate: dt.datetime | None = None  # tells a reused key from the same call


@dataclass(frozen=True)
class Entry:
    """One call's row in the ledger."""

    key: str
    stage: Stage
    call: Call
    object_id: str | None
    recording: str | None
    recording_problem: str | None
    attempts: int
    last_error: str | None
    note: str | None
    next_attempt_at: dt.datetime | None


def known_version(version: str) -> int:
    """The ledger's schema version, if this poller can work with it (older ones it upgrades)."""
    if int(version) > SCHEMA_VERSION:
        raise ConfigError(f"the ledger has schema version {version}; this poller knows "
                          f"{SCHEMA_VERSION}: upgrade the poller")
    return int(version)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `status` read while a run writes; NORMAL sync is still crash-safe under WAL
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def of_source(source: str) -> Any:
    """The calls of one source (source.name; "" for an unnamed one)."""
    return calls_table.c.source == source


def incidents_of(source: str) -> Any:
    """The incidents one source's calls opened (an incident is keyed by its opening call)."""
    return incidents_table.c.incident_key.in_(
        sa.select(calls_table.c.call_key).where(of_source(source)))


def in_range(query: Any, since: dt.datetime | None, until: dt.datetime | None) -> Any:
    if since is not None:
        query = query.where(calls_table.c.first_calldate >= since)
    if until is not None:
        query = query.where(calls_table.c.first_calldate < until)
    return query


def entry_of(row: Any) -> Entry:
    return Entry(
        key=row.call_key, stage=Stage(row.stage), call=Call.from_json(json.loads(row.payload)),
        object_id=row.object_id, recording=row.recording,
        recording_problem=row.recording_problem, attempts=row.attempts,
        last_error=row.last_error, note=row.note, next_attempt_at=row.next_attempt_at,
    )
