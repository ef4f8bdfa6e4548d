"""Reads of the cdr table with SQLAlchemy Core: bounded calldate windows, raw text decoded.

Every read is a range on the calldate index (present in the stock FreePBX and Asterisk
schemas), so the cost of one window does not grow with the size of the table. The table may
live in MySQL/MariaDB (PyMySQL), PostgreSQL (psycopg 3) or SQLite; a PostgreSQL calldate of
type `timestamp with time zone` is an instant, read in source.timezone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from poller.config.schema import SourceConfig
from poller.databases import database_error, missing_table, redact_url
from poller.errors import ConfigError, SourceSchemaError
from poller.model import Leg, source_id
from poller.source.interface import Marks
from poller.source.text import decode_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

REQUIRED = ("calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp",
            "duration", "billsec", "disposition", "uniqueid")
OPTIONAL = ("linkedid", "sequence", "did", "cnum", "cnam", "recordingfile", "accountcode",
            "userfield")
INTEGER_COLUMNS = ("duration", "billsec", "sequence")


def _to_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _to_datetime(value: Any, zone: ZoneInfo | None = None) -> dt.datetime | None:
    """A calldate as the PBX's wall clock shows it (naive): an aware value (PostgreSQL's
    `timestamp with time zone`) is an instant, shown in `zone`."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None and not value.microsecond:
            return value  # what MySQL's DATETIME gives: already as wanted
        if value.tzinfo is not None and zone is not None:
            value = value.astimezone(zone)
        return value.replace(tzinfo=None, microsecond=0)
    if isinstance(value, (str, bytes)):  # SQLite text, or MySQL's zero date
        text = value.decode() if isinstance(value, bytes) else value
        try:
            return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=None, microsecond=0)
        except ValueError:
            return None
    return None


