"""Odd rows, late rows, forgotten history and faults of one call: nothing stuck, nothing twice."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import wave
from pathlib import Path

import pytest
import sqlalchemy as sa
from easla_server import EaslaServer
from support import (
    DIRECT_ANSWERED,
    QUEUE_ANSWERED,
    archived,
    call_of,
    clone_call,
    entry_of,
    key_of,
    leg,
    legs_of,
    make_config,
    msk,
    open_ledger,
    run_cli,
    write_config,
)

from poller.calls import recording_names
from poller.config.schema import TranscodeConfig
from poller.errors import ExitCode
from poller.ledger.schema import SCHEMA_VERSION
from poller.ledger.store import Ledger
from poller.recordings.files import RefusedPath, resolve_inside
from poller.recordings.transcode import TranscodeError, Unreadable, to_mp3
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.targets.archive.target import ArchiveTarget

NOW = msk("2026-11-26 12:00")


def test_nul_byte_in_recordingfile_is_refused_not_fatal(tmp_path):
    """A NUL byte in a column value cannot make a path: refused, like any hostile name."""
    with pytest.raises(RefusedPath):
        resolve_inside(tmp_path, "2026/11/26/in-\x00.wav")


def test_an_unforeseen_error_in_one_call_is_counted_and_the_others_go_on(tmp_path, cdr_db,
                                                                       sample_rows):
    """One call that breaks the target in an unexpected way backs off; the next is delivered."""
    bad = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    good = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 5))
    cdr_db.insert(bad + good)
    config = make_config(tmp_path, cdr_db.url)

    class Picky(ArchiveTarget):
        def create(self, call, record, mp3=None):
            if call.key == key_of(bad):
                raise ValueError("something nobody foresaw")
            return super().create(call, record, mp3)

    report = run_once(config, RunOptions(now=NOW), target_factory=lambda c: Picky(
        c.target.archive, c.source.timezone))
    assert report.exit_code == ExitCode.PARTIAL
    assert list(archived(tmp_path)) == [key_of(good)]
    entry = entry_of(config, key_of(bad))
    assert entry.attempts == 1 and "ValueError" in entry.last_error


def test_an_encoder_that_cannot_start_is_retried_not_called_unreadable(tmp_path, monkeypatch):
    """The encoder child failing for its own reasons (here its MP3 library will not import) is
    a TranscodeError, retried later: never `unreadable`, which sends the call out without it."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "lameenc.py").write_text('raise ImportError("simulated: lameenc is missing")\n')
    monkeypatch.setenv("PYTHONPATH", str(broken))
    path = _mono_wav(tmp_path / "speech.wav", rate=8000, frames=8000)
    with pytest.raises(TranscodeError, match="lameenc is missing"):
        to_mp3([path], tmp_path / "out.mp3", TranscodeConfig(nice=0))


@pytest.mark.slow  # an encoder child
def test_audio_lame_cannot_encode_goes_out_unreadable(tmp_path):
    """A WAV that defeats the encoder (a 1 Hz sample rate) is unreadable, not retried forever."""
    path = _mono_wav(tmp_path / "odd.wav", rate=1, frames=600)
    with pytest.raises(Unreadable):
        to_mp3([path], tmp_path / "out.mp3", TranscodeConfig())


def _mono_wav(path: Path, rate: int, frames: int) -> Path:
    """A 16-bit mono WAV of `frames` samples at `rate` Hz."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x01\x02" * frames)
    return path


def test_a_call_crossing_midnight_keeps_its_recording_in_its_start_date_folder():
    """The Hangup row after midnight names the same file: the folder is the call's date."""
    legs = [leg("2026-11-26 23:59:50", duration=15, recordingfile="in-1795675107.1.wav"),
            leg("2026-11-27 00:00:05", sequence=2, dstchannel="", lastapp="Hangup",
                duration=0, billsec=0, disposition="NO ANSWER",
                recordingfile="in-1795675107.1.wav")]
    names = recording_names(legs, "{calldate:%Y/%m/%d}/{recordingfile}")
    assert names == ("2026/11/26/in-1795675107.1.wav",)


