"""The subscriber directory (`[callers]`): who is calling, by E.164 number.

A CSV file or an SQL query on any SQLAlchemy URL, both normalised with `numbers.normalise`.
A whole directory is read at most once per `callers.refresh` and kept in a JSON file in
state.dir, so a run every minute does not re-read a large CRM; a query holding `:numbers` is
run once per run instead, for the run's numbers only. What cannot be read is a configuration
error while there is no last good copy, and a warning (the copy used) once there is one.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CallersConfig, query_parameters, redact_url
from .errors import ConfigError
from .numbers import normalise

log = logging.getLogger("poller")

CACHE_NAME = "callers.json"
_CACHE_FORMAT = 2
# per-run lookups keep this many recent answers as their last good copy
_PER_RUN_KEEP = 10_000
# how many bad rows one warning quotes; the rest are counted
_QUOTED = 5
_DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal separator is ","


class DirectoryError(Exception):
    """The directory could not be read (its text never holds a password)."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A known caller: the directory row of one E.164 number."""

    number: str  # E.164
    name: str
    id: str | None = None
    extra: Mapping[str, str | None] | None = None  # callers.fields → value
    written: str = field(default="", compare=False)  # the number as the directory wrote it

    def fields(self, names: Sequence[str]) -> dict[str, str | None]:
        """The call fields `caller_id`, `caller_name`, `caller_<column>`."""
        return caller_fields(self, names)


def caller_fields(subscriber: Subscriber | None, names: Sequence[str]) -> dict[str, str | None]:
    """The caller fields of a call: all null for an unknown caller."""
    extra = (subscriber.extra or {}) if subscriber else {}
    values: dict[str, str | None] = {
        "caller_id": subscriber.id if subscriber else None,
        "caller_name": subscriber.name if subscriber else None,
    }
    for name in names:
        values[f"caller_{name}"] = extra.get(name) if subscriber else None
    return values


@dataclass(frozen=True)
class Parsed:
    """Directory rows read into subscribers, with what was wrong with the rest."""

    subscribers: dict[str, Subscriber]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lookup:
    """The subscribers among one run's numbers."""

    matches: Mapping[str, Subscriber]
    loaded_at: dt.datetime | None  # when the copy used was read (None: nothing to look up)
    stale: bool = False  # the directory could not be read: the last good copy was used

    def find(self, number_e164: str | None) -> Subscriber | None:
        return self.matches.get(number_e164) if number_e164 else None


# ---------------------------------------------------------------------------------------------
# rows → subscribers (pure)


