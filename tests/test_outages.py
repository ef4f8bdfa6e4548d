"""Whose fault a failure is (design §4): an outage of the target charges no call, however long
it lasts; a failure inside one call's request is the call's only when the target answers a
probe; an object id the target returned is never lost to a failing state database."""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from easla_server import EaslaServer
from support import (
    clone_call,
    entry_of,
    insert_rows,
    key_of,
    legs_of,
    make_config,
    msk,
    open_ledger,
)

import poller.run.pipeline as pipeline
from poller.errors import ExitCode
from poller.ledger.store import Ledger
from poller.model import Stage
from poller.ops.status import collect, render, to_json
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")
ANSWERED = "1795675107.1"  # P1-01: answered, recorded
QUEUE = "1795675156.25"  # P1-06: a queue call, answered, recorded
NO_ANSWER = "1795675119.5"  # P1-02: nobody answered


def closed_url() -> str:
    """The address of an easla that is not there: a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/user/soap"


def easla_config(tmp_path: Path, db_url: str, url: str, **retry: object):
    section = {"url": url, "login": "poller", "password": "secret", "timeout": "2s"}
    return make_config(tmp_path, db_url, target={"kind": "easla", "easla": section},
                       retry={"backoff": "1s", "max_backoff": "2s", **retry})


def recorded_calls(cdr_url, sample_rows, monitor: Path) -> list[str]:
    calls = [clone_call(legs_of(sample_rows, uid), start, monitor=monitor)
             for uid, start in ((ANSWERED, dt.datetime(2026, 11, 26, 10, 0)),
                                (QUEUE, dt.datetime(2026, 11, 26, 10, 5)),
                                (NO_ANSWER, dt.datetime(2026, 11, 26, 10, 10)))]
    insert_rows(cdr_url, [row for call in calls for row in call])
    return [key_of(call) for call in calls]


def count_encodes(monkeypatch) -> list[Path]:
    """Every recording the run encodes (by the real encoder), in order."""
    encoded: list[Path] = []
    real = pipeline.EncoderProcess.encode

    def counting(self, files, mp3, **options):
        encoded.append(mp3)
        return real(self, files, mp3, **options)

    monkeypatch.setattr(pipeline.EncoderProcess, "encode", counting)
    return encoded


def test_a_long_outage_charges_no_call_and_one_run_after_it_delivers_all(
        tmp_path, cdr_db, sample_rows, monkeypatch):
    """Thirty runs with easla unreachable (max_attempts = 2, a shortened schedule): every run
    exits 1 and says the target is down, no call is charged or parked, no recording is encoded
    for nothing; the first run once easla answers delivers every call, once."""
    keys = recorded_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    encoded = count_encodes(monkeypatch)
    down = easla_config(tmp_path, cdr_db.url, closed_url(), max_attempts=2)
    metrics = tmp_path / "poller.prom"
    for minute in range(30):
        report = run_once(down, RunOptions(now=NOW + dt.timedelta(minutes=minute),
                                           metrics_file=str(metrics)))
        assert report.exit_code == ExitCode.PARTIAL, report.summary()
        assert report.unavailable and report.failures == 0 and report.parked == 0
        assert report.target_down_since == "2026-11-26T09:00:00Z"
    assert encoded == []
    assert "poller_target_up 0.0" in metrics.read_text()
    assert "poller_target_down_seconds" in metrics.read_text()
    for key in keys:
        entry = entry_of(down, key)
        assert (entry.stage, entry.attempts, entry.next_attempt_at) == (Stage.SEEN, 0, None)
    shown = collect(down)
    assert shown.target_down is not None and shown.target_down.since == dt.datetime(2026, 11, 26, 9)
    assert "easla" in to_json(shown)["target"]["error"]
    assert "target:      down since 2026-11-26 12:00:00 +03:00" in render(shown)  # 09:00 UTC
    assert "3 calls waiting" in render(shown)

    with EaslaServer() as server:
        up = easla_config(tmp_path, cdr_db.url, server.url, max_attempts=2)
        report = run_once(up, RunOptions(now=NOW + dt.timedelta(minutes=31),
                                         metrics_file=str(metrics)))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert sum(report.delivered.values()) == 3
        assert sorted(o["attributes"]["incoming_call_key"][0]
                      for o in server.objects.values()) == sorted(keys)
    assert collect(up).target_down is None
    assert "poller_target_up 1.0" in metrics.read_text()
    assert len(encoded) == 2  # the two answered calls' recordings, each once


def test_a_reset_inside_one_calls_request_is_that_calls_when_easla_answers(
        tmp_path, cdr_db, sample_rows):
    """The connection drops while one call is being created, and the WSDL answers right after:
    the request failed, not easla. That call is charged; the others go out."""
    keys = recorded_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server.url)
        server.fail_next("createObjectref", "reset")
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.PARTIAL and report.failures == 1, report.summary()
        assert not report.unavailable and report.target_down_since is None
        assert sum(report.delivered.values()) == 2
        entry = entry_of(config, keys[0])
        assert (entry.stage, entry.attempts) == (Stage.SEEN, 1)
        assert "the target answers otherwise" in entry.last_error


def test_a_reset_followed_by_silence_is_the_targets_fault(tmp_path, cdr_db, sample_rows):
    """The connection drops while a call is being created and easla does not answer the probe
    either: an outage. Nobody is charged, the run stops, the next run delivers."""
    keys = recorded_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    first_call = keys[0]
    cdr_db.execute("DELETE FROM cdr WHERE linkedid <> :key", key=first_call)
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server.url)
        assert run_once(config, RunOptions(now=NOW)).exit_code == ExitCode.OK  # WSDL cached
        late = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 11, 0))
        cdr_db.insert(late)
        server.fail_next("createObjectref", "reset")
        server.fail_next("wsdl", "reset")  # the probe
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
        assert report.exit_code == ExitCode.PARTIAL and report.failures == 0, report.summary()
        assert report.unavailable and report.target_down_since
        entry = entry_of(config, key_of(late))
        assert (entry.stage, entry.attempts) == (Stage.SEEN, 0)
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=2)))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert len(server.find_objects("incoming_call_key", key_of(late))) == 1
        assert collect(config).target_down is None


def test_an_object_id_is_kept_when_the_ledger_refuses_it(tmp_path, cdr_db, sample_rows,
                                                         monkeypatch):
    """createObjectref answered, then the state database refuses the write (locked by another
    process, a read-only disk): the id goes to the journal, nobody is charged, and the next run
    attaches the recording to that object — never a second object."""
    keys = recorded_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    cdr_db.execute("DELETE FROM cdr WHERE linkedid <> :key", key=keys[0])
    monkeypatch.setattr("poller.ledger.journal.RETRIES", (0.0, 0.0))
    real = Ledger.advance

    def refusing(self, key, stage, **values):
        if stage == Stage.CREATED:
            raise sa.exc.OperationalError("UPDATE poller_calls", {},
                                          sqlite3.OperationalError("database is locked"))
        return real(self, key, stage, **values)

    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server.url)
        monkeypatch.setattr(Ledger, "advance", refusing)
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.PARTIAL and report.failures == 0, report.summary()
        assert any("kept in" in problem for problem in report.unavailable)
        (object_id,) = server.objects
        assert server.objects[object_id]["files"] == []
        journal = Path(config.state.dir) / "journal"
        (line,) = journal.read_text().splitlines()
        assert json.loads(line)["values"]["object_id"] == str(object_id)
        assert journal.stat().st_mode & 0o777 == 0o600
        entry = entry_of(config, keys[0])
        assert (entry.stage, entry.attempts, entry.object_id) == (Stage.SEEN, 0, None)

        monkeypatch.setattr(Ledger, "advance", real)
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert list(server.objects) == [object_id]
        assert len(server.objects[object_id]["files"]) == 1
        assert journal.read_text() == ""
        with open_ledger(config) as ledger:
            assert ledger.entry(keys[0]).stage == Stage.DONE
