"""The ledger's incidents: one row per incident, written with the calls that opened or joined it.

The scan decides a call's incident once, when it records the call, and commits that decision
in the same transaction as the call's row: a call never names an incident the ledger does not
hold, and a run killed before the commit decides again from scratch. Delivery then moves each
incident on its own (pending → created → done), after its opening call's object exists.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from poller.callers.incidents import OpenIncident
from poller.ledger.schema import (
    Entry,
    calls_table,
    entry_of,
    incidents_of,
    incidents_table,
    of_source,
    utcnow,
)
from poller.model import IncidentStage

INCIDENT_PENDING = (IncidentStage.PENDING, IncidentStage.CREATED)


@dataclass
class IncidentChanges:
    """What one batch of new calls did to incidents."""

    incidents: dict[str, OpenIncident] = field(default_factory=dict)  # opened or widened, now
    opened: dict[str, dt.datetime] = field(default_factory=dict)  # key → its first_calldate
    joined: dict[str, list[str]] = field(default_factory=dict)  # key → calls that joined it

    def __bool__(self) -> bool:
        return bool(self.incidents)

    def only(self, inserted: set[str]) -> IncidentChanges:
        """The changes that belong to the calls actually inserted (another writer may have
        recorded some of them first, with decisions of its own)."""
        opened = {k: v for k, v in self.opened.items() if k in inserted}
        joined = {k: [c for c in calls if c in inserted] for k, calls in self.joined.items()}
        joined = {k: calls for k, calls in joined.items() if calls}
        keys = set(opened) | set(joined)
        return IncidentChanges({k: v for k, v in self.incidents.items() if k in keys}, opened,
                               joined)


@dataclass(frozen=True)
class IncidentEntry:
    """An incident due for delivery, with the entry of the call that opened it."""

    key: str
    stage: IncidentStage
    joined: tuple[str, ...]
    object_id: str | None
    attempts: int
    opener: Entry  # its object id is the incident's parent


def naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC)


def write_changes(conn: Any, changes: IncidentChanges) -> None:
    """Record a batch's incident decisions, inside the transaction that records its calls."""
    now = utcnow()
    table = incidents_table
    for key, first_calldate in changes.opened.items():
        incident = changes.incidents[key]
        conn.execute(table.insert().values(
            incident_key=key, number=incident.number,
            first_start=naive_utc(incident.first_start),
            last_start=naive_utc(incident.last_start), first_calldate=first_calldate,
            joined=json.dumps(changes.joined.get(key, [])), stage=IncidentStage.PENDING,
            attempts=0, updated_at=now))
    for key, incident in changes.incidents.items():
        if key in changes.opened:
            continue
        row = conn.execute(sa.select(table.c.joined, table.c.stage)
                           .where(table.c.incident_key == key)).first()
        if row is None:
            continue  # forgotten meanwhile (retention): the call keeps its key all the same
        joined = [*json.loads(row.joined), *changes.joined.get(key, [])]
        # an incident the target holds learns of its new calls: back to created
        stage = IncidentStage.CREATED if row.stage == IncidentStage.DONE else row.stage
        conn.execute(table.update().where(table.c.incident_key == key).values(
            first_start=naive_utc(incident.first_start),
            last_start=naive_utc(incident.last_start), joined=json.dumps(joined), stage=stage,
            updated_at=now))


