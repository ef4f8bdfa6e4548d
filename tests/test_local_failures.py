"""Failures of the poller's own disks are nobody's call's fault (design §4): a state.dir that
turns read-only after easla created an object, an archive whose disk is full. Found by the
fault suite (tests/fault_suite.py); here each on its own."""

from __future__ import annotations

import datetime as dt
import errno
import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from easla_server import EaslaServer
from support import clone_call, entry_of, key_of, legs_of, make_config, msk

from poller.errors import ExitCode
from poller.ledger.store import Ledger
from poller.model import Stage
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")
ANSWERED = "1795675107.1"  # P1-01: answered, recorded


def _recorded_call(cdr_db, sample_rows, monitor: Path) -> str:
    rows = clone_call(legs_of(sample_rows, ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      monitor=monitor)
    cdr_db.insert(rows)
    return key_of(rows)


def test_state_dir_read_only_after_create_charges_nobody_and_keeps_the_id(
        tmp_path, cdr_db, sample_rows, monkeypatch):
    """easla created the object, then state.dir turned read-only: the ledger refuses the id
    and the temporary MP3 cannot be removed either. The id goes to the journal and the run
    stops (exit 1) charging nobody -- the failed removal must not pass for the call's own
    failure, nor escape the run as an unexpected error. The next run attaches to that object."""
    key = _recorded_call(cdr_db, sample_rows, tmp_path / "monitor")
    monkeypatch.setattr("poller.ledger.journal.RETRIES", (0.0, 0.0))
    workdir = tmp_path / "state" / "tmp"
    real_advance, real_unlink = Ledger.advance, Path.unlink
    read_only = False

    def refusing(self, call_key, stage, **values):
        nonlocal read_only
        if stage == Stage.CREATED:
            read_only = True
        if read_only:
            raise sa.exc.OperationalError("UPDATE poller_calls", {}, sqlite3.OperationalError(
                "attempt to write a readonly database"))
        return real_advance(self, call_key, stage, **values)

    def unlink(self, missing_ok=False):
        if read_only and self.parent == workdir:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    with EaslaServer() as server:
        config = make_config(tmp_path, cdr_db.url, target={"kind": "easla", "easla": {
            "url": server.url, "login": "poller", "password": "secret", "timeout": "2s"}})
        monkeypatch.setattr(Ledger, "advance", refusing)
        monkeypatch.setattr(Path, "unlink", unlink)
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.PARTIAL, report.summary()
        assert report.failures == 0 and report.unavailable, report.summary()
        (object_id,) = server.objects
        monkeypatch.setattr(Ledger, "advance", real_advance)
        monkeypatch.setattr(Path, "unlink", real_unlink)
        entry = entry_of(config, key)
        assert (entry.stage, entry.attempts) == (Stage.SEEN, 0)

        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert list(server.objects) == [object_id]
        assert len(server.objects[object_id]["files"]) == 1
    assert list(workdir.iterdir()) == []  # the leftover went with the next run


def test_a_full_archive_disk_charges_nobody_however_long(tmp_path, cdr_db, sample_rows,
                                                         monkeypatch):
    """The archive's file system is full (ENOSPC on every write) for more runs than
    max_attempts: each run stops with exit 1 saying the target is down, no call is charged or
    parked; the first run with space again delivers the call."""
    key = _recorded_call(cdr_db, sample_rows, tmp_path / "monitor")
    config = make_config(tmp_path, cdr_db.url, retry={"max_attempts": 2, "backoff": "1s",
                                                      "max_backoff": "2s"})
    real_open = os.open

    def full(path, flags, *args):
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path / "archive")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", full)  # the archive creates every file with os.open
    for minute in range(4):
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=minute)))
        assert report.exit_code == ExitCode.PARTIAL, report.summary()
        assert report.failures == 0 and report.parked == 0, report.summary()
        assert report.target_down_since is not None
        entry = entry_of(config, key)
        assert (entry.stage, entry.attempts) == (Stage.SEEN, 0)
    monkeypatch.setattr(os, "open", real_open)
    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
    assert report.exit_code == ExitCode.OK and report.delivered_count == 1, report.summary()
    assert entry_of(config, key).stage == Stage.DONE
