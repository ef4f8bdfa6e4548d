"""Reading a caller directory: a CSV file or an SQL query, each row's number in E.164."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from poller.callers.caller import Caller
from poller.callers.numbers import normalise
from poller.config.schema import CallersConfig
from poller.databases import query_parameters

log = logging.getLogger("poller")

# how many bad rows one warning quotes; the rest are counted
_QUOTED = 5
_DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal separator is ","
# A CSV directory is read whole, held in memory and copied to state.dir: 100,000 rows take
# about 5 s and 65 MiB on a 2-core PBX, a re-read beside the old copy twice that memory
# (bench/directory.py). A million would take minutes and a gigabyte: past this many rows the
# file is refused, naming the lookup that scales (a table queried with `:numbers`).
MAX_CSV_ROWS = 150_000


class DirectoryError(Exception):
    """The directory could not be read (its text never holds a password)."""


@dataclass(frozen=True)
class Parsed:
    """Directory rows read into callers, with what was wrong with the rest."""

    callers: dict[str, Caller]
    problems: tuple[str, ...] = ()


def parse_rows(columns: Sequence[str], rows: Iterable[tuple[str, Sequence[Any]]], region: str,
               fields: Sequence[str], known: Mapping[str, str] | None = None) -> Parsed:
    """Turn directory rows (each with a label such as "line 7" for messages) into callers
    by E.164 number. A row without a valid number, or repeating a number, is left out and
    reported; the first row of a number wins. A missing column raises DirectoryError.

    `known` maps numbers as written to E.164 from the previous read (same region): phonenumbers
    takes about 0.1 ms a number, over 10 s for 100,000 rows, and a directory's numbers rarely
    change between two reads."""
    known = known or {}
    index = _column_index(columns, fields)
    callers: dict[str, Caller] = {}
    first_seen: dict[str, str] = {}
    bad: list[str] = []
    twice: list[str] = []
    for label, row in rows:
        raw = _text(_cell(row, index["number"])) or ""
        number = known.get(raw) or normalise(raw, region)
        if number is None:
            bad.append(f"{label}: {raw!r} is not a phone number" if raw else f"{label}: no number")
            continue
        if number in callers:
            twice.append(f"{label}: {number} already listed at {first_seen[number]}")
            continue
        first_seen[number] = label
        callers[number] = _subscriber(number, raw, row, index, fields)
    return Parsed(callers, _summary(bad, "not a phone number")
                  + _summary(twice, "number listed twice, the first row kept"))


def _column_index(columns: Sequence[str], fields: Sequence[str]) -> dict[str, int]:
    lowered = [str(c).strip().lower() for c in columns]
    index: dict[str, int] = {}
    for wanted in ("number", "name", "id", *(f.lower() for f in fields)):
        if wanted in lowered:
            index[wanted] = lowered.index(wanted)
        elif wanted != "id":
            raise DirectoryError(f"no column {wanted!r} (columns: {', '.join(lowered)})")
    return index


def _subscriber(number: str, raw: str, row: Sequence[Any], index: Mapping[str, int],
                fields: Sequence[str]) -> Caller:
    extra = {name: _text(_cell(row, index[name.lower()])) for name in fields}
    return Caller(number=number, name=_text(_cell(row, index["name"])) or "",
                      id=_text(_cell(row, index["id"])) or None if "id" in index else None,
                      extra=extra or None, written=raw)


def _cell(row: Sequence[Any], position: int) -> Any:
    return row[position] if position < len(row) else None  # a CSV line with fewer cells


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value).strip()


def _summary(items: list[str], what: str) -> tuple[str, ...]:
    if not items:
        return ()
    quoted = "; ".join(items[:_QUOTED])
    more = f" (and {len(items) - _QUOTED} more)" if len(items) > _QUOTED else ""
    return (f"{len(items)} rows left out, {what}: {quoted}{more}",)


# ---------------------------------------------------------------------------------------------
# reading a CSV file or a query


def read_csv(path: str, region: str, fields: Sequence[str],
             known: Mapping[str, str] | None = None) -> Parsed:
    """Read a directory CSV: a header row, UTF-8 (with or without a BOM), "," ";" or tab.

    A row read from several lines (a quoted value holding line breaks, or a quote never
    closed, which swallows the rest of the file into one value) is reported, by its lines."""
    spans: list[str] = []
    try:
        _refuse_if_too_big(path)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            delimiter = _delimiter(handle.readline())
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            columns = next(reader, [])
            parsed = parse_rows(columns, _csv_rows(reader, spans), region, fields, known)
    except UnicodeDecodeError:
        raise DirectoryError(_not_utf8(path)) from None
    except csv.Error as exc:
        raise DirectoryError(f"not a CSV file: {exc}") from None
    except OSError as exc:
        raise DirectoryError(exc.strerror or str(exc)) from None
    if not spans:
        return parsed
    quoted = "; ".join(spans[:_QUOTED])
    more = f" (and {len(spans) - _QUOTED} more)" if len(spans) > _QUOTED else ""
    problem = (f"{len(spans)} rows read from several lines (a quote left open swallows the "
               f"lines after it): {quoted}{more}")
    return Parsed(parsed.callers, (*parsed.problems, problem))


def _refuse_if_too_big(path: str) -> None:
    """DirectoryError for a file of more than MAX_CSV_ROWS lines after its header, counted
    before anything is parsed (a fraction of a second for a million)."""
    lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            if lines > MAX_CSV_ROWS + 1:
                raise DirectoryError(
                    f"more than {MAX_CSV_ROWS:,} rows: too many to read whole at every refresh "
                    "(minutes, and a gigabyte of memory, for a million); put the callers in a "
                    "database table with their numbers in E.164 and set callers.url and a "
                    "callers.query holding :numbers (e.g. \"SELECT number, name FROM callers "
                    "WHERE number IN :numbers\"), which looks up only each run's numbers")


def _not_utf8(path: str) -> str:
    """Which line of a file is not UTF-8 (read again in binary, a line at a time)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (f"line {number} is not UTF-8 (byte {exc.start + 1} of the line): "
                        "save the file as UTF-8")
    return "not UTF-8: save the file as UTF-8"


