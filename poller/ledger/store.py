"""The poller's own state: the watermark and one row per call with its delivery stage.

Each change is its own committed transaction, made right after the step it records succeeded,
so a run killed at any point resumes at the right step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from poller.databases import database_error, missing_table, redact_url
from poller.errors import ConfigError, LedgerUnavailable
from poller.ledger import schema as schema
from poller.ledger.access import create_private, read_only_engine, sqlite_path, sqlite_reader
from poller.ledger.incidents import (
    IncidentChanges,
    Incidents,
    prune_incidents,
    unfinished_openers,
    write_changes,
)
from poller.ledger.schema import (
    Entry,
    Known,
    calls_table,
    entry_of,
    in_range,
    meta_table,
    metadata,
    of_source,
    sqlite_pragmas,
    utcnow,
)
from poller.ledger.settings import Settings, TargetOutage, read_setting, write_setting
from poller.model import KEY_LENGTH, PENDING, Call, Stage, Status

__all__ = ["Entry", "Known", "Ledger", "TargetOutage", "utcnow"]


# how long to wait before looking again when another first run was creating the ledger too
CREATOR_WAITS = (0.2, 0.5, 1.0, 2.0, 4.0)


def made_meanwhile(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database refused a create because another creator was making it too: a
    table, index or column that already exists, the schema_version row inserted twice
    (PostgreSQL also says so as a duplicate in its own catalogue), or a deadlock the server
    broke between two creators (MariaDB, creating the same tables at once)."""
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return any(words in text for words in ("already exists", "duplicate", "deadlock"))


def _pool_for(url: sa.engine.URL) -> type[sa.pool.Pool]:
    # SQLite: keep the connection for the run. Opening one per statement (with its PRAGMAs)
    # cost more than the commits it made; every change is still its own committed transaction.
    # A server database keeps NullPool: a run never holds a connection it may find dead.
    return sa.pool.QueuePool if url.get_backend_name() == "sqlite" else sa.pool.NullPool


def _engine(url: sa.engine.URL) -> sa.engine.Engine:
    if url.get_backend_name() == "sqlite" and sqlite_path(url) is None:
        return _new_engine(url)  # a database that lives in its connection: never shared
    return _shared_engine(url)


@functools.lru_cache(maxsize=8)
def _shared_engine(url: sa.engine.URL) -> sa.engine.Engine:
    # one engine per ledger for the process: `run --follow` opens the ledger every poll, and a
    # new engine would compile every statement afresh. `Ledger.close` (also on a failed open)
    # disposes of its connection; the engine, its compiled statements and its listener stay.
    return _new_engine(url)


def _new_engine(url: sa.engine.URL) -> sa.engine.Engine:
    engine = sa.create_engine(url, poolclass=_pool_for(url))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    return engine


@functools.lru_cache(maxsize=32)
def _update_statement(names: tuple[str, ...]) -> sa.Update:
    """The UPDATE of one call's row setting `names`, built once: every delivered call makes
    one or more, and building the statement anew cost more than the commit it made."""
    return calls_table.update().where(calls_table.c.call_key == sa.bindparam("b_key")).values(
        {name: sa.bindparam(f"b_{name}", type_=calls_table.c[name].type) for name in names})


