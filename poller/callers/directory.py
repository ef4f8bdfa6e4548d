"""The caller directory (`[callers]`): who is calling, by E.164 number.

A CSV file or an SQL query on any SQLAlchemy URL, both normalised with `numbers.normalise`.
A whole directory is read at most once per `callers.refresh` and kept in a JSON file in
state.dir, so a run every minute does not re-read a large CRM; a query holding `:numbers` is
run once per run instead, for the run's numbers only. What cannot be read is a configuration
error while there is no last good copy, and a warning (the copy used) once there is one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from poller.callers.cache import Cache, CacheState, written_index
from poller.callers.caller import Caller, caller_fields
from poller.callers.readers import (
    DirectoryError,
    Parsed,
    parse_rows,
    read_csv,
    read_query,
    wants_numbers,
)
from poller.config.schema import CallersConfig
from poller.databases import redact_url
from poller.errors import ConfigError

log = logging.getLogger("poller")

# also known by this module's name: the run and the tests use them as directory.<name>
__all__ = ["Cache", "CacheState", "DirectoryError", "Parsed", "Caller", "caller_fields",
           "lookup", "parse_rows", "read_csv", "read_query", "verify", "wants_numbers"]

CACHE_NAME = "callers.json"


class DirectoryUnreadable(ConfigError):
    """The directory cannot be read and there is no usable copy of it: a configuration error
    at the first run; after a directory was once read, the run's caller sees an outage."""
# per-run lookups keep this many recent answers as their last good copy
_PER_RUN_KEEP = 10_000
@dataclass(frozen=True)
class Lookup:
    """The callers among one run's numbers."""

    matches: Mapping[str, Caller]
    loaded_at: dt.datetime | None  # when the copy used was read (None: nothing to look up)
    stale: bool = False  # the directory could not be read: the last good copy was used

    def find(self, number_e164: str | None) -> Caller | None:
        return self.matches.get(number_e164) if number_e164 else None


# ---------------------------------------------------------------------------------------------
# rows → callers (pure)


def lookup(config: CallersConfig, state_dir: str | os.PathLike[str], numbers: Iterable[str],
           now: dt.datetime) -> Lookup:
    """The callers among a run's normalised numbers.

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
         ) -> tuple[Mapping[str, Caller], dt.datetime, bool]:
    """The whole directory, from its copy while fresh: (callers, loaded at, stale)."""
    state = cache.read()
    if state is not None and not _due(state, config.refresh, now):
        return state.callers, state.loaded_at, state.failed_at is not None
    known = written_index(state.callers) if state else None
    try:
        parsed = read_csv(config.csv, config.country, config.fields, known) if config.csv \
            else read_query(config, None, known)
    except DirectoryError as exc:
        return _fall_back(config, cache, state, now, str(exc))
    warned = _warn_once(config, parsed.problems, state.warned if state else ())
    cache.write(CacheState(parsed.callers, now, None, warned))
    return parsed.callers, now, False


def _due(state: CacheState, refresh: float, now: dt.datetime) -> bool:
    last = state.failed_at or state.loaded_at  # after a failure, try again a refresh later
    return (now - last).total_seconds() >= refresh


def _fall_back(config: CallersConfig, cache: Cache, state: CacheState | None,
               now: dt.datetime, reason: str
               ) -> tuple[Mapping[str, Caller], dt.datetime, bool]:
    if state is None:
        raise DirectoryUnreadable(f"{describe(config)}: cannot read the directory: {reason}")
    log.warning("%s: cannot read the directory (%s); using the copy read %s, next try in %s",
                describe(config), reason, state.loaded_at.isoformat(timespec="seconds"),
                _span(config.refresh))
    cache.write(CacheState(state.callers, state.loaded_at, now, state.warned))
    return state.callers, state.loaded_at, True


def _lookup_per_run(config: CallersConfig, cache: Cache, wanted: list[str],
                    now: dt.datetime) -> Lookup:
    state = cache.read()
    try:
        parsed = read_query(config, wanted)
    except DirectoryError as exc:
        if state is None:
            raise DirectoryUnreadable(f"{describe(config)}: cannot read the directory: {exc}") \
                from None
        log.warning("%s: cannot read the directory (%s); using the answers of earlier runs",
                    describe(config), exc)
        known = {n: state.callers[n] for n in wanted if n in state.callers}
        return Lookup(known, state.loaded_at, True)
    asked = set(wanted)  # a query may return more rows than it was asked for
    found = {n: s for n, s in parsed.callers.items() if n in asked}
    warned = _warn_once(config, parsed.problems, state.warned if state else ())
    kept = _remember(state.callers if state else {}, wanted, found)
    cache.write(CacheState(kept, now, None, warned))
    return Lookup(found, now, False)


def _remember(old: Mapping[str, Caller], asked: Sequence[str],
              found: Mapping[str, Caller]) -> dict[str, Caller]:
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


def verify(config: CallersConfig) -> Parsed:
    """Read the directory once, as `poller check` would: its callers and problems, or
    ConfigError. A per-run query is run with no numbers (it checks the URL and the SQL)."""
    try:
        if config.csv:
            parsed = read_csv(config.csv, config.country, config.fields)
        else:
            parsed = read_query(config, [] if wants_numbers(config) else None)
    except DirectoryError as exc:
        raise ConfigError(f"{describe(config)}: cannot read the directory: {exc}") from None
    return parsed
