"""Whose state.dir it is: one ledger and one source (design §13).

The journal, the temporary files, the directory's copy and the lock in state.dir belong to the
ledger and the source whose runs wrote them. Two configs sharing a state.dir but not a ledger
replayed and truncated each other's journal: one run applied another's confirmed step to its
own ledger and wrote a call's object id as an archive file name. Rather than name the owner
in every file, the first run claims the folder in `owner.json`; a run or `check` of another
ledger or source refuses it, naming both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from poller.errors import ConfigError, StorageUnavailable
from poller.localfiles import SHARED, reason, refuses_writes

OWNER_FILE = "owner.json"


@dataclass(frozen=True)
class Owner:
    """A ledger (without its user or password) and a source name."""

    ledger: str
    source: str

    def __str__(self) -> str:
        return f"ledger {self.ledger}, source {self.source!r}"


def owner_of(database_url: str, source: str) -> Owner:
    """The owner a config's runs are: where its ledger is, and its source.name."""
    url = sa.engine.make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        where = str(Path(url.database).resolve()) if url.database else ":memory:"
        return Owner(f"sqlite:///{where}", source)
    port = f":{url.port}" if url.port else ""
    return Owner(f"{backend}://{url.host or ''}{port}/{url.database or ''}", source)


def recorded(state_dir: str | Path) -> Owner | None:
    """The owner state.dir names; None when it names none (a folder no run has claimed, or
    a file that does not read: claimed again)."""
    try:
        data = json.loads((Path(state_dir) / OWNER_FILE).read_text(encoding="utf-8"))
        return Owner(str(data["ledger"]), str(data["source"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def conflict(state_dir: str | Path, owner: Owner) -> str | None:
    """Why `owner`'s runs may not use state.dir (another owner's), or None."""
    found = recorded(state_dir)
    if found is None or found == owner:
        return None
    return (f"state.dir {state_dir} belongs to another config ({found}, said in "
            f"{Path(state_dir) / OWNER_FILE}); this config is {owner}: give each config a "
            "state.dir of its own (its journal, lock and temporary files are that ledger's "
            "and that source's); if it is the same ledger under a new address (moved to "
            f"another server, its host or port written otherwise), remove "
            f"{Path(state_dir) / OWNER_FILE} and the next run claims the folder again")


def claim(state_dir: str | Path, owner: Owner) -> None:
    """Refuse another owner's state.dir (ConfigError); claim one nobody has claimed."""
    problem = conflict(state_dir, owner)
    if problem:
        raise ConfigError(problem)
    path = Path(state_dir) / OWNER_FILE
    if recorded(state_dir) == owner:
        return
    data = json.dumps({"ledger": owner.ledger, "source": owner.source}) + "\n"
    temporary = path.with_name(f".{OWNER_FILE}.{os.getpid()}")
    try:
        temporary.write_text(data, encoding="utf-8")
        temporary.chmod(SHARED)  # whatever the umask: it holds no secret
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        if refuses_writes(exc):
            raise StorageUnavailable(f"state.dir: cannot write {path}: {reason(exc)}") from None
        raise
