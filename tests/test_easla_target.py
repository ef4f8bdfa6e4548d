"""The easla target end to end: cdr rows in MariaDB (for some tests a SQLite table first) →
objects and MP3s in a real SOAP server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from easla_server import EaslaServer
from support import (
    ROOT,
    SAMPLES,
    call_json,
    clone_call,
    entry_of,
    insert_rows,
    key_of,
    legs_of,
    make_config,
    msk,
    run_cli,
    write_config,
)

from poller.errors import ExitCode
from poller.recordings.formats import mp3_seconds
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.targets.easla.target import CONFIG_FAULT, VALUE_FAULT, attribute_values, hms

NOW = msk("2026-11-26 12:00")
ANSWERED = "1795675107.1"  # P1-01: answered, recorded
QUEUE = "1795675156.25"  # P1-06: a queue call, answered, recorded
NO_ANSWER = "1795675119.5"  # P1-02: header-only recording


def easla_config(tmp_path: Path, db_url: str, server: EaslaServer, **easla: object):
    section = {"url": server.url, "login": "poller", "password": "secret", "timeout": "3s"}
    section.update(easla)
    return make_config(tmp_path, db_url, target={"kind": "easla", "easla": section},
                       retry={"backoff": "1s", "max_backoff": "1s"})


def three_calls(cdr_url: str, sample_rows, monitor: Path) -> list[list[dict]]:
    calls = [clone_call(legs_of(sample_rows, uid), start, monitor=monitor)
             for uid, start in ((ANSWERED, dt.datetime(2026, 11, 26, 10, 0)),
                                (QUEUE, dt.datetime(2026, 11, 26, 10, 5)),
                                (NO_ANSWER, dt.datetime(2026, 11, 26, 10, 10)))]
    insert_rows(cdr_url, [row for call in calls for row in call])
    return calls


def by_key(server: EaslaServer) -> dict[str, dict]:
    return {obj["attributes"]["incoming_call_key"][0]: obj for obj in server.objects.values()}


def decodes(data: bytes, tmp_path: Path) -> float:
    path = tmp_path / "received.mp3"
    path.write_bytes(data)
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    return mp3_seconds(path)


@pytest.mark.parametrize("style", ["document", "rpc"])
def test_calls_become_objects_with_attributes_and_recordings(tmp_path, cdr_db, sample_rows,
                                                             style):
    """Each incoming call: one object, mapped attributes and statuses, one decodable MP3."""
    calls = three_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    with EaslaServer(style=style) as server:
        config = easla_config(tmp_path, cdr_db.url, server)
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.OK, report.summary()
        objects = by_key(server)
        assert set(objects) == {key_of(c) for c in calls}
        answered = objects[key_of(calls[0])]["attributes"]
        assert answered["incoming_call_number"] == ["+79161002301"]
        assert answered["incoming_call_time"] == ["0:00:09"]
        assert answered["status"] == ["incoming_call_answered"]
        unanswered = objects[key_of(calls[2])]["attributes"]
        assert unanswered["status"] == ["incoming_call_unanswered"]
        files = {key: obj["files"] for key, obj in objects.items()}
        assert files[key_of(calls[2])] == []  # header-only: no recording
        for call in calls[:2]:
            (srcname, data), = files[key_of(call)]
            assert srcname == f"{key_of(call)}.mp3"
            assert decodes(data, tmp_path) > 5
        assert server.logins == 1
        assert server.connections == 1  # WSDL, login, lookups and every call on one connection
        assert [op for op in server.operations() if op in ("getProcess", "getObjectdef")] == [
            "getProcess", "getObjectdef"]


def test_another_namespace_and_prefix_work(tmp_path, cdr_db, sample_rows):
    """Nothing depends on easla's namespace or prefix: another server with the names works."""
    three_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    with EaslaServer(namespace="http://example.invalid/itsm/v2", prefix="itsm") as server:
        report = run_once(easla_config(tmp_path, cdr_db.url, server), RunOptions(now=NOW))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert len(server.objects) == 3