def test_rows_arriving_after_the_call_was_recorded_rebuild_it(tmp_path, cdr_db, sample_rows):
    """A member channel's row recorded first (no DID: skipped) is rebuilt when the caller's
    rows arrive, and the call is delivered as the incoming, answered call it was."""
    queue = clone_call(legs_of(sample_rows, QUEUE_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    answered, rang = queue
    early = dict(rang, did="", dcontext="from-queue", channel="Local/222@from-queue-0001;2")
    cdr_db.insert([early])
    config = make_config(tmp_path, cdr_db.url)
    first = run_once(config, RunOptions(now=NOW))
    assert first.skipped == 1 and archived(tmp_path) == {}
    cdr_db.insert([answered])
    second = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert second.new_calls == 1, second.summary()
    record = archived(tmp_path)[key_of(queue)]
    assert (record["status"], record["answered_by"]) == ("answered", "221")
    with open_ledger(config) as ledger:
        assert ledger.known_legs([key_of(queue)])[key_of(queue)][:2] == ("done", 2)


def test_rows_arriving_after_delivery_are_reported_not_delivered_again(tmp_path, cdr_db,
                                                                     sample_rows, caplog):
    """Once the object exists, a late row is logged (the record there may be out of date)."""
    queue = clone_call(legs_of(sample_rows, QUEUE_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    cdr_db.insert(queue[:1])
    config = make_config(tmp_path, cdr_db.url)
    assert sum(run_once(config, RunOptions(now=NOW)).delivered.values()) == 1
    cdr_db.insert(queue[1:])
    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert sum(report.delivered.values()) == 0 and report.new_calls == 0
    assert "may be out of date" in caplog.text
    again = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=2)))
    assert sum(again.delivered.values()) == 0


def test_a_first_version_ledger_is_upgraded_in_place(tmp_path, cdr_db, sample_rows):
    """A ledger written by the first version (no legs column) is upgraded at start."""
    cdr_db.insert(clone_call(legs_of(sample_rows, DIRECT_ANSWERED),
                             dt.datetime(2026, 11, 26, 10, 0)))
    config = make_config(tmp_path, cdr_db.url)
    run_once(config, RunOptions(now=NOW))
    database = sa.engine.make_url(config.state.database_url).database
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("ALTER TABLE poller_calls DROP COLUMN legs")
        conn.execute("UPDATE poller_meta SET value = '1' WHERE name = 'schema_version'")
        conn.commit()
    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert report.exit_code == ExitCode.OK, report.summary()
    ledger = Ledger(config.state.database_url)
    try:
        assert ledger.get("schema_version") == str(SCHEMA_VERSION) == "4"
        assert ledger.counts() == {"done": 1}
    finally:
        ledger.close()


def test_a_backfill_into_forgotten_history_is_refused_without_force(tmp_path, cdr_db,
                                                                    sample_rows):
    """After pruning, a backfill over the forgotten range would deliver calls twice: refused
    (exit 2) unless --force says so."""
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    cdr_db.insert(rows)
    path = write_config(tmp_path, cdr_db.url, source={"start": "2026-11-26 09:00"},
                        state={"retention": "8h"})
    config = make_config(tmp_path, cdr_db.url, state={"retention": "8h"})
    run_once(config, RunOptions(now=NOW))
    # a day later, after a new call moved the watermark on: the first call is forgotten
    cdr_db.insert(clone_call(legs_of(sample_rows, DIRECT_ANSWERED),
                             dt.datetime(2026, 11, 27, 10, 0)))
    run_once(config, RunOptions(now=msk("2026-11-27 12:00")))
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 1} and ledger.pruned_before() is not None
    refused = run_cli("--config", str(path), "run", "--since", "2026-11-26")
    assert refused.exit_code == ExitCode.CONFIG and "--force" in refused.output
    forced = run_cli("--config", str(path), "run", "--since", "2026-11-26", "--force")
    assert forced.exit_code == ExitCode.OK, forced.output


def test_easla_fault_about_one_call_does_not_stop_the_poller(tmp_path, cdr_db, sample_rows):
    """'Object not found' on one upload is that call's problem: it backs off, exit 1, not 2."""
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      monitor=tmp_path / "monitor")
    cdr_db.insert(rows)
    with EaslaServer() as server:
        config = make_config(tmp_path, cdr_db.url, target={"kind": "easla", "easla": {
            "url": server.url, "login": "poller", "password": "secret", "timeout": "3s"}})
        server.fail_next("addFile", "fault", text="Object not found")
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.PARTIAL, report.summary()
        entry = entry_of(config, key_of(rows))
        assert entry.stage == "created" and entry.attempts == 1
        assert "Object not found" in entry.last_error


