"""Opening the ledger for reading only, for `status` and `check`: a monitoring user with read
access to state.db (and none to state.dir) must be able to look, and a look never writes."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import Any

import sqlalchemy as sa


def sqlite_path(url: sa.engine.URL) -> str | None:
    """The file of a SQLite database in a file; None in memory or on a server."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def read_only_engine(url: sa.engine.URL) -> sa.engine.Engine:
    """An engine that cannot write: SQLite opened with `mode=ro`; other databases as given."""
    path = sqlite_path(url)
    if path is None:
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    # a URI file name: "?" and "#" in the path must be escaped, "%XX" is decoded by SQLite
    uri = f"file:{urllib.parse.quote(path, safe='/')}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True)
        try:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return connection
        except sqlite3.OperationalError:
            connection.close()
        # a WAL ledger in a folder this user may not write: its -shm index cannot be made,
        # so read the file as it stands (what the last run checkpointed, seconds old at most)
        return sqlite3.connect(uri + "&immutable=1", uri=True)

    return sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)


def sqlite_reader(dbapi_connection: Any, _record: Any) -> None:
    # no journal_mode change here: setting WAL is a write, refused on a read-only connection
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA query_only=1")
    cursor.close()


def create_private(url: sa.engine.URL) -> None:
    """Make a new SQLite ledger file 0600 before SQLite does (it would make it 0644): the
    ledger holds callers' numbers and names. Its -wal and -shm files take the same mode."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # SQLite's own attempt reports it, with the state.dir it concerns