def _delimiter(header: str) -> str:
    for delimiter in _DELIMITERS:
        if "number" in (c.strip().strip('"').lower() for c in header.split(delimiter)):
            return delimiter
    return ","  # parse_rows then names the missing column


def _csv_rows(reader: Any, spans: list[str]) -> Iterator[tuple[str, list[str]]]:
    """The rows with the line each starts on; a row read from several lines is noted."""
    while True:
        first = reader.line_num + 1
        row = next(reader, None)
        if row is None:
            return
        if reader.line_num > first:
            spans.append(f"line {first}: lines {first}-{reader.line_num} read as one row")
        if any(cell.strip() for cell in row):  # blank lines
            yield f"line {first}", row


def wants_numbers(config: CallersConfig) -> bool:
    """Whether the query is run per run for the run's numbers (it holds `:numbers`)."""
    return bool(config.url) and "numbers" in query_parameters(config.query)


def read_query(config: CallersConfig, numbers: Sequence[str] | None = None,
               known: Mapping[str, str] | None = None) -> Parsed:
    """Run callers.query on callers.url; with `numbers`, bound to `:numbers` as a list."""
    statement = sa.text(config.query)
    params: dict[str, Any] = {}
    if numbers is not None:
        statement = statement.bindparams(sa.bindparam("numbers", expanding=True))
        params["numbers"] = list(numbers)
    try:
        engine = _engine(config.url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise DirectoryError(f"cannot use the URL: {exc}") from None
    try:
        with engine.connect() as conn:
            # streamed: a 100,000-row CRM table is never held twice in memory
            result = conn.execution_options(stream_results=True, yield_per=2000).execute(
                statement, params)
            columns = list(result.keys())
            rows = ((f"row {n}", tuple(row)) for n, row in enumerate(result, 1))
            return parse_rows(columns, rows, config.country, config.fields, known)
    except sa.exc.SQLAlchemyError as exc:
        raise DirectoryError(_database_text(exc)) from None
    finally:
        engine.dispose()


def _engine(url: str) -> Any:
    parsed = sa.engine.make_url(url)
    kwargs: dict[str, Any] = {"poolclass": sa.pool.NullPool}
    if parsed.get_backend_name() == "mysql":
        kwargs["connect_args"] = {"charset": "utf8mb4", "connect_timeout": 10,
                                  "read_timeout": 120}
        loopback = parsed.host in (None, "", "localhost", "127.0.0.1", "::1")
        if loopback and not any(k.startswith("ssl") for k in parsed.query):
            # as for the source: TLS on loopback buys nothing and costs a per-run lookup more
            # than its query
            kwargs["connect_args"]["ssl_disabled"] = True
    return sa.create_engine(parsed, **kwargs)


def _database_text(exc: Any) -> str:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    # the driver's own message, not SQLAlchemy's text, which appends the statement and its
    # parameters (the run's numbers)
    return str(args[-1]) if args else str(exc).splitlines()[0]


# ---------------------------------------------------------------------------------------------
# the cache in state.dir, and the run's entry point