def parse_rows(columns: Sequence[str], rows: Iterable[tuple[str, Sequence[Any]]], region: str,
               fields: Sequence[str], known: Mapping[str, str] | None = None) -> Parsed:
    """Turn directory rows (each with a label such as "line 7" for messages) into subscribers
    by E.164 number. A row without a valid number, or repeating a number, is left out and
    reported; the first row of a number wins. A missing column raises DirectoryError.

    `known` maps numbers as written to E.164 from the previous read (same region): phonenumbers
    takes about 0.1 ms a number, over 10 s for 100,000 rows, and a directory's numbers rarely
    change between two reads."""
    known = known or {}
    index = _column_index(columns, fields)
    subscribers: dict[str, Subscriber] = {}
    first_seen: dict[str, str] = {}
    bad: list[str] = []
    twice: list[str] = []
    for label, row in rows:
        raw = _text(_cell(row, index["number"])) or ""
        number = known.get(raw) or normalise(raw, region)
        if number is None:
            bad.append(f"{label}: {raw!r} is not a phone number" if raw else f"{label}: no number")
            continue
        if number in subscribers:
            twice.append(f"{label}: {number} already listed at {first_seen[number]}")
            continue
        first_seen[number] = label
        subscribers[number] = _subscriber(number, raw, row, index, fields)
    return Parsed(subscribers, _summary(bad, "not a phone number")
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
                fields: Sequence[str]) -> Subscriber:
    extra = {name: _text(_cell(row, index[name.lower()])) for name in fields}
    return Subscriber(number=number, name=_text(_cell(row, index["name"])) or "",
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
    """Read a directory CSV: a header row, UTF-8 (with or without a BOM), "," ";" or tab."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            delimiter = _delimiter(handle.readline())
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            columns = next(reader, [])
            return parse_rows(columns, _csv_rows(reader), region, fields, known)
    except UnicodeDecodeError as exc:
        raise DirectoryError(f"not UTF-8 (byte {exc.start} of a line): save it as UTF-8"
                             ) from None
    except csv.Error as exc:
        raise DirectoryError(f"not a CSV file: {exc}") from None
    except OSError as exc:
        raise DirectoryError(exc.strerror or str(exc)) from None


def _delimiter(header: str) -> str:
    for delimiter in _DELIMITERS:
        if "number" in (c.strip().strip('"').lower() for c in header.split(delimiter)):
            return delimiter
    return ","  # parse_rows then names the missing column


def _csv_rows(reader: Any) -> Iterator[tuple[str, list[str]]]:
    for row in reader:
        if any(cell.strip() for cell in row):  # blank lines
            yield f"line {reader.line_num}", row


def wants_numbers(config: CallersConfig) -> bool:
    """Whether the query is run per run for the run's numbers (it holds `:numbers`)."""
    return bool(config.url) and "numbers" in query_parameters(config.query)


def read_query(config: CallersConfig, numbers: Sequence[str] | None = None,
               known: Mapping[str, str] | None = None) -> Parsed:
    """Run callers.query on callers.url; with `numbers`, bound to `:numbers` as a list."""
    import sqlalchemy as sa

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
    import sqlalchemy as sa

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


def lookup(config: CallersConfig, state_dir: str | os.PathLike[str], numbers: Iterable[str],
           now: dt.datetime) -> Lookup:
    """The subscribers among a run's normalised numbers.

    Reads the directory when its copy in state.dir is older than callers.refresh (or the
    query holds `:numbers`), warns once about bad rows, and falls back to the last good copy
    with a warning when the directory cannot be read. Raises ConfigError when it cannot be
    read and there is no copy. Reads nothing when there are no numbers.
    """
    wanted = sorted({n for n in numbers if n})
    if not config.enabled or not wanted:
        return Lookup({}, None)
    cache = Cache(Path(state_dir) / CACHE_NAME, fingerprint(config))
    if wants_numbers(config):
        return _lookup_per_run(config, cache, wanted, now)
    directory, loaded_at, stale = load(config, cache, now)
    return Lookup({n: directory[n] for n in wanted if n in directory}, loaded_at, stale)


def load(config: CallersConfig, cache: Cache, now: dt.datetime
         ) -> tuple[Mapping[str, Subscriber], dt.datetime, bool]:
    """The whole directory, from its copy while fresh: (subscribers, loaded at, stale)."""
    state = cache.read()
    if state is not None and not _due(state, config.refresh, now):
        return state.subscribers, state.loaded_at, state.failed_at is not None
    known = _written_index(state.subscribers) if state else None
    try:
        parsed = read_csv(config.csv, config.country, config.fields, known) if config.csv \
            else read_query(config, None, known)
    except DirectoryError as exc:
        return _fall_back(config, cache, state, now, str(exc))
    warned = _warn_once(config, parsed.problems, state.warned if state else ())
    cache.write(CacheState(parsed.subscribers, now, None, warned))
    return parsed.subscribers, now, False


def _due(state: CacheState, refresh: float, now: dt.datetime) -> bool:
    last = state.failed_at or state.loaded_at  # after a failure, try again a refresh later
    return (now - last).total_seconds() >= refresh


def _fall_back(config: CallersConfig, cache: Cache, state: CacheState | None,
               now: dt.datetime, reason: str
               ) -> tuple[Mapping[str, Subscriber], dt.datetime, bool]:
    if state is None:
        raise ConfigError(f"{describe(config)}: cannot read the directory: {reason}")
    log.warning("%s: cannot read the directory (%s); using the copy read %s, next try in %s",
                describe(config), reason, state.loaded_at.isoformat(timespec="seconds"),
                _span(config.refresh))
    cache.write(CacheState(state.subscribers, state.loaded_at, now, state.warned))
    return state.subscribers, state.loaded_at, True


def _lookup_per_run(config: CallersConfig, cache: Cache, wanted: list[str],
                    now: dt.datetime) -> Lookup:
    state = cache.read()
    try:
        parsed = read_query(config, wanted)
    except DirectoryError as exc:
        if state is None:
            raise ConfigError(f"{describe(config)}: cannot read the directory: {exc}") from None
        log.warning("%s: cannot read the directory (%s); using the answers of earlier runs",
                    describe(config), exc)
        known = {n: state.subscribers[n] for n in wanted if n in state.subscribers}
        return Lookup(known, state.loaded_at, True)
    asked = set(wanted)  # a query may return more rows than it was asked for
    found = {n: s for n, s in parsed.subscribers.items() if n in asked}
    warned = _warn_once(config, parsed.problems, state.warned if state else ())
    kept = _remember(state.subscribers if state else {}, wanted, found)
    cache.write(CacheState(kept, now, None, warned))
    return Lookup(found, now, False)


def _remember(old: Mapping[str, Subscriber], asked: Sequence[str],
              found: Mapping[str, Subscriber]) -> dict[str, Subscriber]:
    """The last good answers for a per-run directory: this run's answers (a number asked and
    not found is no longer known) after the most recent earlier ones, bounded."""
    asked_set = set(asked)
    earlier = [(n, s) for n, s in old.items() if n not in asked_set]
    kept = earlier[-(_PER_RUN_KEEP - len(found)):] if len(found) < _PER_RUN_KEEP else []
    return dict([*kept, *found.items()])


def _warn_once(config: CallersConfig, problems: Sequence[str], warned: Sequence[str]
               ) -> tuple[str, ...]:
    """Log the problems not warned about before; returns what to remember as warned."""
    digests = [_digest(p) for p in problems]
    for problem, digest in zip(problems, digests, strict=True):
        if digest not in warned:
            log.warning("%s: %s", describe(config), problem)
    return tuple(dict.fromkeys([*warned, *digests]))[-100:]


def describe(config: CallersConfig) -> str:
    """The directory as messages name it, its password hidden."""
    return f"callers.csv {config.csv}" if config.csv else f"callers.url {redact_url(config.url)}"


def fingerprint(config: CallersConfig) -> str:
    """What the cached copy was read with: a changed setting is never served an old copy."""
    what = [config.csv, redact_url(config.url), config.query, config.country.upper(),
            list(config.fields)]
    return _digest(json.dumps(what))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _span(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds >= 60 else f"{seconds:g}s"


@dataclass(frozen=True)
class CacheState:
    """The directory's last good copy, with when it was read and what was already warned."""

    subscribers: Mapping[str, Subscriber]
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
            if data.get("format") != _CACHE_FORMAT or data.get("fingerprint") != self.fingerprint:
                return None
            return CacheState(
                _Entries(data["subscribers"]),
                dt.datetime.fromisoformat(data["loaded_at"]),
                dt.datetime.fromisoformat(data["failed_at"]) if data["failed_at"] else None,
                tuple(data["warned"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: ignoring a damaged directory copy (%s)", self.path, exc)
            return None

    def write(self, state: CacheState) -> None:
        data = {
            "format": _CACHE_FORMAT,
            "fingerprint": self.fingerprint,
            "loaded_at": state.loaded_at.isoformat(),
            "failed_at": state.failed_at.isoformat() if state.failed_at else None,
            "warned": list(state.warned),
            "subscribers": _entries(state.subscribers),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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


class _Entries(Mapping[str, Subscriber]):
    """The copy's subscribers as read from JSON, made into Subscribers only when asked for:
    a run looks up its few numbers, never builds 100,000 objects."""

    def __init__(self, entries: dict[str, list[Any]]):
        self.entries = entries

    def __getitem__(self, number: str) -> Subscriber:
        name, ident, extra, written = self.entries[number]
        return Subscriber(number=number, name=name, id=ident, extra=extra or None,
                          written=written)

    def __contains__(self, number: object) -> bool:
        return number in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _entries(subscribers: Mapping[str, Subscriber]) -> dict[str, list[Any]]:
    if isinstance(subscribers, _Entries):
        return subscribers.entries
    return {n: [s.name, s.id, dict(s.extra or {}), s.written] for n, s in subscribers.items()}


def _written_index(subscribers: Mapping[str, Subscriber]) -> dict[str, str]:
    """Number as written → E.164, from the previous copy."""
    if isinstance(subscribers, _Entries):
        return {entry[3]: number for number, entry in subscribers.entries.items() if entry[3]}
    return {s.written: number for number, s in subscribers.items() if s.written}


def verify(config: CallersConfig) -> int:
    """Read the directory once, as `poller check` would: the number of subscribers, or
    ConfigError. A per-run query is run with no numbers (it checks the URL and the SQL)."""
    try:
        if config.csv:
            parsed = read_csv(config.csv, config.country, config.fields)
        else:
            parsed = read_query(config, [] if wants_numbers(config) else None)
    except DirectoryError as exc:
        raise ConfigError(f"{describe(config)}: cannot read the directory: {exc}") from None
    for problem in parsed.problems:
        log.warning("%s: %s", describe(config), problem)
    return len(parsed.subscribers)