class Incidents:
    """The incident half of the ledger (a mixin of Ledger)."""

    engine: sa.engine.Engine
    source: str

    def open_incidents(self, numbers: Iterable[str], earliest: dt.datetime,
                       latest: dt.datetime) -> list[OpenIncident]:
        """Incidents of these numbers whose calls span reaches [earliest, latest] (aware)."""
        wanted = sorted(set(numbers))
        if not wanted:
            return []
        table = incidents_table
        found: list[OpenIncident] = []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                query = sa.select(table.c.incident_key, table.c.number, table.c.first_start,
                                  table.c.last_start).where(
                    table.c.number.in_(wanted[i:i + 500]), incidents_of(self.source),
                    table.c.last_start >= naive_utc(earliest),
                    table.c.first_start <= naive_utc(latest))
                found.extend(OpenIncident(row.incident_key, row.number,
                                          _aware(row.first_start), _aware(row.last_start))
                             for row in conn.execute(query))
        return found

    def due_incidents(self, now: dt.datetime | None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, limit: int = 100,
                      after: str | None = None) -> list[IncidentEntry]:
        """Incidents to create or bring up to date whose opening call has its object, oldest
        first (`now` None: those backing off too); `after` pages on by key order."""
        table = incidents_table
        # the call's own columns keep their names (entry_of reads them), the incident's labelled
        query = sa.select(calls_table, table.c.incident_key, table.c.joined,
                          table.c.stage.label("i_stage"), table.c.object_id.label("i_object"),
                          table.c.attempts.label("i_attempts")).join(
            calls_table, calls_table.c.call_key == table.c.incident_key).where(
            table.c.stage.in_(INCIDENT_PENDING), calls_table.c.object_id.is_not(None),
            of_source(self.source))
        if now is not None:
            query = query.where(sa.or_(table.c.next_attempt_at.is_(None),
                                       table.c.next_attempt_at <= now))
        if since is not None:
            query = query.where(table.c.first_calldate >= since)
        if until is not None:
            query = query.where(table.c.first_calldate < until)
        if after is not None:
            query = query.where(table.c.incident_key > after)
        query = query.order_by(table.c.incident_key).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [IncidentEntry(row.incident_key, IncidentStage(row.i_stage),
                              tuple(json.loads(row.joined)), row.i_object, row.i_attempts,
                              entry_of(row)) for row in rows]

    def incident(self, key: str) -> dict[str, Any] | None:
        """An incident's row as a mapping (status and tests)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(incidents_table)
                               .where(incidents_table.c.incident_key == key)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["joined"] = json.loads(data["joined"])
        return data

    def incident_stages(self, keys: Sequence[str]) -> dict[str, IncidentStage]:
        table = incidents_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.incident_key, table.c.stage)
                                .where(table.c.incident_key.in_(list(keys))))
            return {row.incident_key: IncidentStage(row.stage) for row in rows}

    def advance_incident(self, key: str, stage: IncidentStage, **values: Any) -> None:
        """Record a step of an incident the target confirmed."""
        values.update(stage=stage, updated_at=utcnow())
        with self.engine.begin() as conn:
            conn.execute(incidents_table.update()
                         .where(incidents_table.c.incident_key == key).values(**values))

    def record_incident_failure(self, key: str, attempts: int, error: str,
                                next_at: dt.datetime | None) -> None:
        """Count a failed attempt of the incident (never of its call); None parks it."""
        values: dict[str, Any] = {"attempts": attempts, "last_error": error[:2000],
                                  "next_attempt_at": next_at, "updated_at": utcnow()}
        if next_at is None:
            values["stage"] = IncidentStage.FAILED
        with self.engine.begin() as conn:
            conn.execute(incidents_table.update()
                         .where(incidents_table.c.incident_key == key).values(**values))

    def requeue_failed_incidents(self, keys: Sequence[str] | None = None,
                                 since: dt.datetime | None = None,
                                 until: dt.datetime | None = None) -> int:
        """Put parked incidents back in line, at the stage their object id says."""
        table = incidents_table
        query = table.update().where(table.c.stage == IncidentStage.FAILED,
                                     incidents_of(self.source))
        if keys is not None:
            query = query.where(table.c.incident_key.in_(list(keys)))
        if since is not None:
            query = query.where(table.c.first_calldate >= since)
        if until is not None:
            query = query.where(table.c.first_calldate < until)
        stage = sa.case((table.c.object_id.is_(None), IncidentStage.PENDING),
                        else_=IncidentStage.CREATED)
        with self.engine.begin() as conn:
            return conn.execute(query.values(stage=stage, attempts=0, next_attempt_at=None,
                                             updated_at=utcnow())).rowcount

    def incident_counts(self) -> dict[IncidentStage, int]:
        """Incidents by stage; none for a ledger no run has upgraded yet (status reads it
        as it is)."""
        table = incidents_table
        query = sa.select(table.c.stage, sa.func.count()).where(
            incidents_of(self.source)).group_by(table.c.stage)
        try:
            with self.engine.connect() as conn:
                return {IncidentStage(stage): count for stage, count in conn.execute(query)}
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return {}

    def failed_incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        table = incidents_table
        query = sa.select(table.c.incident_key, table.c.attempts, table.c.last_error).where(
            table.c.stage == IncidentStage.FAILED, incidents_of(self.source)).order_by(
            table.c.first_calldate).limit(limit)
        try:
            with self.engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(query)]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return []



def prune_incidents(conn: sa.Connection, before: dt.datetime, source: str) -> int:
    """Forget finished incidents of `source` opened before `before` (naive local), as their
    calls go, within the caller's transaction."""
    table = incidents_table
    query = table.delete().where(table.c.stage == IncidentStage.DONE,
                                 table.c.first_calldate < before, incidents_of(source))
    return conn.execute(query).rowcount


def unfinished_openers() -> Any:
    """The keys of calls whose incident is not done yet: retention keeps them (the incident
    needs their object id and record)."""
    table = incidents_table
    return sa.select(table.c.incident_key).where(table.c.stage != IncidentStage.DONE)