class CdrSource:
    """The cdr table of one PBX, read-only (a Source)."""

    backfill_column = "calldate"  # a backfill's range is in dates, whatever the cursor

    def __init__(self, config: SourceConfig, needed: Iterable[str] = ()):
        self.config = config
        self.zone = ZoneInfo(config.timezone)
        self.engine = _make_engine(config.url, config.timezone)
        # one connection for the whole run: connecting (a TLS context, a handshake) costs more
        # than an idle run's queries
        self._conn: Connection | None = None
        self.cursor = config.cursor
        self.warnings: list[str] = []  # what the table's columns make of the configuration
        self.table = self._reflect(set(needed) | {self.cursor})
        self._columns = list(self.table.c.keys())
        # what _leg does with each column of a row, by position: a backfill converts millions
        self._integers = [(i, n) for i, n in enumerate(self._columns) if n in INTEGER_COLUMNS]
        self._texts = [(i, n) for i, n in enumerate(self._columns)
                       if n not in INTEGER_COLUMNS and n not in ("calldate", self.cursor)]
        self._calldate_at = self._columns.index("calldate")
        # the Leg fields no column of this table fills, at their defaults
        self._absent = {f.name: f.default for f in dataclasses.fields(Leg)
                        if f.name not in self._columns and f.name not in (
                            "calldate", "linkedid", "sequence")}
        self._absent["pbx"] = config.name  # no column: the source's name keys its calls
        self._cursor_at = self._columns.index(self.cursor)
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._statements: dict[tuple[str, bool], tuple[str, list[str] | None]] = {}
        # PostgreSQL keeps text in the database's encoding and hands out str (bytes for a
        # SQL_ASCII database); a cast to bytea would read backslashes as escapes
        self._binary_text = self.engine.dialect.name != "postgresql"

    def _reflect(self, needed: set[str]) -> sa.TableClause:
        # the column names are all we need: `SELECT * … LIMIT 0` costs one round trip, where
        # SQLAlchemy's MySQL reflection parses SHOW CREATE TABLE with dozens of regexes
        name = self.config.table
        probe = sa.select(sa.text("*")).select_from(sa.table(name)).limit(0)
        try:
            present = {key.lower() for key in self._connection().execute(probe).keys()}
        except (sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            if missing_table(exc):
                raise SourceSchemaError(
                    f"source: table {name!r} not found in {redact_url(self.config.url)}") from None
            if isinstance(exc, sa.exc.OperationalError):
                raise _classify(exc, self.config.url) from None
            raise ConfigError(f"source: {exc.orig} ({redact_url(self.config.url)})") from None
        for column in sorted(set(REQUIRED) | needed):
            if column not in present:
                raise SourceSchemaError(
                    f"source: the {name!r} table has no column {column!r} "
                    f"(columns: {', '.join(sorted(present))})")
        self.warnings = []
        if self.config.incoming.did_set and "did" not in present:
            # the did rule could never match: say so rather than skip every call it would take
            self.warnings.append(
                f"source.incoming.did_set is on but the {name!r} table has no 'did' column "
                "(Asterisk's own schema): only incoming.contexts and incoming.channels "
                "recognise incoming calls; set did_set = false to say that is intended")
        wanted = [c for c in REQUIRED + OPTIONAL if c in present]
        if self.config.cursor not in wanted:
            wanted.append(self.config.cursor)
        return sa.table(name, *(sa.column(c) for c in wanted))

    def cursor_mark(self, marks: Marks) -> Any:
        return marks.cursor_mark(self.cursor)

    def set_cursor_mark(self, marks: Marks, position: Any) -> None:
        marks.set_cursor_mark(self.cursor, position)

    def describe(self) -> str:
        """`table 'cdr' on PostgreSQL 15.2 through psycopg 3.2.1`."""
        dialect = self._connection().dialect
        server = {"mysql": "MariaDB" if getattr(dialect, "is_mariadb", False) else "MySQL",
                  "postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(dialect.name,
                                                                      dialect.name)
        version = ".".join(str(part) for part in dialect.server_version_info or ()
                           if isinstance(part, int))
        return (f"table {self.config.table!r} on {server} {version or '?'} through "
                f"{driver_version(dialect.driver)}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    def _select(self) -> sa.Select[Any]:
        cols: list[Any] = []
        for name in self._columns:
            column = self.table.c[name]
            if name in INTEGER_COLUMNS or name in ("calldate", self.cursor) or \
                    not self._binary_text:
                cols.append(column)
            else:
                # read the bytes as stored: a utf8mb4 connection would turn latin1 columns
                # holding cp1251 bytes into valid but garbled UTF-8
                cols.append(sa.cast(column, sa.LargeBinary).label(name))
        return sa.select(*cols)

    def _bound(self, value: Any) -> Any:
        if self._sqlite and isinstance(value, dt.datetime):
            # SQLite compares text: a bound without fraction orders correctly against both
            # "YYYY-MM-DD HH:MM:SS" and SQLAlchemy's "….ffffff" spellings
            return sa.literal(value.strftime("%Y-%m-%d %H:%M:%S"), sa.String)
        return value

    def window_query(self, lo: Any, hi: Any | None, column: str = "calldate") -> sa.Select[Any]:
        """The rows with lo <= column < hi, in a total order (ties on the column kept)."""
        position = self.table.c[column]
        query = self._select().where(position >= self._bound(lo))
        if hi is not None:
            query = query.where(position < self._bound(hi))
        order: list[Any] = [position, self.table.c.uniqueid]
        if "sequence" in self.table.c:
            order.append(self.table.c.sequence)
        return query.order_by(*order)

    def read_window(self, lo: Any, hi: Any | None, column: str = "calldate") -> list[Leg]:
        """All legs of one window; the caller keeps windows small enough to hold.

        Run on the driver's own cursor under the run's connection, with the statement
        compiled once per shape: a backfill reads thousands of windows, and SQLAlchemy's
        work per execution and per row cost as much CPU as the driver's own parsing.
        """
        sql, names = self._window_statement(column, hi is not None)
        values = {"lo": self._raw_bound(lo), "hi": self._raw_bound(hi)}
        params: Any = [values[name] for name in names] if names is not None else values
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            cursor = self._connection().connection.cursor()
            try:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        except dbapi.Error as exc:
            error = sa.exc.DBAPIError.instance(sql, params, exc, dbapi.Error)
            if isinstance(error, sa.exc.OperationalError):
                raise _classify(error, self.config.url) from None
            raise error from None
        legs = [self._leg(row) for row in rows]
        return [leg for leg in legs if leg is not None]

    def _window_statement(self, column: str, bounded: bool) -> tuple[str, list[str] | None]:
        """The window query as the driver takes it, with its parameters `lo` (and `hi`) in
        order for a positional paramstyle (None: by name)."""
        shape = (column, bounded)
        if shape not in self._statements:
            position = self.table.c[column]
            query = self._select().where(position >= sa.bindparam("lo"))
            if bounded:
                query = query.where(position < sa.bindparam("hi"))
            order: list[Any] = [position, self.table.c.uniqueid]
            if "sequence" in self.table.c:
                order.append(self.table.c.sequence)
            compiled = query.order_by(*order).compile(dialect=self.engine.dialect)
            names = list(compiled.positiontup or ()) if compiled.positional else None
            self._statements[shape] = (compiled.string, names)
        return self._statements[shape]

    def _raw_bound(self, value: Any) -> Any:
        """A bound as the driver takes it (_bound's, without SQLAlchemy's literal)."""
        if self._sqlite and isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return value

    def next_position(self, after: Any, column: str) -> Any:
        """The first value of `column` at or after `after` (an index probe), to jump over
        empty stretches."""
        query = sa.select(sa.func.min(self.table.c[column])).where(
            self.table.c[column] >= self._bound(after))
        return self._position(self._scalar(query))

    def newest_calldate(self) -> dt.datetime | None:
        return _to_datetime(self._scalar(sa.select(sa.func.max(self.table.c.calldate))),
                            self.zone)

    def rows_before(self, calldate: dt.datetime) -> tuple[int, dt.datetime | None]:
        """How many rows began before `calldate`, and the oldest one's calldate: what a fresh
        ledger's first run does not read (asked once, by that run)."""
        return self._count(self.table.c.calldate < self._bound(calldate), sa.func.min)

    def rows_since(self, calldate: dt.datetime) -> tuple[int, dt.datetime | None]:
        """How many rows have a calldate from `calldate` on, and the newest of them: what
        follow mode compares between polls to know that no row came (one index range)."""
        return self._count(self.table.c.calldate >= self._bound(calldate), sa.func.max)

    def _count(self, where: Any, edge: Any) -> tuple[int, dt.datetime | None]:
        """How many rows match `where`, and their calldate `edge` (sa.func.min or max)."""
        query = sa.select(sa.func.count(), edge(self.table.c.calldate)).where(where)
        try:
            count, found = self._connection().execute(query).one()
        except sa.exc.OperationalError as exc:
            raise _classify(exc, self.config.url) from None
        return int(count or 0), _to_datetime(found, self.zone)

    def newest_position(self, column: str) -> Any:
        return self._position(self._scalar(sa.select(sa.func.max(self.table.c[column]))))

    def first_position_since(self, column: str, calldate: dt.datetime) -> Any:
        """Where a cursor starts for calls from `calldate` on (a fresh ledger's origin)."""
        query = sa.select(sa.func.min(self.table.c[column])).where(
            self.table.c.calldate >= self._bound(calldate))
        return self._position(self._scalar(query))

    def _position(self, value: Any) -> Any:
        """A cursor value: an integer or a date-time, else the column is no cursor."""
        if value is None or isinstance(value, (int, dt.datetime)) and not isinstance(value, bool):
            return _to_datetime(value, self.zone) if isinstance(value, dt.datetime) else value
        parsed = _to_datetime(value)
        if parsed is None:
            raise SourceSchemaError(
                f"source.cursor: column {self.cursor!r} holds {value!r}, neither an "
                "insertion-ordered integer nor a date-time")
        return parsed

    def keys_before(self, keys: Sequence[str], lo: Any, hi: Any,
                    column: str = "calldate") -> set[str]:
        """Which call keys have a leg with lo <= column < hi (calls that began earlier)."""
        if not keys:
            return set()
        # the keys as the PBX wrote them: a named source's keys carry its name
        wanted = {source_id(self.config.name, key): key for key in keys}
        position = self.table.c[column]
        ids = [self.table.c.uniqueid]
        if "linkedid" in self.table.c:
            ids.append(self.table.c.linkedid)
        found: set[str] = set()
        raw = list(wanted)
        for i in range(0, len(raw), 500):
            chunk = raw[i:i + 500]
            query = sa.select(*ids).distinct().where(
                position >= self._bound(lo), position < self._bound(hi),
                sa.or_(*(c.in_(chunk) for c in ids)))
            try:
                rows = self._connection().execute(query).fetchall()
            except sa.exc.OperationalError as exc:
                raise _classify(exc, self.config.url) from None
            for row in rows:
                linkedid = row[1] if len(row) > 1 else ""
                key = (linkedid or "").strip() or (row[0] or "").strip()
                if key in wanted:
                    found.add(wanted[key])
        return found

    def _legs(self, query: sa.Select[Any]) -> Iterator[Leg]:
        try:
            rows = self._connection().execute(query).fetchall()
        except sa.exc.OperationalError as exc:
            raise _classify(exc, self.config.url) from None
        for row in rows:
            leg = self._leg(row)
            if leg is not None:
                yield leg

    def _scalar(self, query: sa.Select[Any]) -> Any:
        try:
            return self._connection().execute(query).scalar()
        except sa.exc.OperationalError as exc:
            raise _classify(exc, self.config.url) from None

    def _leg(self, row: Sequence[Any]) -> Leg | None:
        """A row of `_select()` (its columns in `self._columns` order) as a Leg."""
        raw_calldate = row[self._calldate_at]
        calldate = _to_datetime(raw_calldate, self.zone)
        if calldate is None:
            log.warning("cdr row with unusable calldate %r skipped", raw_calldate)
            return None
        texts = None
        if self._binary_text:
            try:
                # the common case first: every text column UTF-8 bytes (the binary casts)
                texts = [(name, row[index].decode()) for index, name in self._texts]
            except (AttributeError, UnicodeDecodeError):
                pass  # a NULL, or a legacy code page: column by column
        if texts is None:
            encoding = self.config.legacy_encoding
            texts = [(name, decode_text(row[index], encoding)) for index, name in self._texts]
        values: dict[str, Any] = {**self._absent, "calldate": calldate, "linkedid": "",
                                  "sequence": 0, "pbx": self.config.name}
        values.update(texts)
        for index, name in self._integers:
            values[name] = _to_int(row[index])
        if self.cursor != "calldate":
            values["cursor"] = self._position(row[self._cursor_at])
        return Leg.of_values(values)

    def _connection(self) -> Connection:
        if self._conn is None:
            try:
                self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            except sa.exc.OperationalError as exc:
                raise _classify(exc, self.config.url) from None
        return self._conn


@functools.lru_cache(maxsize=4)
def _make_engine(url: str, timezone: str = "UTC") -> Engine:
    # one Engine per URL for the process: `run --follow` polls with it again and again, and a
    # new one would redo the dialect's set-up queries and compile every statement afresh.
    # Its NullPool holds no connection between runs, so sharing it shares nothing else.
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"source.url: not a database URL: {redact_url(url)}") from None
    kwargs: dict[str, Any] = {"poolclass": sa.pool.NullPool}
    backend = parsed.get_backend_name()
    if backend == "mysql":
        kwargs["connect_args"] = {"charset": "utf8mb4", "connect_timeout": 10,
                                  "read_timeout": 300}
        if _loopback(parsed) and not any(k.startswith("ssl") for k in parsed.query):
            # PyMySQL tries TLS whenever the server offers it; on loopback that buys nothing
            # and building its context costs more than an idle run's queries
            kwargs["connect_args"]["ssl_disabled"] = True
    elif backend == "postgresql":
        # the session's zone is the PBX's: a `timestamp with time zone` calldate then reads
        # as its wall clock, and a window's naive bounds mean the same instants. Read-only and
        # bounded, like the MySQL session above.
        kwargs["connect_args"] = {
            "connect_timeout": 10,
            "options": f"-c TimeZone={timezone} -c default_transaction_read_only=on "
                       "-c statement_timeout=300000"}
    try:
        return sa.create_engine(parsed, **kwargs)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        hint = (" (PostgreSQL needs psycopg 3: pip install 'asterisk-cdr-poller[postgresql]', "
                "and a URL postgresql+psycopg://…)" if backend == "postgresql" else "")
        raise ConfigError(f"source.url: {exc}{hint}") from None
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"source.url: {exc}") from None


def driver_version(driver: str) -> str:
    """`psycopg 3.2.1`, `pymysql 1.1.1`, `pysqlite 3.40.1` (SQLite's own version)."""
    import importlib.metadata
    import sqlite3

    if driver == "pysqlite":
        return f"sqlite3 (SQLite {sqlite3.sqlite_version})"
    try:
        return f"{driver} {importlib.metadata.version(driver)}"
    except importlib.metadata.PackageNotFoundError:
        return driver


def _loopback(url: sa.engine.URL) -> bool:
    return url.host in (None, "", "localhost", "127.0.0.1", "::1") or "unix_socket" in url.query


def _classify(exc: sa.exc.OperationalError, url: str) -> Exception:
    return database_error(exc, url, "source")