@pytest.mark.parametrize("args, words", [
    (["run", "--until", "2026-11-01"], "--until needs --since"),
    (["run", "--follow", "--interval", "0.5s"], "at least 1s"),
])
def test_usage_errors(tmp_path, cdr_db, args, words):
    """Options that cannot work together are refused with exit 2 and a reason."""
    path = write_config(tmp_path, cdr_db.url)
    result = run_cli("--config", str(path), *args)
    assert result.exit_code == ExitCode.CONFIG and words in result.output, result.output


def test_config_path_that_is_a_directory_and_easla_without_password(tmp_path, cdr_db):
    """A directory given as --config, or an easla target with no password: exit 2, named."""
    result = run_cli("--config", str(tmp_path), "run")
    assert result.exit_code == ExitCode.CONFIG and "config file" in result.output
    path = write_config(tmp_path, cdr_db.url, target={"kind": "easla"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == ExitCode.CONFIG
    assert "target.easla.password" in result.output


def test_check_never_prints_the_password_hash(tmp_path, cdr_db, mysql_server):
    """`check` reports a writable cdr table by its privileges only, not the user's hash."""
    user = f"poller_w{os.getpid()}"
    database = sa.engine.make_url(cdr_db.url).database
    try:
        try:
            cdr_db.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'Hash-Me-1'")
            cdr_db.execute(f"GRANT SELECT, INSERT ON `{database}`.* TO '{user}'@'%'")
        except sa.exc.SQLAlchemyError as exc:
            pytest.skip(f"the test server's user cannot create users: {exc}")
        url = sa.engine.make_url(cdr_db.url).set(username=user, password="Hash-Me-1")
        path = write_config(tmp_path, url.render_as_string(hide_password=False))
        (tmp_path / "monitor").mkdir()
        result = run_cli("--config", str(path), "check")
        line = next(x for x in result.output.splitlines() if "source grants" in x)
        assert line.startswith("warn") and "INSERT" in line, line
        assert "IDENTIFIED" not in result.output and "Hash-Me-1" not in result.output
        assert "*" not in line.split("ON", 1)[1] or f"`{database}`.*" in line
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # none made, or no right to drop
            cdr_db.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_an_unbuilt_call_is_built_by_the_next_run_within_the_lookback(tmp_path, cdr_db,
                                                                        sample_rows, monkeypatch):
    """Fixed within the lookback, the parked stand-in is rebuilt and delivered by a plain run."""
    import poller.run.read as scan

    broken = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 11, 0))
    cdr_db.insert(broken)
    config = make_config(tmp_path, cdr_db.url)
    real = scan.build_call

    def failing(legs, *args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(scan, "build_call", failing)
    assert run_once(config, RunOptions(now=NOW)).parked == 1
    monkeypatch.setattr(scan, "build_call", real)
    fixed = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert fixed.exit_code == 0 and fixed.new_calls == 1, fixed.summary()
    assert set(archived(tmp_path)) == {key_of(broken)}
    with open_ledger(config) as ledger:
        entry = ledger.entry(key_of(broken))
    assert (entry.stage, entry.attempts, entry.last_error) == ("done", 0, None)


def test_state_database_refusing_the_login_is_a_config_error(tmp_path, cdr_db):
    """Wrong credentials for state.url are configuration (exit 2, so a follow-mode unit stops
    restarting), and the password appears nowhere in the output."""
    host = sa.engine.make_url(cdr_db.url)
    state_url = (f"mysql+pymysql://nobody_{os.getpid()}:Wr0ng/Pa55@{host.host}:"
                 f"{host.port or 3306}/poller_state")
    path = write_config(tmp_path, cdr_db.url, state={"url": state_url})
    (tmp_path / "monitor").mkdir()
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "state" in result.output and "Access denied" in result.output
    assert "Wr0ng" not in result.output and "Pa55" not in result.output


def test_call_record_uses_the_zone_of_its_source():
    """A Hangup-after-midnight call still starts on its own day in its own zone."""
    call = call_of(leg("2026-11-26 23:59:50", duration=15))
    assert call.start.isoformat() == "2026-11-26T23:59:50+03:00"
    assert Path(call.recordings[0]).parts[:3] == ("2026", "11", "26")


def test_a_call_that_cannot_be_built_is_parked_and_built_once_fixed(tmp_path, cdr_db,
                                                                    sample_rows, monkeypatch):
    """A call the code fails to build (a bug) is parked with the error, and neither the batch
    nor the watermark waits on it; `retry` cannot send its stand-in; once the cause is gone,
    a backfill over its date builds and delivers it."""
    import poller.run.read as scan

    broken = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    later = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 30))
    cdr_db.insert(broken + later)
    config = make_config(tmp_path, cdr_db.url)
    real = scan.build_call

    def build(legs, *args):
        legs = list(legs)
        if legs[0].uniqueid == broken[0]["uniqueid"]:
            raise RuntimeError("a bug")
        return real(legs, *args)

    monkeypatch.setattr(scan, "build_call", build)
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.PARTIAL and list(archived(tmp_path)) == [key_of(later)]
    assert report.parked == 1, report.summary()
    with open_ledger(config) as ledger:
        assert ledger.watermark() == later[-1]["calldate"]
        entry = ledger.entry(key_of(broken))
    assert (entry.stage, entry.call.status) == ("failed", "unbuilt")
    assert "could not be built" in entry.last_error and "RuntimeError: a bug" in entry.last_error
    path = write_config(tmp_path, cdr_db.url)
    shown = run_cli("--config", str(path), "status")
    assert "RuntimeError: a bug (once fixed: poller run --since 2026-11-26)" in shown.output
    retried = run_cli("--config", str(path), "retry", "--failed")
    assert retried.exit_code == 0 and "0 calls put back" in retried.output, retried.output

    monkeypatch.setattr(scan, "build_call", real)
    backfill = run_once(config, RunOptions(since=dt.datetime(2026, 11, 26),
                                           now=NOW + dt.timedelta(days=1)))
    assert backfill.exit_code == 0 and sum(backfill.delivered.values()) == 1, backfill.summary()
    assert set(archived(tmp_path)) == {key_of(broken), key_of(later)}
    assert archived(tmp_path)[key_of(broken)]["status"] == "answered"