def test_every_call_field_can_be_mapped(tmp_path, cdr_db, sample_rows):
    """start, talk and wait time, who answered, the DID and the recording are mappable."""
    calls = three_calls(cdr_db.url, sample_rows, tmp_path / "monitor")
    mapping = {"key": "incoming_call_key", "start": "incoming_call_start",
               "talk_time": "incoming_call_talk", "wait_time": "incoming_call_wait",
               "answered_by": "incoming_call_agent", "did": "incoming_call_did",
               "recording": "incoming_call_recording", "recording_problem": "incoming_call_problem",
               "status": "status"}
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server, attributes=mapping,
                              start_format="%d.%m.%Y %H:%M")
        assert run_once(config, RunOptions(now=NOW)).exit_code == ExitCode.OK
        first = by_key(server)[key_of(calls[0])]["attributes"]
        assert first["incoming_call_start"] == ["26.11.2026 10:00"]
        assert first["incoming_call_talk"] == ["0:00:06"]
        assert first["incoming_call_wait"] == ["0:00:03"]
        assert first["incoming_call_agent"] == ["201"]
        assert first["incoming_call_did"] == ["74951230001"]
        assert first["incoming_call_recording"] == [f"{key_of(calls[0])}.mp3"]
        assert first["incoming_call_problem"] == [""]
        third = by_key(server)[key_of(calls[2])]["attributes"]
        assert third["incoming_call_problem"] == ["empty"]
        assert third["incoming_call_recording"] == [""]


def test_session_expiry_mid_run_logs_in_again(tmp_path, cdr_url, sample_rows):
    """A session that expires after a few calls: log in once more, retry, lose nothing."""
    calls = three_calls(cdr_url, sample_rows, tmp_path / "monitor")
    with EaslaServer(expire_after=3) as server:
        report = run_once(easla_config(tmp_path, cdr_url, server), RunOptions(now=NOW))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert set(by_key(server)) == {key_of(c) for c in calls}
        assert server.logins >= 2
        assert sum(len(o["files"]) for o in server.objects.values()) == 2


def test_500_on_add_file_then_success_next_run(tmp_path, cdr_db, sample_rows):
    """An upload answered with HTTP 500: the target's fault, so the call is charged nothing;
    the object is kept, the next run attaches — one object, one file."""
    rows = clone_call(legs_of(sample_rows, ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      monitor=tmp_path / "monitor")
    cdr_db.insert(rows)
    key = key_of(rows)
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server)
        server.fail_next("addFile", "http500")
        first = run_once(config, RunOptions(now=NOW))
        assert first.exit_code == ExitCode.PARTIAL
        entry = entry_of(config, key)
        assert entry.stage == "created" and entry.attempts == 0 and entry.object_id
        assert [o["files"] for o in server.objects.values()] == [[]]
        second = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
        assert second.exit_code == ExitCode.OK, second.summary()
        assert len(server.objects) == 1
        (obj,) = server.objects.values()
        assert len(obj["files"]) == 1 and str(next(iter(server.objects))) == entry.object_id
        assert entry_of(config, key).stage == "done"


@pytest.mark.parametrize("kind", [
    "http500", "fault", pytest.param("timeout", marks=pytest.mark.slow), "reset"])
def test_transient_failures_keep_the_call_for_the_next_run(tmp_path, cdr_url, sample_rows, kind):
    """5xx, 'temporarily unavailable', timeouts and resets: exit 1, retried, delivered once."""
    rows = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0))
    insert_rows(cdr_url, rows)
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_url, server, timeout="1s")
        server.fail_next("createObjectref", kind, delay=2.0)
        first = run_once(config, RunOptions(now=NOW))
        assert first.exit_code == ExitCode.PARTIAL
        assert entry_of(config, key_of(rows)).stage == "seen"
        assert server.objects == {}
        second = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
        assert second.exit_code == ExitCode.OK, second.summary()
        assert len(server.objects) == 1


