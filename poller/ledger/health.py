"""What in a ledger a run could not use: a file that is no database, a table or column gone,
a setting or a row that does not read. `poller check` reports each; `status` names the first
error it meets instead of stopping on it."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from poller.ledger.schema import calls_table, entry_of, incidents_table, meta_table, metadata
from poller.model import PENDING, IncidentStage, Stage, Status

# rows of one kind quoted by name; the rest are counted
_QUOTED = 3


def error_text(exc: BaseException) -> str:
    """An error reading the ledger, without SQLAlchemy's statement and background link."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return f"{type(orig).__name__}: {orig}"
    text = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def problems(ledger: Any) -> list[str]:
    """Everything found wrong, each naming where; [] for a ledger every run can use."""
    try:
        found = list(_tables(ledger.engine))
    except sa.exc.SQLAlchemyError as exc:
        return [f"{_where(ledger)}: cannot be read: {error_text(exc)}"]
    if found:  # the rest would only repeat that a table or column is gone
        return found
    for check in (_settings, _calls, _incidents):
        try:
            found.extend(check(ledger))
        except (sa.exc.SQLAlchemyError, ValueError, TypeError, KeyError) as exc:
            found.append(f"{check.__name__.strip('_')}: cannot be read: {error_text(exc)}")
    return found


def _where(ledger: Any) -> str:
    return sa.engine.make_url(ledger.url).render_as_string(hide_password=True)


def _tables(engine: sa.engine.Engine) -> Iterator[str]:
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            yield f"table {table.name} is missing (restore the ledger from a backup, or move " \
                  "it aside for a new one)"
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                yield f"table {table.name} has no column {column.name}"


def _settings(ledger: Any) -> Iterator[str]:
    readers: dict[str, Callable[[], Any]] = {
        "watermark": ledger.watermark, "origin": ledger.origin, "last_run": ledger.last_run,
        "last_success": ledger.last_success, "warned_on": ledger.warned_on,
        "pruned_before": ledger.pruned_before, "target_down": ledger.target_down,
        "directory_loaded": ledger.directory_loaded, "directory_down": ledger.directory_outage,
    }
    with ledger.engine.connect() as conn:
        cursors = [row[0] for row in conn.execute(
            sa.select(meta_table.c.name).where(meta_table.c.name.startswith(
                ledger.setting("cursor:"), autoescape=True)))]
    for name in cursors:
        column = name.removeprefix(ledger.setting("cursor:"))
        readers[f"cursor:{column}"] = functools.partial(ledger.cursor_mark, column)
    for name, read in readers.items():
        try:
            read()
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            yield f"setting {name} does not read ({error_text(exc)}): {ledger.get(name)!r:.80}"


def _calls(ledger: Any) -> Iterator[str]:
    stages, statuses = set(Stage), set(Status)
    bad: dict[str, list[str]] = {}
    columns = (calls_table.c.call_key, calls_table.c.stage, calls_table.c.status)
    dates = (calls_table.c.first_calldate, calls_table.c.next_attempt_at,
             calls_table.c.updated_at)
    with ledger.engine.connect() as conn:
        # the dates as stored, each read on its own: one that does not read names its row
        raw = conn.execute(sa.select(*columns, *(sa.cast(d, sa.String) for d in dates)))
        for key, stage, status, *stored in raw:
            if stage not in stages:
                bad.setdefault(f"an unknown stage {stage!r}", []).append(key)
            if status not in statuses:
                bad.setdefault(f"an unknown status {status!r}", []).append(key)
            for column, text in zip(dates, stored, strict=True):
                if text is not None and not _reads_as_date(text):
                    bad.setdefault(f"a {column.name} that is no date-time", []).append(key)
        # what delivery reads whole: the calls still on their way, and the parked ones
        if not bad:
            query = sa.select(calls_table).where(
                calls_table.c.stage.in_([*PENDING, Stage.FAILED]))
            for row in conn.execute(query):
                try:
                    entry_of(row)
                except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
                    bad.setdefault(f"a record that does not read ({error_text(exc)})",
                                   []).append(row.call_key)
    yield from _said("call", bad)


def _incidents(ledger: Any) -> Iterator[str]:
    stages = set(IncidentStage)
    bad: dict[str, list[str]] = {}
    dates = (incidents_table.c.first_start, incidents_table.c.last_start,
             incidents_table.c.first_calldate)
    with ledger.engine.connect() as conn:
        query = sa.select(incidents_table.c.incident_key, incidents_table.c.stage,
                          incidents_table.c.joined, *(sa.cast(d, sa.String) for d in dates))
        for key, stage, joined, *stored in conn.execute(query):
            if stage not in stages:
                bad.setdefault(f"an unknown stage {stage!r}", []).append(key)
            try:
                if not isinstance(json.loads(joined), list):
                    raise ValueError("not a list")
            except (ValueError, TypeError):
                bad.setdefault("a list of joined calls that does not read", []).append(key)
            for column, text in zip(dates, stored, strict=True):
                if text is not None and not _reads_as_date(text):
                    bad.setdefault(f"a {column.name} that is no date-time", []).append(key)
    yield from _said("incident", bad)


def _reads_as_date(text: str) -> bool:
    """Whether a stored date-time reads back as one (SQLite keeps them as text)."""
    try:
        dt.datetime.fromisoformat(str(text))
    except ValueError:
        return False
    return True


def _said(kind: str, bad: dict[str, list[str]]) -> Iterator[str]:
    for what, keys in bad.items():
        quoted = ", ".join(keys[:_QUOTED]) + (f" and {len(keys) - _QUOTED} more"
                                               if len(keys) > _QUOTED else "")
        yield f"{len(keys)} {kind} rows hold {what}: {quoted}"
