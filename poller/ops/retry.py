"""`poller retry`: parked calls put back in line, by key or all of them; a call named by key
that backs off after a failed attempt (or waits) is brought forward to the next run.

Only the ledger is written, so this works while a follow-mode service runs. A call that could
not be built from its cdr rows stays parked: only a run that reads its rows again builds it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from poller.config.schema import Config
from poller.errors import ConfigError
from poller.ledger.store import Ledger
from poller.model import PENDING, Stage, Status, source_key


@dataclass
class Requeued:
    """What `retry` did: how many calls went back in line, and the named ones it left."""

    count: int = 0
    not_parked: dict[str, Stage] = field(default_factory=dict)  # key → its stage
    # key → what it was waiting for: brought forward (counted in `count`)
    brought_forward: dict[str, str] = field(default_factory=dict)
    unbuilt: dict[str, dt.date] = field(default_factory=dict)  # key → the day of its rows


def requeue(config: Config, keys: Sequence[str] | None) -> Requeued:
    """Put the parked calls named by `keys` (None: every parked call) back in line."""
    ledger = Ledger.open_existing(config.state.database_url, source=config.source.name)
    if ledger is None:
        raise ConfigError("the ledger does not exist yet: nothing to retry")
    try:
        done = Requeued()
        if keys:
            # a named source's key may be given as the PBX wrote it
            name = config.source.name
            given = list(keys)
            keys = [key if not name or key.startswith(f"{name}:") else source_key(name, key)
                    for key in keys]
            # keys are unique across a shared ledger's sources: another source's key is found
            # here, and the requeue below (bound to this source) would skip it without a word
            foreign = others_keys(ledger.sources_of([*keys, *given]), given, keys, name)
            if foreign:
                raise ConfigError(foreign_keys(foreign, name))
            known = ledger.known(keys)
            unknown = [key for key in keys if key not in known]
            if unknown:
                raise ConfigError(f"unknown call key(s): {', '.join(unknown)}")
            pending = [key for key in keys if known[key] in PENDING]
            done.brought_forward = ledger.bring_forward(pending)
            done.not_parked = {key: known[key] for key in keys
                               if known[key] != Stage.FAILED and key not in done.brought_forward}
            for key in set(keys) - set(done.not_parked):
                entry = ledger.entry(key)
                if entry is not None and entry.call.status == Status.UNBUILT:
                    done.unbuilt[key] = entry.call.first_calldate.date()
        done.count = ledger.requeue_failed(list(keys) if keys else None) + \
            len(done.brought_forward)
        return done
    finally:
        ledger.close()


def others_keys(owners: dict[str, str], given: Sequence[str], keys: Sequence[str],
                name: str) -> dict[str, str]:
    """The keys (as the ledger holds them) that belong to another source than `name`, with
    that source: a key as given counts only when its form with this source's prefix is not
    held (`lviv:KEY` from the config of kiev)."""
    foreign: dict[str, str] = {}
    for as_given, key in zip(given, keys, strict=True):
        held = key if key in owners else as_given if as_given in owners else None
        if held is not None and owners[held] != name:
            foreign[held] = owners[held]
    return foreign


def foreign_keys(foreign: dict[str, str], name: str) -> str:
    """The refusal of another source's keys, with the command that works on each."""
    parts = []
    for key, source in foreign.items():
        option = source or '""'
        parts.append(f"call {key} belongs to source {source or '(unnamed)'} of the shared "
                     f"ledger, not to this config's ({name or 'unnamed'}): "
                     f"`poller retry --source {option} {key}`")
    return "; ".join(parts)
