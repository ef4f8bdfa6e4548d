"""Opening the ledger: the engine a process keeps per ledger, and what a failed open leaves."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from poller.errors import ConfigError
from poller.ledger.schema import SCHEMA_VERSION
from poller.ledger.store import Ledger


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_a_failed_open_keeps_no_connection_to_a_file_replaced_before_the_next_poll(tmp_path):
    """`run --follow` opens the ledger every poll: after an open that failed (a newer schema)
    and the file's replacement, the next open reads the new file, not the deleted one."""
    path = tmp_path / "state.db"
    ledger = Ledger(_url(path))
    ledger.put("schema_version", str(SCHEMA_VERSION + 1))
    ledger.close()
    with pytest.raises(ConfigError, match="schema version"):
        Ledger(_url(path))
    path.unlink()
    fresh = Ledger(_url(path))
    try:
        assert fresh.get("schema_version") == str(SCHEMA_VERSION)
    finally:
        fresh.close()


def test_the_schema_check_of_a_current_ledger_finds_a_new_file_after_close(tmp_path):
    path = tmp_path / "state.db"
    first = Ledger(_url(path))
    first.put("origin", "2026-11-01T00:00:00")
    first.close()
    path.unlink()
    second = Ledger(_url(path))  # made anew, with every table
    try:
        assert second.get("origin") is None
        tables = {row[0] for row in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"poller_meta", "poller_calls", "poller_incidents"} <= tables
    finally:
        second.close()


def test_in_memory_ledgers_are_never_shared():
    one, other = Ledger("sqlite://"), Ledger("sqlite://")
    try:
        one.put("origin", "2026-11-01T00:00:00")
        assert other.get("origin") is None
        other.close()
        assert one.get("origin") == "2026-11-01T00:00:00"
    finally:
        one.close()