def test_a_fault_about_one_calls_value_sets_back_that_call_only(tmp_path, cdr_db, sample_rows):
    """"Value too long for attribute …" is this call's problem, not the mapping's: the call
    backs off, the run goes on with the next one and exits 1 — never 2 for every run after."""
    calls = [clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, n))
             for n in (0, 1)]
    cdr_db.insert([row for call in calls for row in call])
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server)
        server.fail_next("createObjectref", "fault",
                         text="Value too long for attribute incoming_call_number")
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.PARTIAL and report.failures == 1, report.summary()
        assert set(by_key(server)) == {key_of(calls[1])}
        entry = entry_of(config, key_of(calls[0]))
        assert (entry.stage, entry.attempts) == ("seen", 1)
        assert "Value too long" in entry.last_error


def test_http_413_on_one_upload_sets_back_that_call_only(tmp_path, cdr_db, sample_rows):
    """A 413 (this MP3 too large for the server) is the call's own failure: the object is kept
    at `created`, the other calls are still delivered in the same run."""
    monitor = tmp_path / "monitor"
    calls = three_calls(cdr_db.url, sample_rows, monitor)
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server)
        server.fail_next("addFile", "http500", status=413)
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.PARTIAL and report.failures == 1, report.summary()
        assert len(server.objects) == 3 and not report.unavailable
        assert entry_of(config, key_of(calls[0])).stage == "created"
        assert entry_of(config, key_of(calls[2])).stage == "done"


def test_http_429_throttling_counts_as_unavailable(tmp_path, cdr_db, sample_rows):
    """429 (or 408): the server asks to slow down — the run stops sending (exit 1), the call
    keeps its stage and goes out on a later run."""
    rows = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0))
    cdr_db.insert(rows)
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server)
        server.fail_next("createObjectref", "http500", status=429)
        first = run_once(config, RunOptions(now=NOW))
        assert first.exit_code == ExitCode.PARTIAL and first.unavailable, first.summary()
        assert "HTTP 429" in first.unavailable[0]
        assert server.objects == {}
        second = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
        assert second.exit_code == ExitCode.OK and len(server.objects) == 1


def test_http_404_is_a_wrong_url_exit_2(tmp_path, cdr_db, sample_rows):
    """A 404 from the SOAP address means the URL is wrong for every call: exit 2, nothing done."""
    rows = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0))
    cdr_db.insert(rows)
    with EaslaServer() as server:
        path = _cli_config(tmp_path, cdr_db.url, server)
        server.fail_next("createObjectref", "http500", status=404)
        result = run_cli("--config", str(path), "run")
        assert result.exit_code == ExitCode.CONFIG, result.output
        assert "HTTP 404" in result.output and "target.easla.url" in result.output
    entry = entry_of(make_config(tmp_path, cdr_db.url), key_of(rows))
    assert (entry.stage, entry.attempts) == ("seen", 0)


def test_lost_reply_makes_a_recognisable_duplicate_only(tmp_path, cdr_db, sample_rows):
    """A reply lost in flight is the one way to a duplicate; the call key makes it visible."""
    rows = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0))
    cdr_db.insert(rows)
    with EaslaServer() as server:
        config = easla_config(tmp_path, cdr_db.url, server)
        server.fail_next("createObjectref", "lost_reply")
        assert run_once(config, RunOptions(now=NOW)).exit_code == ExitCode.PARTIAL
        assert run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5))).exit_code == 0
        assert len(server.find_objects("incoming_call_key", key_of(rows))) == 2


def _cli_config(tmp_path, db_url, server, **easla):
    section = {"kind": "easla", "easla": {"url": server.url, "login": "poller",
                                          "password": "secret", "timeout": "3s", **easla}}
    return write_config(tmp_path, db_url, target=section)


@pytest.mark.parametrize("setting, server_args, words", [
    ({"password": "wrong-Pa55word"}, {}, "login"),
    ({"process": "no_such_process"}, {}, "no_such_process"),
    ({"objectdef": "no_such_def"}, {}, "no_such_def"),
    ({}, {"attributes": ("incoming_call_number", "incoming_call_time", "status")},
     "incoming_call_key"),
])
def test_configuration_errors_stop_with_exit_2_and_mark_nothing(tmp_path, cdr_url, sample_rows,
                                                                setting, server_args, words):
    """Wrong password, unknown process, object definition or attribute: exit 2, nothing done."""
    rows = clone_call(legs_of(sample_rows, NO_ANSWER), dt.datetime(2026, 11, 26, 10, 0))
    insert_rows(cdr_url, rows)
    with EaslaServer(**server_args) as server:
        path = _cli_config(tmp_path, cdr_url, server, **setting)
        result = run_cli("--config", str(path), "-v", "run")
        assert result.exit_code == ExitCode.CONFIG, result.output
        assert words in result.output
        assert "wrong-Pa55word" not in result.output and "secret" not in result.output
        assert server.objects == {}
    config = make_config(tmp_path, cdr_url)
    entry = entry_of(config, key_of(rows))
    assert entry.stage == "seen" and entry.attempts == 0