class Ledger(Settings, Incidents):
    """The state database (any SQLAlchemy URL; SQLite in state.dir by default)."""

    def __init__(self, url: str, create: bool = True, read_only: bool = False,
                 source: str = ""):
        self.source = source  # source.name: this ledger's calls and settings among others'
        try:
            parsed = sa.engine.make_url(url)
            if create:
                create_private(parsed)
            if read_only:
                self.engine = read_only_engine(parsed)
                if self.engine.dialect.name == "sqlite":
                    sa.event.listen(self.engine, "connect", sqlite_reader)
            else:
                self.engine = _engine(parsed)
        except sa.exc.ArgumentError:  # its message quotes the URL, password and all
            raise ConfigError(f"state.url: not a database URL: {redact_url(url)}") from None
        except (sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(f"state.url: {exc}") from None
        self.url = url
        if create:
            try:
                self._prepare()
            except sa.exc.DatabaseError as exc:  # a file that is no database, or a damaged one
                self.engine.dispose()
                if isinstance(exc, sa.exc.OperationalError):  # unreachable, locked
                    raise database_error(exc, url, "state") from None
                raise LedgerUnavailable(
                    f"state database {redact_url(url)}: cannot be read: "
                    f"{getattr(exc, 'orig', exc)} (restore it from a backup, or move it aside "
                    "for a new one)") from None
            except BaseException:
                # a pooled connection left open would outlive a state.db deleted or restored
                # before the next poll of `run --follow`
                self.engine.dispose()
                raise

    def _prepare(self) -> None:
        for wait in (*CREATOR_WAITS, None):
            if self._current():  # the minutely run: one query, not a look at every table
                return
            try:
                self._create_or_upgrade()
                return
            except sa.exc.DBAPIError as exc:
                # another host's first run made the same table or row a moment before:
                # look again, and find the ledger made
                if wait is None or not made_meanwhile(exc):
                    if isinstance(exc, sa.exc.OperationalError):
                        raise database_error(exc, self.url, "state") from None
                    raise
                time.sleep(wait)

    def _create_or_upgrade(self) -> None:
        metadata.create_all(self.engine, checkfirst=True)
        version = self.get("schema_version")
        if version is None:
            self.put("schema_version", str(schema.SCHEMA_VERSION))
            return
        # read at call time: the schema module is where a newer poller's upgrade steps live
        current = schema.known_version(version)
        for target in range(current + 1, schema.SCHEMA_VERSION + 1):
            with self.engine.begin() as conn:
                schema.MIGRATIONS[target](conn)
                conn.execute(meta_table.update().where(meta_table.c.name == "schema_version")
                             .values(value=str(target)))

    def _current(self) -> bool:
        """Whether the ledger is at this version's schema (which has all its tables)."""
        try:
            return self.get("schema_version") == str(schema.SCHEMA_VERSION)
        except sa.exc.DBAPIError as exc:
            if missing_table(exc):
                return False  # no ledger yet: _prepare makes it
            if isinstance(exc, sa.exc.OperationalError):  # unreachable, locked: say so once
                raise database_error(exc, self.url, "state") from None
            return False  # anything else: the full look of _prepare reports it

    @classmethod
    def open_existing(cls, url: str, read_only: bool = False,
                      source: str = "") -> Ledger | None:
        """The ledger if it has been created, without creating anything (dry runs, status);
        `read_only` opens it so (status, check: a monitoring user may only read it)."""
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise ConfigError(f"state.url: not a database URL: {redact_url(url)}") from None
        path = sqlite_path(parsed)
        if path is not None:
            if not Path(path).is_file():
                return None
        ledger = cls(url, create=False, read_only=read_only, source=source)
        try:
            if ledger.exists():
                version = ledger.get("schema_version")
                if version is not None:
                    try:
                        schema.known_version(version)
                    except ConfigError:
                        ledger.close()
                        raise
                return ledger
        except sa.exc.OperationalError as exc:
            ledger.close()
            raise database_error(exc, url, "state") from None
        ledger.close()
        return None

    def exists(self) -> bool:
        """Whether a ledger was made here (its tables, or what is left of them: a ledger that
        lost a table is damaged, not absent)."""
        inspector = sa.inspect(self.engine)
        return inspector.has_table("poller_calls") or inspector.has_table("poller_meta")

    def close(self) -> None:
        self.engine.dispose()

    # -- calls
    def known(self, keys: Iterable[str]) -> dict[str, Stage]:
        """The stage of each key the ledger already holds."""
        return {key: known.stage for key, known in self.known_legs(keys).items()}

    def add(self, call: Call, stage: Stage, note: str | None = None) -> bool:
        """Record a newly seen call; False if another writer recorded it first."""
        return bool(self.add_many([(call, stage, note)]))

    def add_many(self, calls: Sequence[tuple[Call, Stage, str | None]],
                 incidents: IncidentChanges | None = None) -> int:
        """Record newly seen calls in one transaction (nothing has been sent for them yet),
        with the incidents they opened or joined.

        Returns how many were new; a key some other writer recorded meanwhile is left as it is.
        """
        if not calls:
            return 0
        now = utcnow()
        rows = [{"call_key": call.key, "first_calldate": call.first_calldate, "stage": stage,
                 "status": call.status, "payload": json.dumps(call.to_json()), "attempts": 0,
                 "note": note, "updated_at": now, "legs": call.legs, "source": self.source}
                for call, stage, note in calls]
        try:
            with self.engine.begin() as conn:
                conn.execute(calls_table.insert(), rows)
                if incidents:
                    write_changes(conn, incidents)
            return len(rows)
        except sa.exc.IntegrityError:
            if len(rows) == 1 and not incidents:
                return 0
        inserted = {call.key for call, stage, note in calls if self.add(call, stage, note)}
        if incidents and inserted:
            with self.engine.begin() as conn:
                write_changes(conn, incidents.only(inserted))
        return len(inserted)

    def known_legs(self, keys: Iterable[str]) -> dict[str, Known]:
        """What the ledger holds of each key it knows (stage, legs, status, an object)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Known] = {}
        columns = (calls_table.c.call_key, calls_table.c.stage, calls_table.c.legs,
                   calls_table.c.status, calls_table.c.object_id, calls_table.c.first_calldate)
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                query = sa.select(*columns).where(calls_table.c.call_key.in_(wanted[i:i + 500]))
                found.update({row.call_key: Known(row.stage, row.legs, row.status,
                                                  row.object_id is not None,
                                                  row.first_calldate)
                              for row in conn.execute(query)})
        return found

    def sources_of(self, keys: Iterable[str]) -> dict[str, str]:
        """The source (source.name, "" unnamed) each key the ledger holds belongs to."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                query = sa.select(calls_table.c.call_key, calls_table.c.source).where(
                    calls_table.c.call_key.in_(wanted[i:i + 500]))
                found.update({row.call_key: row.source for row in conn.execute(query)})
        return found

    def held_calls(self, key: str) -> dict[str, Call]:
        """The calls held under a key and under its dated keys (model.reused_key): what a
        read of that key's legs may belong to."""
        dated = f"{key}@" if len(key) + 16 <= KEY_LENGTH else key[:KEY_LENGTH - 17]
        query = sa.select(calls_table.c.call_key, calls_table.c.payload).where(sa.or_(
            calls_table.c.call_key == key,
            calls_table.c.call_key.startswith(dated, autoescape=True)))
        with self.engine.connect() as conn:
            return {row.call_key: Call.from_json(json.loads(row.payload))
                    for row in conn.execute(query)}

    def park_unbuilt(self, call: Call, error: str) -> bool:
        """Keep a call whose legs could not be built, parked with the error (a stand-in call
        from calls.stand_in); False if the key is already held."""
        row = {"call_key": call.key, "first_calldate": call.first_calldate,
               "stage": Stage.FAILED,
               "status": call.status, "payload": json.dumps(call.to_json()), "attempts": 1,
               "last_error": error[:2000], "note": "could not be built", "updated_at": utcnow(),
               "legs": 0, "source": self.source}
        try:
            with self.engine.begin() as conn:
                conn.execute(calls_table.insert(), [row])
        except sa.exc.IntegrityError:
            return False
        return True

    def set_legs(self, key: str, legs: int) -> None:
        self._update(key, legs=legs)

    def rebuild(self, call: Call, stage: Stage, fresh: bool = False) -> None:
        """Replace a call nothing has been sent for yet with a fuller build of it; `fresh`
        also forgets its attempts (it replaces a stand-in that was never tried)."""
        values: dict[str, Any] = {}
        if fresh:
            values = {"attempts": 0, "last_error": None, "note": None, "next_attempt_at": None}
        else:
            call = self._keep_decided(call)
        self._update(call.key, stage=stage, status=call.status, legs=call.legs,
                     payload=json.dumps(call.to_json()), first_calldate=call.first_calldate,
                     **values)

    def _keep_decided(self, call: Call) -> Call:
        """The rebuilt call with the caller fields and incident decided when it was first
        recorded: the incidents' rows name it, and a decision is never taken twice."""
        held = self.entry(call.key)
        if held is None:
            return call
        return dataclasses.replace(call, number_e164=held.call.number_e164,
                                   caller=held.call.caller, incident=held.call.incident)

    def entry(self, key: str) -> Entry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(calls_table).where(calls_table.c.call_key == key)).first()
        return entry_of(row) if row else None

    def due(self, now: dt.datetime | None, since: dt.datetime | None = None,
            until: dt.datetime | None = None, limit: int | None = None,
            after: Entry | None = None) -> list[Entry]:
        """Pending calls whose next attempt is due (all of them when `now` is None), oldest
        first; `after` pages on from the last one of the previous page."""
        query = sa.select(calls_table).where(calls_table.c.stage.in_(PENDING),
                                             of_source(self.source))
        if now is not None:
            query = query.where(sa.or_(calls_table.c.next_attempt_at.is_(None),
                                       calls_table.c.next_attempt_at <= now))
        if after is not None:
            # a keyset, not "skip what was seen": calls tried and still due must not end paging
            first = after.call.first_calldate
            query = query.where(sa.or_(
                calls_table.c.first_calldate > first,
                sa.and_(calls_table.c.first_calldate == first,
                        calls_table.c.call_key > after.key)))
        query = in_range(query, since, until).order_by(
            calls_table.c.first_calldate, calls_table.c.call_key)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [entry_of(row) for row in conn.execute(query)]

    def requeue_failed(self, keys: Sequence[str] | None = None, since: dt.datetime | None = None,
                       until: dt.datetime | None = None) -> int:
        """Put parked calls back in line, at the stage their object id says they reached.

        A stand-in for a call that could not be built stays parked: only reading its rows again
        (and building them) replaces it."""
        condition = ((calls_table.c.stage == Stage.FAILED)
                     & (calls_table.c.status != Status.UNBUILT) & of_source(self.source))
        if keys is not None:
            condition = condition & calls_table.c.call_key.in_(list(keys))
        stage = sa.case((calls_table.c.object_id.is_(None), Stage.SEEN), else_=Stage.CREATED)
        query = in_range(calls_table.update().where(condition), since, until).values(
            stage=stage, attempts=0, next_attempt_at=None, updated_at=utcnow())
        with self.engine.begin() as conn:
            count = conn.execute(query).rowcount
        # an incident parked on its own is put back with its call (its key is the call's)
        self.requeue_failed_incidents(keys, since, until)
        return count

    def bring_forward(self, keys: Sequence[str]) -> dict[str, str]:
        """Make the pending calls among `keys` that wait for a later time due at the next run,
        their attempts forgotten (the administrator fixed the cause). Returns each one's
        wait: `after N failed attempts: ERROR`, or its note (a recording not there yet)."""
        if not keys:
            return {}
        waiting = ((calls_table.c.stage.in_(PENDING)) & calls_table.c.call_key.in_(list(keys))
                   & calls_table.c.next_attempt_at.is_not(None))
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(calls_table.c.call_key, calls_table.c.attempts,
                                          calls_table.c.last_error, calls_table.c.note)
                                .where(waiting)).all()
            conn.execute(calls_table.update().where(waiting).values(
                next_attempt_at=None, attempts=0, updated_at=utcnow()))
        return {row.call_key: (f"after {row.attempts} failed attempt"
                               f"{'' if row.attempts == 1 else 's'}: {row.last_error}"
                               if row.attempts else row.note or "waiting")
                for row in rows}

    def advance(self, key: str, stage: Stage, **values: Any) -> None:
        """Record a confirmed step: the new stage plus what the step produced."""
        values.update(stage=stage, updated_at=utcnow())
        self._update_row(key, values)

    def defer(self, key: str, until: dt.datetime, note: str) -> None:
        """Try again later without counting an attempt (e.g. a recording still being written)."""
        self._update(key, next_attempt_at=until, note=note)

    def record_failure(self, entry: Entry, error: str, next_at: dt.datetime | None) -> None:
        """Count a failed attempt; `next_at` None parks the call as failed."""
        values: dict[str, Any] = {"attempts": entry.attempts + 1, "last_error": error[:2000],
                                  "next_attempt_at": next_at}
        if next_at is None:
            values["stage"] = Stage.FAILED
        self._update(entry.key, **values)

    def _update(self, key: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        self._update_row(key, values)

    def _update_row(self, key: str, values: dict[str, Any]) -> None:
        statement = _update_statement(tuple(sorted(values)))
        with self.engine.begin() as conn:
            conn.execute(statement, {"b_key": key, **{f"b_{n}": v for n, v in values.items()}})

    def prune(self, before: dt.datetime) -> int:
        """Forget delivered and skipped calls that began before `before` (naive local).

        The ledger remembers how far it forgot: a backfill there would deliver them again.
        """
        finished = calls_table.c.stage.in_([Stage.DONE, Stage.SKIPPED])
        query = calls_table.delete().where(finished, of_source(self.source)).where(
            calls_table.c.first_calldate < before,
            calls_table.c.call_key.not_in(unfinished_openers()))
        # one transaction: calls forgotten without the guard would let a later backfill
        # deliver them again
        with self.engine.begin() as conn:
            # the incidents first: their source is told by their opening calls' rows
            prune_incidents(conn, before, self.source)
            count = conn.execute(query).rowcount
            previous = read_setting(conn, self.setting("pruned_before"))
            if count and (previous is None or before > dt.datetime.fromisoformat(previous)):
                write_setting(conn, self.setting("pruned_before"), before.isoformat())
        return count

    def counts(self) -> dict[Stage, int]:
        query = sa.select(calls_table.c.stage, sa.func.count()).where(
            of_source(self.source)).group_by(calls_table.c.stage)
        with self.engine.connect() as conn:
            return {Stage(stage): count for stage, count in conn.execute(query)}

    def entries(self, stages: Sequence[Stage], limit: int = 50) -> list[Entry]:
        query = sa.select(calls_table).where(calls_table.c.stage.in_(list(stages)),
                                             of_source(self.source)).order_by(
            calls_table.c.first_calldate).limit(limit)
        with self.engine.connect() as conn:
            return [entry_of(row) for row in conn.execute(query)]