def test_archive_clears_the_part_file_a_killed_write_left(tmp_path):
    """A run killed mid-write leaves `.<name>.part` beside the record: the next write of that
    record writes over it (only one run writes, under the lock) and leaves others alone."""
    from poller.config.schema import ArchiveConfig

    call = call_of(leg("2026-11-26 09:30:00", duration=15), template="{uniqueid}.wav")
    target = ArchiveTarget(ArchiveConfig(dir=str(tmp_path / "archive")), "Europe/Moscow")
    folder = target.folder(call)
    folder.mkdir(parents=True)
    name = f"{call.key}.json"
    leftover = folder / f".{name}.part"
    leftover.write_bytes(b"half a rec")
    unrelated = folder / ".other.json.part"
    unrelated.write_bytes(b"another record's")
    object_id = target.create(call, call.record(None, None))
    assert (target.root / object_id).is_file() and not leftover.exists()
    assert unrelated.exists()
    assert sorted(p.name for p in folder.iterdir()) == [".other.json.part", name]
    assert json.loads((target.root / object_id).read_text())["key"] == call.key


def test_a_record_without_recording_supersedes_a_hidden_pending_one(tmp_path):
    """A record naming its MP3 waits hidden until the MP3 is in place; if the call is made
    again without one (its MP3 could no longer be made), the stale hidden record goes."""
    from poller.config.schema import ArchiveConfig

    call = call_of(leg("2026-11-26 09:30:00", duration=15), template="{uniqueid}.wav")
    target = ArchiveTarget(ArchiveConfig(dir=str(tmp_path / "archive")), "Europe/Moscow")
    folder = target.folder(call)
    target.create(call, call.record(f"{call.key}.mp3", None))
    assert [p.name for p in folder.iterdir()] == [f".{call.key}.json.pending"]
    object_id = target.create(call, call.record(None, "unreadable"))
    assert [p.name for p in folder.iterdir()] == [f"{call.key}.json"]
    assert (target.root / object_id).is_file()


@pytest.mark.parametrize(("code", "config_error"), [
    (1045, True), (1698, True), (1044, True), (1049, True), (1130, True), (1142, True),
    (2003, False), (2013, False), (1040, False),
])
def test_database_refusals_that_are_configuration(code, config_error):
    """Access denied (MariaDB says 1698 instead of 1045 for some failed logins, unpredictably),
    no such database, host not allowed, no privilege: exit 2. Can't connect, lost connection,
    too many connections: the service is unavailable, retried next run."""
    from poller.databases import database_error
    from poller.errors import ConfigError, ServiceUnavailable

    class Refusal(Exception):
        pass

    error = database_error(Refusal(code, "refused"), "mysql+pymysql://u:Secret@db/x", "state")
    assert isinstance(error, ConfigError if config_error else ServiceUnavailable)
    assert "Secret" not in str(error)