def test_password_never_logged_even_at_debug(tmp_path, cdr_db, sample_rows):
    """-v shows debug lines, never the password (suds logs whole envelopes at debug)."""
    cdr_db.insert(clone_call(legs_of(sample_rows, ANSWERED),
                                    dt.datetime(2026, 11, 26, 10, 0), monitor=tmp_path / "monitor"))
    with EaslaServer(password="Sup3r-S3cret") as server:
        path = _cli_config(tmp_path, cdr_db.url, server, password="Sup3r-S3cret")
        result = run_cli("--config", str(path), "-vv", "run", "--since", "2026-11-26")
        assert result.exit_code == ExitCode.OK, result.output
        assert "DEBUG" in result.output
        assert "Sup3r-S3cret" not in result.output
        assert len(server.objects) == 1


def _long_wav(path: Path, minutes: int) -> Path:
    """A long 8 kHz recording made of real speech, written a second at a time."""
    with wave.open(str(SAMPLES / "recordings/2026/11/26/"
                       "in-74951230001-+79161002313-20261126-094033-1795675233.59.wav")) as src:
        speech = src.readframes(src.getnframes())
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        for _ in range(minutes * 60 // 16):
            out.writeframes(speech)
    return path


@pytest.mark.slow
def test_thirty_minute_recording(tmp_path, cdr_db, sample_rows):
    """A 30-minute call arrives whole: the server decodes 30 minutes of MP3."""
    rows = clone_call(legs_of(sample_rows, ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      keep_name=True, duration=1805, billsec=1800)
    cdr_db.insert(rows)
    wav = _long_wav(tmp_path / "monitor/2026/11/26" / rows[0]["recordingfile"], 30)
    past = wav.stat().st_mtime - 3600
    os.utime(wav, (past, past))  # finished an hour ago: settled
    with EaslaServer() as server:
        report = run_once(easla_config(tmp_path, cdr_db.url, server), RunOptions(now=NOW))
        assert report.exit_code == ExitCode.OK, report.summary()
        (obj,) = server.objects.values()
        (_, data), = obj["files"]
        assert abs(decodes(data, tmp_path) - 1792) < 1.0  # 112 × 16 s of speech
        assert server.max_request_bytes > len(data) * 4 // 3


CLIENT = """
import json, re, sys, datetime as dt
from pathlib import Path
from poller.config.load import from_mapping
from poller.model import Call
from poller.targets.easla.target import EaslaTarget
def rss(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
cfg = from_mapping(json.loads(sys.argv[1]), env={})
target = EaslaTarget(cfg.target.easla, cfg.state.dir)
call = Call.from_json(json.loads(sys.argv[3]))
before = rss("VmRSS")
target.attach("1001", call, Path(sys.argv[2]))
print(json.dumps({"before_kb": before, "peak_kb": rss("VmHWM")}))
"""


@pytest.mark.slow  # uploads tens of MB
def test_upload_memory_stays_flat(tmp_path):
    """Uploading a 30 MB MP3 costs the client far less than the file's size + 40 MB."""
    mp3 = tmp_path / "big.mp3"
    with open(mp3, "wb") as handle:
        for _ in range(30):
            handle.write(bytes(range(256)) * 4096)  # 1 MiB

    with EaslaServer() as server:
        settings = {"source": {"url": "sqlite:///unused.db"},
                    "state": {"dir": str(tmp_path / "state")},
                    "target": {"kind": "easla", "easla": {
                        "url": server.url, "login": "poller", "password": "secret",
                        "timeout": "30s"}}}
        login_client = _make_object(server)
        call = call_json()
        out = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(settings), str(mp3),
                              json.dumps(call)], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        growth_mb = (figures["peak_kb"] - figures["before_kb"]) / 1024
        assert growth_mb < 40, f"addFile of 30 MB grew the client by {growth_mb:.0f} MB"
        assert server.objects[login_client]["files"][0][1] == mp3.read_bytes()


def _make_object(server: EaslaServer) -> int:
    """Create object 1001 directly with a suds client, so attach has something to attach to."""
    import suds.client

    client = suds.client.Client(server.url, cache=None, timeout=5)
    client.service.login("poller", "secret")
    return int(client.service.createObjectref(
        42, None, {"item": [{"key": "incoming_call_key", "values": {"item": ["x"]}}]}))


def test_value_formatting():
    """Durations go as H:MM:SS; unmapped fields are not sent; statuses go through the mapping."""
    from poller.config.schema import EaslaConfig
    from poller.model import Call

    assert [hms(s) for s in (0, 9, 61, 3600, 36000 + 59)] == [
        "0:00:00", "0:00:09", "0:01:01", "1:00:00", "10:00:59"]
    call = Call.from_json(call_json())
    values = attribute_values(EaslaConfig(), call, call.record("x.mp3", None))
    assert values == {"incoming_call_key": "1795675107.0", "incoming_call_number": "+79161002301",
                      "incoming_call_time": "0:00:09", "status": "incoming_call_answered"}
    assert re.fullmatch(r"[A-Za-z0-9+/=]*", base64.b64encode(b"x").decode())


def test_check_reports_easla_reachable_and_unreachable(tmp_path, cdr_url):
    """`poller check` logs in to easla and finds the process and object definition; an
    unreachable easla is a FAIL line (exit 1) with the other checks still printed."""
    (tmp_path / "monitor").mkdir()
    with EaslaServer() as server:
        path = _cli_config(tmp_path, cdr_url, server)
        result = run_cli("--config", str(path), "check")
        line = next(x for x in result.output.splitlines() if x.split()[1:2] == ["target"])
        assert result.exit_code == ExitCode.OK, result.output
        assert line.startswith("ok") and "process 7" in line and "object definition 42" in line
    assert not (tmp_path / "state").exists()  # no WSDL cache: check leaves nothing behind
    down = tmp_path / "down"
    down.mkdir()
    (down / "monitor").mkdir()
    section = {"kind": "easla", "easla": {"url": "http://127.0.0.1:1/user/soap",
                                          "password": "secret", "timeout": "2s"}}
    result = run_cli("--config", str(write_config(down, cdr_url, target=section)), "check")
    assert result.exit_code == ExitCode.PARTIAL, result.output
    line = next(x for x in result.output.splitlines() if x.split()[1:2] == ["target"])
    assert line.startswith("FAIL") and "127.0.0.1:1" in line
    assert "secret" not in result.output
    assert any(x.split()[1:2] == ["recordings"] for x in result.output.splitlines())


@pytest.mark.parametrize(("fault", "mapping_error"), [
    ("Unknown attribute incoming_call_caller", True),
    ("No such attribute: incoming_call_x", True),
    ("Attribute incoming_call_x does not exist", True),
    ('attribute "incoming_call_x" not found', True),
    ("Object has no attribute incoming_call_x", True),
    ("Invalid attribute incoming_call_x", True),
    ("Value too long for attribute incoming_call_number", False),
    ("Invalid value for attribute incoming_call_number", False),
    ("Invalid attribute value: 12:00:99", False),
    ("Attribute incoming_call_status: unknown value 'x'", False),
    ("Attribute incoming_call_status: value 'x' not found in list", False),
    ("Value of attribute incoming_call_status not found in list", False),
    ("Value 'x' for attribute incoming_call_status not found", False),
    ("Service temporarily unavailable", False),
])
def test_which_faults_mean_a_wrong_attribute_mapping(fault, mapping_error):
    """A fault saying an attribute does not exist stops the run (the mapping is wrong for every
    call); one about a value is that call's own, backed off and parked on its own."""
    assert (bool(CONFIG_FAULT.search(fault)) and not VALUE_FAULT.search(fault)) is mapping_error
