"""Failures of the poller's own disks are nobody's call's fault (design §4): a state.dir that
turns read-only after easla created an object, an archive whose disk is full. Found by the
fault suite (tests/fault_suite.py); here each on its own."""

from __future__ import annotations

import datetime as dt
import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from easla_server import EaslaServer
from support import (
    as_nobody,
    cdr_table,
    clone_call,
    entry_of,
    give_to_nobody,
    insert_rows,
    key_of,
    legs_of,
    make_config,
    msk,
    needs_root,
    run_cli,
    write_config,
)

from poller.config.load import load
from poller.errors import ExitCode, PollerError
from poller.ledger.store import Ledger
from poller.model import Stage
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")
ANSWERED = "1795675107.1"  # P1-01: answered, recorded


def _recorded_call(cdr_url, sample_rows, monitor: Path) -> str:
    rows = clone_call(legs_of(sample_rows, ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      monitor=monitor)
    insert_rows(cdr_url, rows)
    return key_of(rows)


def test_state_dir_read_only_after_create_charges_nobody_and_keeps_the_id(
        tmp_path, cdr_url, sample_rows, monkeypatch):
    """easla created the object, then state.dir turned read-only: the ledger refuses the id
    and the temporary MP3 cannot be removed either. The id goes to the journal and the run
    stops (exit 1) charging nobody -- the failed removal must not pass for the call's own
    failure, nor escape the run as an unexpected error. The next run attaches to that object."""
    key = _recorded_call(cdr_url, sample_rows, tmp_path / "monitor")
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
        config = make_config(tmp_path, cdr_url, target={"kind": "easla", "easla": {
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


def test_a_full_archive_disk_charges_nobody_however_long(tmp_path, cdr_url, sample_rows,
                                                         monkeypatch):
    """The archive's file system is full (ENOSPC on every write) for more runs than
    max_attempts: each run stops with exit 1 saying the target is down, no call is charged or
    parked; the first run with space again delivers the call."""
    key = _recorded_call(cdr_url, sample_rows, tmp_path / "monitor")
    config = make_config(tmp_path, cdr_url, retry={"max_attempts": 2, "backoff": "1s",
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


# -- EACCES as the service user: root ignores permissions, so these run as nobody

def _site_as_nobody(site: Path, sample_rows, recorded: bool) -> tuple[Any, str]:
    """A site the service user (nobody) owns, with one call in its cdr table."""
    rows = clone_call(legs_of(sample_rows, ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      monitor=site / "monitor" if recorded else None)
    (site / "monitor").mkdir(exist_ok=True)
    path = write_config(site, cdr_table(site, rows))
    path.chmod(0o644)
    for folder in ("state", "archive"):
        (site / folder).mkdir()
    give_to_nobody(site / "state", site / "archive")
    return load(path, env={}), key_of(rows)


def _run_as_nobody(config: Any, key: str, minute: int = 0) -> dict[str, Any]:
    """One run as nobody: its outcome, and what the ledger holds of the call."""
    def work() -> dict[str, Any]:
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=minute)))
        entry = entry_of(config, key)
        return {"exit": int(report.exit_code), "failures": report.failures,
                "delivered": report.delivered_count, "unavailable": report.unavailable,
                "stage": str(entry.stage), "attempts": entry.attempts,
                "last_error": entry.last_error}
    return as_nobody(work)


def _charged_nobody(outcome: dict[str, Any]) -> None:
    assert outcome["exit"] == ExitCode.PARTIAL, outcome
    assert outcome["failures"] == 0 and outcome["attempts"] == 0, outcome
    assert outcome["last_error"] is None, outcome


@needs_root
def test_a_tmp_folder_a_root_run_left_roots_charges_nobody(site, sample_rows):
    """state.dir/tmp root's (a root run made it): every call with a recording was charged
    `PermissionError …; attempt 1 of 20`, then parked. It is a local outage: the run stops
    (exit 1) saying where and as whom; the call waits uncharged."""
    config, key = _site_as_nobody(site, sample_rows, recorded=True)
    (site / "state" / "tmp").mkdir()  # root's, 0755
    outcome = _run_as_nobody(config, key)
    _charged_nobody(outcome)
    (said,) = outcome["unavailable"]
    assert str(site / "state" / "tmp") in said and "user nobody" in said, said
    assert outcome["stage"] == Stage.SEEN


@needs_root
@pytest.mark.parametrize("ledger_open", [True, False], ids=["ledger files open", "closed"])
def test_a_state_dir_turned_read_only_for_the_service_user_charges_nobody(site, sample_rows,
                                                                           ledger_open):
    """state.dir read-only as the service user (EACCES, not EROFS): 44 calls were charged
    `PermissionError …; attempt 1 of 20`. While SQLite's -wal and -shm are open (another
    process holds the ledger) the run reaches delivery and stops at tmp/; otherwise the ledger
    refuses first. Either way: exit 1, said with the place and the user, nobody charged."""
    config, key = _site_as_nobody(site, sample_rows, recorded=True)
    state = site / "state"

    def read_only_run() -> dict[str, Any]:
        run_once(config, RunOptions(now=NOW), target_factory=_down)  # the call is recorded
        holder = sqlite3.connect(state / "state.db")
        if ledger_open:
            holder.execute("SELECT COUNT(*) FROM poller_meta").fetchone()
        state.chmod(0o555)
        try:
            report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
            said, code = report.unavailable, int(report.exit_code)
        except PollerError as exc:  # as the command line reports it
            said, code = [str(exc)], int(exc.exit_code)
        finally:
            state.chmod(0o755)
            holder.close()
        entry = entry_of(config, key)
        return {"exit": code, "said": said, "attempts": entry.attempts,
                "last_error": entry.last_error, "stage": str(entry.stage)}

    outcome = as_nobody(read_only_run)
    assert outcome["exit"] == ExitCode.PARTIAL, outcome
    assert (outcome["attempts"], outcome["last_error"]) == (0, None), outcome
    assert any(str(state) in said and "user nobody" in said for said in outcome["said"]), \
        outcome


@needs_root
def test_a_state_dir_the_user_may_not_write_is_an_outage_said_with_its_place(site, sample_rows):
    """No lock can be made in a state.dir root's: exit 2 (bad config) before; it is the
    folder's outage, exit 1, said with the place and the user."""
    config, _ = _site_as_nobody(site, sample_rows, recorded=False)
    os.chown(site / "state", 0, 0)

    def run() -> tuple[int, str]:
        try:
            return int(run_once(config, RunOptions(now=NOW)).exit_code), ""
        except PollerError as exc:
            return int(exc.exit_code), str(exc)

    code, said = as_nobody(run)
    assert code == ExitCode.PARTIAL and "poller.lock" in said and "user nobody" in said, said


@needs_root
@pytest.mark.parametrize("mode", [0o755, 0o750], ids=["readable", "unreadable"])
def test_an_archive_day_folder_a_root_backfill_left_roots_charges_nobody(site, sample_rows,
                                                                         mode):
    """A root backfill left the day folder root's: the call was `1 failed` and charged. The
    archive refusing writes is the target's outage: exit 1, nobody charged, the folder named;
    once it is chowned, the next run delivers. A folder the user may not even look into (the
    poller's own 0750) stops no run either: its page is left for a later run."""
    config, key = _site_as_nobody(site, sample_rows, recorded=False)
    day = site / "archive" / "2026" / "11" / "26"
    day.mkdir(parents=True)
    give_to_nobody(site / "archive" / "2026")
    os.chown(day, 0, 0)
    day.chmod(mode)
    outcome = _run_as_nobody(config, key)
    _charged_nobody(outcome)
    (said,) = outcome["unavailable"]
    assert str(day) in said and "user nobody" in said, said
    give_to_nobody(day)
    again = _run_as_nobody(config, key, minute=1)
    assert again["exit"] == ExitCode.OK and again["stage"] == Stage.DONE, again


@needs_root
def test_an_archive_the_user_may_not_write_is_an_outage_not_a_config_error(site, sample_rows):
    """The archive's folder root's: every run exit 2 (bad config) though nothing in the
    configuration is wrong; it is the archive's outage, exit 1, and nothing is charged."""
    config, key = _site_as_nobody(site, sample_rows, recorded=False)
    os.chown(site / "archive", 0, 0)
    outcome = _run_as_nobody(config, key)
    _charged_nobody(outcome)
    assert any(str(site / "archive") in said and "user nobody" in said
               for said in outcome["unavailable"]), outcome


def test_an_encoder_that_cannot_write_its_mp3_is_a_local_outage(tmp_path):
    """A full state.dir while the MP3 is written (ENOSPC) was charged to the call as an
    encoder failure; the encoder says so and the run stops charging nobody."""
    from audiotools import write_speech_wav

    from poller.config.schema import TranscodeConfig
    from poller.errors import StorageUnavailable
    from poller.recordings.transcode import to_mp3

    wav = write_speech_wav(tmp_path / "call.wav", 2.0)
    with pytest.raises(StorageUnavailable, match="/dev/full"):
        to_mp3([wav], Path("/dev/full"), TranscodeConfig(), call_seconds=10)


def _down(config: Any) -> Any:
    from poller.errors import TargetUnavailable

    raise TargetUnavailable("archive: not mounted")


# -- a recording the service user may not read: the call's fault, said at once

@needs_root
@pytest.mark.parametrize("closed", ["file", "day folder"])
def test_a_recording_the_service_user_may_not_read_is_permission_denied_at_once(
        site, sample_rows, closed):
    """A WAV 0600 root's was `waiting for recording … (still being written)` for the whole
    recordings.wait (10 min), then `encoder failed (1): Permission denied`. Now the first run
    says Permission denied, naming the file and the user, and charges the call (design §4:
    a recording that cannot be read is the call's), which backs off for `poller retry`."""
    config, key = _site_as_nobody(site, sample_rows, recorded=True)
    wav = next((site / "monitor").rglob("*.wav"))
    (wav if closed == "file" else wav.parent).chmod(0o600 if closed == "file" else 0o700)

    def first_run() -> dict[str, Any]:
        report = run_once(config, RunOptions(now=msk("2026-11-26 10:03")))
        entry = entry_of(config, key)
        return {"exit": int(report.exit_code), "waiting": report.waiting,
                "failures": report.failures, "attempts": entry.attempts,
                "last_error": entry.last_error, "next": entry.next_attempt_at,
                "stage": str(entry.stage)}
    outcome = as_nobody(first_run)
    assert outcome["exit"] == ExitCode.PARTIAL, outcome
    assert (outcome["waiting"], outcome["failures"], outcome["attempts"]) == (0, 1, 1), outcome
    said = outcome["last_error"]
    assert "Permission denied" in said and "user nobody" in said, said
    assert str(wav if closed == "file" else wav.parent) in said, said
    assert "still being written" not in said and outcome["next"] is not None, outcome
    assert outcome["stage"] == Stage.SEEN

    code, output = _check_as_nobody(site / "poller.toml")
    failed = [line for line in output.splitlines() if line.startswith("FAIL")]
    assert code == ExitCode.PARTIAL, output
    assert any(line.split()[1] == "recordings" and "Permission denied" in line
               for line in failed), output


def _check_as_nobody(config_path: Path) -> tuple[int, str]:
    def work() -> tuple[int, str]:
        result = run_cli("--config", str(config_path), "check")
        return result.exit_code, result.output
    return as_nobody(work)
