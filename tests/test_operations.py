"""What an administrator touches every day: `poller status` (text and JSON), `poller check`,
`poller retry`, the Prometheus metrics file, follow mode, upkeep of the ledger and the archive,
the ledger's own schema version, backfill progress and the logs, on a MariaDB cdr table. The
prune tests, and those that reach code no other test of the fast lane reaches, run on a SQLite
table first (the cdr_url fixture).

Calls are copies of the real sample calls (tests/data/samples) moved to new times by the
helpers of support.py. Runs through the library pin the clock; runs through the command line
use the real clock, so their calls are placed relative to now.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import pty
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from prometheus_client.parser import text_string_to_metric_families
from support import (
    DIRECT_ANSWERED,
    MSK,
    MYSQL_URL,
    OUTGOING,
    QUEUE_ABANDON,
    ROOT,
    archive_files,
    archived,
    cdr_table,
    clone_call,
    direct_calls,
    entry_of,
    insert_rows,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
    open_ledger,
    run_cli,
    watermark_of,
    write_config,
)
from webhook_receiver import WebhookReceiver

from poller.config.load import load
from poller.errors import DeliveryError, LockHeld
from poller.ledger import schema as ledger_module
from poller.ledger.store import Ledger
from poller.model import Call
from poller.run.follow import OutageLog, follow
from poller.run.lock import RunLock
from poller.run.options import Progress, RunOptions
from poller.run.pipeline import run_once
from poller.targets.archive.files import prune_archive
from poller.targets.archive.target import ArchiveTarget

README = (ROOT / "README.md").read_text(encoding="utf-8")
PASSWORD = "Sekr3t-pw"
UNREACHABLE = f"mysql+pymysql://poller:{PASSWORD}@127.0.0.1:1/asteriskcdrdb"
CHECK_NAMES = ["config", "source", "source grants", "state.dir", "state database", "target",
               "encoder", "ffmpeg", "recordings"]


# -- helpers

class RefusingTarget(ArchiveTarget):
    """The real archive target, refusing chosen calls at create or at attach, and counting."""

    def __init__(self, config: Any, counts: Counter[str] | None = None,
                 refuse_create: Callable[[str], bool] = lambda key: False,
                 refuse_attach: Callable[[str], bool] = lambda key: False):
        super().__init__(config.target.archive, config.source.timezone)
        self.counts = counts if counts is not None else Counter()
        self.refuse_create = refuse_create
        self.refuse_attach = refuse_attach

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        self.counts["create"] += 1
        if self.refuse_create(call.key):
            raise DeliveryError("objectdef incoming_call: attribute incoming_call_key rejected")
        return super().create(call, record, mp3)

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        self.counts["attach"] += 1
        if self.refuse_attach(call.key):
            raise DeliveryError("addFile: file too large for the attribute")
        super().attach(object_id, call, mp3)


def refusing(keys: set[str] | None = None, counts: Counter[str] | None = None,
             at: str = "create") -> Callable[[Any], RefusingTarget]:
    """A target factory refusing the given keys (all calls when None)."""
    def refused(key: str) -> bool:
        return keys is None or key in keys

    def factory(config: Any) -> RefusingTarget:
        if at == "create":
            return RefusingTarget(config, counts, refuse_create=refused)
        return RefusingTarget(config, counts, refuse_attach=refused)

    return factory


def check_lines(result: Result) -> list[tuple[str, str, str]]:
    """(outcome, name, detail) of each line `poller check` printed."""
    lines = []
    for line in result.stdout.splitlines():
        lines.append((line[:4].strip(), line[6:21].strip(), line[21:].strip()))
    return lines


def now_local() -> dt.datetime:
    """Now as Moscow wall-clock time (what calldate holds), for runs on the real clock."""
    return dt.datetime.now(MSK).replace(tzinfo=None, microsecond=0)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def metrics_of(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The samples of a Prometheus text file, by family name and then by label set."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str,
          **labels: str) -> float:
    return metrics[name][tuple(sorted(labels.items()))]


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `condition` until it is truthy or the deadline passes (then fail naming `what`)."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.05)


def readme_status_schema() -> dict[str, list[str]]:
    """The README's `status --json` table: each key with the backticked names its row lists."""
    section = README.split("`poller status --json` prints one object", 1)[1]
    table = section.split("\n\n", 2)[1]
    schema = {}
    for line in table.splitlines():
        match = re.match(r"^\| `(\w+)` \| (.*) \|$", line)
        if match:
            schema[match.group(1)] = re.findall(r"`(\w+)`", match.group(2))
    assert "watermark" in schema and "last_run" in schema, table
    return schema


# -- status

def _status_scene(tmp_path: Path, cdr_url: Any, sample_rows: list[dict[str, Any]]
                  ) -> tuple[Any, dict[str, str]]:
    """A morning at 10:00: one call delivered, one parked by a refusing target (max_attempts 1),
    one waiting for its recording, and an outgoing call that ended seconds ago (unsettled)."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    delivered = clone_call(direct, local("2026-11-26 09:30:00"))
    parked = clone_call(direct, local("2026-11-26 09:35:00"))
    waiting = clone_call(direct, local("2026-11-26 09:40:00"), keep_name=True)
    recent = clone_call(legs_of(sample_rows, OUTGOING), local("2026-11-26 09:59:40"))
    insert_rows(cdr_url, delivered + parked + waiting + recent)
    sections = {"retry": {"max_attempts": 1}, "recordings": {"wait": "1h"}}
    config = make_config(tmp_path, cdr_url, **sections)
    keys = {"delivered": key_of(delivered), "parked": key_of(parked),
            "waiting": key_of(waiting), "recording": waiting[0]["recordingfile"]}
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")),
                      target_factory=refusing({keys["parked"]}))
    assert report.exit_code == 1, report.summary()
    assert (sum(report.delivered.values()), report.parked, report.waiting) == (1, 1, 1)
    write_config(tmp_path, cdr_url, **sections)
    return config, keys


def test_status_text_after_a_run(tmp_path, cdr_url, sample_rows, recordings_dir):
    """status after a morning's run: lag, calls by stage, a call waiting for its WAV, one parked."""
    _, keys = _status_scene(tmp_path, cdr_url, sample_rows)
    result = run_cli("--config", str(tmp_path / "poller.toml"), "status")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "watermark:   2026-11-26 09:40:00 +03:00\n" in text
    # the outgoing call of 09:59:40 was still settling: the watermark stays at 09:40
    assert "newest row:  2026-11-26 09:59:40 +03:00 (watermark 19m40s behind)" in text
    assert re.search(r"^now:         \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+03:00 \(Europe/Moscow; every "
                     r"time below is in this zone\)$", text, re.M), text
    assert "calls:       done 1, failed 1, seen 1\n" in text
    waiting = text.split("waiting:\n", 1)[1].split("failed (", 1)[0]
    assert keys["waiting"] in waiting
    assert f"waiting for recording {keys['recording']} (not there yet)" in waiting
    assert keys["parked"] not in waiting and keys["delivered"] not in waiting
    failed = text.split("failed (requeue: `poller retry KEY ...` or `poller retry --failed`):\n",
                        1)[1]
    assert re.search(rf"^  {re.escape(keys['parked'])} +1 attempt: objectdef incoming_call: "
                     r"attribute incoming_call_key rejected$", failed, re.M), failed
    assert re.search(r"^last run:    \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+03:00: 1 delivered, "
                     r"1 waiting, 1 failed, 4 rows read, [\d.]+s$", text, re.M), text


def test_status_json_after_a_run(tmp_path, cdr_db, sample_rows, recordings_dir):
    """status --json after that run: every README key, lag_seconds, waiting reason, last_error."""
    _, keys = _status_scene(tmp_path, cdr_db.url, sample_rows)
    result = run_cli("--config", str(tmp_path / "poller.toml"), "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)

    schema = readme_status_schema()
    assert set(schema) <= set(status), set(schema) - set(status)
    assert status["schema"] == 1
    assert status["watermark"] == "2026-11-26T09:40:00+03:00"
    assert status["newest_row"] == "2026-11-26T09:59:40+03:00"
    assert status["lag_seconds"] == 19 * 60 + 40
    assert status["source_error"] is None
    now = dt.datetime.fromisoformat(status["now"])
    assert now.utcoffset() == dt.timedelta(hours=3) and status["zone"] == "Europe/Moscow"
    assert abs((now.replace(tzinfo=None) - now_local()).total_seconds()) < 60
    assert {stage: n for stage, n in status["calls"].items() if n} == {"done": 1, "failed": 1,
                                                                       "seen": 1}

    entry_fields = schema["waiting"]
    assert "reason" in entry_fields and "next_attempt_at" in entry_fields
    assert [e["key"] for e in status["waiting"]] == [keys["waiting"]]
    waiting = status["waiting"][0]
    assert set(entry_fields) <= set(waiting)
    assert waiting["stage"] == "seen" and waiting["attempts"] == 0
    assert waiting["start"] == "2026-11-26T09:40:00+03:00" and waiting["status"] == "answered"
    assert waiting["reason"] == f"waiting for recording {keys['recording']} (not there yet)"
    assert waiting["next_attempt_at"] == "2026-11-26T10:00:30+03:00"  # 10:00 + 30 s
    assert waiting["last_error"] is None and waiting["object_id"] is None

    assert [e["key"] for e in status["failed"]] == [keys["parked"]]
    failed = status["failed"][0]
    assert set(entry_fields) <= set(failed)
    assert (failed["stage"], failed["attempts"], failed["next_attempt_at"]) == ("failed", 1, None)
    assert failed["last_error"] == "objectdef incoming_call: attribute incoming_call_key rejected"

    last = status["last_run"]
    assert (last["rows"], last["new_calls"], last["skipped"]) == (4, 3, 0)
    assert last["delivered"] == {"answered": 1}
    assert (last["failures"], last["parked"], last["waiting"]) == (1, 1, 1)
    assert (last["recordings"], last["recording_bytes"], last["unavailable"]) == (0, 0, [])
    assert last["watermark"] == "2026-11-26T09:40:00+03:00"
    assert last["newest_row"] == "2026-11-26T09:59:40+03:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00", last["finished_at"])
    # one format for every time: ISO 8601 in the source zone with its offset
    stamps = [value for value in _strings(status) if re.match(r"\d{4}-\d\d-\d\d[T ]", value)]
    assert len(stamps) >= 8, stamps
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00", v) for v in stamps), stamps
    # and the README's table names every key the JSON has
    assert set(status) == set(schema), set(status) ^ set(schema)
    nested = {"matched", "unmatched", "opened", "joined", "created"}  # callers', incidents'
    assert set(last) == set(schema["last_run"]) - nested, set(last) ^ set(schema["last_run"])
    assert nested <= set(schema["last_run"])
    assert set(status["incidents"]) <= set(schema["incidents"])
    assert {"key", "attempts", "last_error"} <= set(schema["failed_incidents"])


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_status_json_lists_every_stage_even_at_zero(tmp_path, cdr_db, sample_rows,
                                                    recordings_dir):
    """A script reads calls.failed from status --json: all six documented stages, 0 if none."""
    _status_scene(tmp_path, cdr_db.url, sample_rows)
    status = json.loads(run_cli("--config", str(tmp_path / "poller.toml"), "status",
                            "--json").stdout)
    assert set(readme_status_schema()["calls"]) == {"seen", "created", "attached", "done",
                                                    "failed", "skipped"}
    assert status["calls"] == {"seen": 1, "created": 0, "attached": 0, "done": 1, "failed": 1,
                               "skipped": 0}


def test_status_with_the_source_down_still_shows_the_ledger(tmp_path, cdr_db, sample_rows):
    """cdr database down: status still shows the ledger, says unreachable, hides the password."""
    direct_calls(cdr_db.url, sample_rows, local("2026-11-26 09:30:00"))
    report = run_once(make_config(tmp_path, cdr_db.url), RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    path = write_config(tmp_path, UNREACHABLE)

    result = run_cli("--config", str(path), "status")
    assert result.exit_code == 0, result.output
    assert "watermark:   2026-11-26 09:30:00 +03:00" in result.stdout
    assert "calls:       done 1" in result.stdout
    assert re.search(r"^cdr table:   unreachable: .*127\.0\.0\.1", result.stdout, re.M), \
        result.stdout
    assert PASSWORD not in result.output

    result = run_cli("--config", str(path), "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert "unreachable" in status["source_error"] and PASSWORD not in status["source_error"]
    assert (status["newest_row"], status["lag_seconds"]) == (None, None)
    assert status["watermark"] == "2026-11-26T09:30:00+03:00"
    assert {stage: n for stage, n in status["calls"].items() if n} == {"done": 1}
    assert PASSWORD not in result.output


def test_status_before_the_first_run(tmp_path, cdr_db):
    """status on a fresh install (no ledger yet) says so, exits 0 and creates nothing."""
    path = write_config(tmp_path, cdr_db.url)
    result = run_cli("--config", str(path), "status")
    assert result.exit_code == 0, result.output
    assert "watermark:   none yet" in result.stdout
    assert "newest row:  the cdr table is empty" in result.stdout
    assert "last run:    never" in result.stdout
    assert not (tmp_path / "state" / "state.db").exists()


# -- check

def test_check_all_pass_against_mariadb_and_the_archive(tmp_path, cdr_db, sample_rows,
                                                        recordings_dir):
    """check on MariaDB + archive: one line per check, ok/warn (grants warn for root), exit 0."""
    direct_calls(cdr_db.url, sample_rows, local("2026-11-26 09:30:00"))
    path = write_config(tmp_path, cdr_db.url)
    result = run_cli("--config", str(path), "check")
    assert result.exit_code == 0, result.output
    lines = check_lines(result)
    assert [name for _, name, _ in lines] == CHECK_NAMES, result.stdout
    outcomes = {name: (outcome, detail) for outcome, name, detail in lines}
    assert all(outcome in ("ok", "warn") for outcome, _, _ in lines), result.stdout
    assert outcomes["source"][0] == "ok"
    assert re.fullmatch(r"table 'cdr' on MariaDB [\d.]+ through pymysql [\d.]+, newest call "
                        r"2026-11-26 09:30:00", outcomes["source"][1]), outcomes["source"]
    assert outcomes["source grants"][0] == "warn"
    assert "may write" in outcomes["source grants"][1]
    # nothing exists yet: check makes nothing (run as root it would leave root-owned files)
    assert outcomes["target"] == ("ok", f"archive {tmp_path / 'archive'} will be made by the "
                                        "first run")
    assert outcomes["encoder"][0] == "ok" and outcomes["recordings"][0] == "ok"
    assert outcomes["state database"] == ("ok", "no ledger yet: the first run makes it")
    assert cdr_db.execute("SELECT COUNT(*) FROM cdr").scalar() == 1
    assert not (tmp_path / "archive").exists() and not (tmp_path / "state").exists()

    (tmp_path / "archive").mkdir()
    result = run_cli("--config", str(path), "check")
    outcomes = {name: (outcome, detail) for outcome, name, detail in check_lines(result)}
    assert outcomes["target"] == ("ok", f"archive {tmp_path / 'archive'} writable")
    leftovers = [p.name for p in (tmp_path / "archive").iterdir()]
    assert leftovers == [], leftovers  # the probe file is removed again


def test_check_read_only_user_passes_the_grants_check(tmp_path, cdr_db, recordings_dir):
    """check with the recommended SELECT-only account: the grants line is ok, password hidden."""
    user = f"poller_ro_{os.getpid()}"
    database = cdr_db.url.rsplit("/", 1)[1]
    admin = sa.create_engine(MYSQL_URL, poolclass=sa.pool.NullPool)
    try:
        try:
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'"))
                conn.execute(sa.text(f"GRANT SELECT ON `{database}`.`cdr` TO '{user}'@'%'"))
        except sa.exc.SQLAlchemyError as exc:
            pytest.skip(f"the test server's user cannot create a read-only account: {exc}")
        host = sa.engine.make_url(MYSQL_URL)
        url = f"mysql+pymysql://{user}:{PASSWORD}@{host.host}:{host.port or 3306}/{database}"
        result = run_cli("--config", str(write_config(tmp_path, url)), "check")
        assert result.exit_code == 0, result.output
        outcomes = {name: (outcome, detail) for outcome, name, detail in check_lines(result)}
        assert outcomes["source"][0] == "ok"
        assert outcomes["source grants"] == ("ok", "read-only on the cdr table")
        assert PASSWORD not in result.output
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.begin() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def test_check_unreachable_source_fails_that_line_only(tmp_path, recordings_dir):
    """check with the cdr database down (port 1): source FAIL, others still printed, exit 1."""
    result = run_cli("--config", str(write_config(tmp_path, UNREACHABLE)), "check")
    assert result.exit_code == 1, result.output
    lines = check_lines(result)
    outcomes = {name: (outcome, detail) for outcome, name, detail in lines}
    assert outcomes["source"][0] == "FAIL"
    assert "unreachable" in outcomes["source"][1] and "127.0.0.1" in outcomes["source"][1]
    others = [name for name in CHECK_NAMES if name not in ("source", "source grants")]
    assert all(name in outcomes for name in others), result.stdout
    assert [name for outcome, name, _ in lines if outcome == "FAIL"] == ["source"]
    assert PASSWORD not in result.output


def test_check_missing_recordings_folder_fails(tmp_path, cdr_db):
    """check with recordings.dir missing (spool not mounted): recordings FAIL, exit 1."""
    result = run_cli("--config", str(write_config(tmp_path, cdr_db.url)), "check")
    assert result.exit_code == 1, result.output
    lines = check_lines(result)
    assert [name for _, name, _ in lines] == CHECK_NAMES
    outcomes = {name: (outcome, detail) for outcome, name, detail in lines}
    assert outcomes["recordings"] == ("FAIL", f"{tmp_path / 'monitor'} is not a directory")
    assert [name for outcome, name, _ in lines if outcome == "FAIL"] == ["recordings"]


def test_check_invalid_config_exits_2(tmp_path, cdr_db):
    """check on a config with a misspelt key: exit 2 naming it, no check runs."""
    path = write_config(tmp_path, cdr_db.url, state={"retension": "90d"})
    result = run_cli("--config", str(path), "check")
    assert result.exit_code == 2, result.output
    assert "unknown key 'state.retension'" in result.output
    assert result.stdout.startswith("FAIL  config          ")
    assert len(result.stdout.splitlines()) == 1  # no check runs


# -- retry

def test_a_check_that_breaks_is_its_own_failed_line_and_the_others_still_run(tmp_path,
                                                                              monkeypatch):
    """A folder this user may not touch names the file and the user; a bug in one check is
    that check's FAIL line, never a crash that hides what the later checks would say."""
    from poller.ops import check

    def refused(config: Any) -> Any:
        raise PermissionError(13, "Permission denied", "/var/lib/poller/state.db")
        yield  # a generator, as the checks are

    def broken(config: Any) -> Any:
        raise KeyError("a bug")
        yield

    checks = dict(check.CHECKS)
    checks["state"], checks["target"] = refused, broken
    monkeypatch.setattr(check, "CHECKS", list(checks.items()))
    config = make_config(tmp_path, cdr_table(tmp_path, []))
    by_name = {result.name: result for result in check.run_checks(config)}
    assert by_name["state"].outcome == check.FAIL
    assert by_name["state"].detail.startswith("Permission denied /var/lib/poller/state.db (as ")
    assert (by_name["target"].outcome, by_name["target"].detail) == (check.FAIL,
                                                                     "KeyError: 'a bug'")
    assert by_name["source"].outcome == check.OK and "recordings" in by_name


def _parked(tmp_path: Path, cdr_url: Any, sample_rows: list[dict[str, Any]], count: int = 2,
            **options: Any) -> tuple[Any, list[str]]:
    """`count` calls parked as failed by a refusing target with retry.max_attempts 1."""
    at = options.pop("at", "create")
    calls = direct_calls(cdr_url, sample_rows,
                         *(local(f"2026-11-26 09:3{i}:00") for i in range(count)), **options)
    config = make_config(tmp_path, cdr_url, retry={"max_attempts": 1})
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")),
                      target_factory=refusing(at=at))
    assert report.exit_code == 1 and report.parked == count, report.summary()
    write_config(tmp_path, cdr_url, retry={"max_attempts": 1})
    return config, [key_of(rows) for rows in calls]


def test_retry_one_key_then_the_next_run_delivers_it(tmp_path, cdr_url, sample_rows):
    """retry KEY once the target is fixed: back to seen, delivered next run; the other stays."""
    config, (first, second) = _parked(tmp_path, cdr_url, sample_rows)
    result = run_cli("--config", str(tmp_path / "poller.toml"), "retry", first)
    assert result.exit_code == 0, result.output
    assert "1 call put back in line" in result.stdout
    entry = entry_of(config, first)
    assert (entry.stage, entry.attempts, entry.next_attempt_at) == ("seen", 0, None)
    assert entry_of(config, second).stage == "failed"

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:05")))
    assert report.exit_code == 0 and sum(report.delivered.values()) == 1, report.summary()
    assert set(archived(tmp_path)) == {first}
    assert entry_of(config, first).stage == "done"
    assert entry_of(config, second).stage == "failed"


def test_retry_failed_requeues_every_parked_call(tmp_path, cdr_db, sample_rows):
    """retry --failed requeues all three parked calls and the next run delivers them."""
    config, keys = _parked(tmp_path, cdr_db.url, sample_rows, count=3)
    result = run_cli("--config", str(tmp_path / "poller.toml"), "retry", "--failed")
    assert result.exit_code == 0, result.output
    assert "3 calls put back in line" in result.stdout
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"seen": 3}
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:05")))
    assert sum(report.delivered.values()) == 3, report.summary()
    assert set(archived(tmp_path)) == set(keys)


def test_retry_of_a_call_parked_after_its_object_was_made(tmp_path, cdr_db, sample_rows,
                                                          recordings_dir):
    """Parked after create (attach refused): retry puts it at created; next run only attaches."""
    config, (key,) = _parked(tmp_path, cdr_db.url, sample_rows, count=1,
                             monitor=tmp_path / "monitor", at="attach")
    parked = entry_of(config, key)
    assert parked.stage == "failed" and parked.object_id == f"2026/11/26/{key}.json"
    result = run_cli("--config", str(tmp_path / "poller.toml"), "retry", key)
    assert result.exit_code == 0, result.output
    assert (entry_of(config, key).stage, entry_of(config, key).attempts) == ("created", 0)

    counts: Counter[str] = Counter()
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:05")),
                      target_factory=refusing(set(), counts))
    assert report.exit_code == 0 and report.recordings == 1, report.summary()
    assert counts == {"attach": 1}
    assert [p.name for p in archive_files(tmp_path, ".mp3")] == [f"{key}.mp3"]
    assert entry_of(config, key).stage == "done"


def test_retry_unknown_key_exits_2_naming_it(tmp_path, cdr_db, sample_rows):
    """retry with a mistyped key: exit 2 naming it, nothing requeued."""
    config, (first, _) = _parked(tmp_path, cdr_db.url, sample_rows)
    result = run_cli("--config", str(tmp_path / "poller.toml"), "retry", first, "1795675107.999")
    assert result.exit_code == 2, result.output
    assert "unknown call key(s): 1795675107.999" in result.output
    assert entry_of(config, first).stage == "failed"


def test_retry_key_and_failed_together_or_neither_exit_2(tmp_path, cdr_db, sample_rows):
    """retry KEY --failed, or a bare retry, is a usage error: exit 2."""
    config, (first, _) = _parked(tmp_path, cdr_db.url, sample_rows)
    path = str(tmp_path / "poller.toml")
    for args, said in ((["retry", first, "--failed"], "name calls by KEY or give --failed, not "
                        "both"), (["retry"], "name the parked calls by KEY (as `poller status` "
                                  "lists them), or give --failed for all of them")):
        result = run_cli("--config", path, *args)
        assert result.exit_code == 2, result.output
        assert said in result.output
    assert entry_of(config, first).stage == "failed"


def test_retry_before_the_first_run_exits_2(tmp_path, cdr_db):
    """retry --failed on a fresh install: no ledger yet, exit 2, none created."""
    result = run_cli("--config", str(write_config(tmp_path, cdr_db.url)), "retry", "--failed")
    assert result.exit_code == 2, result.output
    assert "the ledger does not exist yet" in result.output
    assert not (tmp_path / "state" / "state.db").exists()


def test_retry_works_while_a_run_holds_the_lock(tmp_path, cdr_db, sample_rows):
    """retry while a follow service holds the run lock: requeued without waiting."""
    config, (first, _) = _parked(tmp_path, cdr_db.url, sample_rows)
    with RunLock(tmp_path / "state"):
        result = run_cli("--config", str(tmp_path / "poller.toml"), "retry", first)
        assert result.exit_code == 0, result.output
        assert entry_of(config, first).stage == "seen"


def test_retry_of_a_call_that_is_not_parked_leaves_it(tmp_path, cdr_db, sample_rows):
    """retry KEY of a call already delivered: a warning, nothing changed, exit 0."""
    calls = direct_calls(cdr_db.url, sample_rows, local("2026-11-26 09:30:00"))
    config = make_config(tmp_path, cdr_db.url)
    run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    result = run_cli("--config", str(write_config(tmp_path, cdr_db.url)), "retry", key_of(calls[0]))
    assert result.exit_code == 0, result.output
    assert "is not waiting nor parked (stage done)" in result.output
    assert "0 calls put back in line" in result.stdout
    assert entry_of(config, key_of(calls[0])).stage == "done"


def test_retry_key_brings_forward_a_call_backing_off(tmp_path, cdr_url, sample_rows, caplog):
    """A call backing off after a failed attempt: `retry KEY` said `is not parked (stage
    seen): left as it is` and `0 calls put back in line`, and the run line counted it `1
    failed (0 parked), 0 waiting` while `status` listed it under `waiting:`. Now the run line,
    status and retry all call it waiting, retry brings it forward (its attempts forgotten),
    and the next run delivers it long before its back-off ends."""
    calls = direct_calls(cdr_url, sample_rows, local("2026-11-26 09:30:00"))
    key = key_of(calls[0])
    path = write_config(tmp_path, cdr_url)
    config = load(path, env={})
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")),
                      target_factory=refusing())
    assert "1 waiting (1 to retry after a failed attempt), 0 failed" in report.summary()
    backing_off = entry_of(config, key)
    assert (backing_off.stage, backing_off.attempts) == ("seen", 1)
    assert backing_off.next_attempt_at is not None
    text = run_cli("--config", str(path), "status").stdout
    assert key in text.split("waiting:\n", 1)[1] and "failed (requeue" not in text
    assert "1 waiting (1 to retry after a failed attempt), 0 failed" in text
    # a run before the back-off ends does not try it: waiting all the same, as status says
    between = run_once(config, RunOptions(now=msk("2026-11-26 10:00:30")),
                       target_factory=refusing())
    assert "1 waiting (1 not due yet), 0 failed" in between.summary()

    result = run_cli("--config", str(path), "retry", key)
    assert result.exit_code == 0, result.output
    assert "1 call put back in line" in result.stdout
    assert f"call {key} was waiting (after 1 failed attempt: " in result.output
    assert "not parked" not in result.output
    entry = entry_of(config, key)
    assert (entry.stage, entry.attempts, entry.next_attempt_at) == ("seen", 0, None)
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:01")))
    assert report.delivered_count == 1, report.summary()
    assert entry_of(config, key).stage == "done"


# -- metrics

def _recent_morning(cdr_url: Any, sample_rows: list[dict[str, Any]], monitor: Path
                    ) -> tuple[dt.datetime, list[list[dict[str, Any]]]]:
    """Half an hour ago (real clock): two answered calls (one recorded), a caller who gave up
    in the queue and an outgoing call; returns a source.start before them, and the calls."""
    base = now_local() - dt.timedelta(minutes=30)
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    calls = [clone_call(direct, base),
             clone_call(direct, base + dt.timedelta(minutes=1), monitor=monitor),
             clone_call(legs_of(sample_rows, QUEUE_ABANDON), base + dt.timedelta(minutes=2)),
             clone_call(legs_of(sample_rows, OUTGOING), base + dt.timedelta(minutes=3))]
    insert_rows(cdr_url, [row for rows in calls for row in rows])
    return base - dt.timedelta(minutes=30), calls


def test_metrics_file_after_a_run(tmp_path, cdr_db, sample_rows, recordings_dir):
    """run --metrics-file after a morning's calls: each README metric with this run's numbers."""
    start, calls = _recent_morning(cdr_db.url, sample_rows, tmp_path / "monitor")
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(start)})
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    prom = textfile / "poller.prom"

    before = time.time()
    result = run_cli("--config", str(path), "run", "--metrics-file", str(prom))
    assert result.exit_code == 0, result.output
    after = time.time()
    metrics = metrics_of(prom)
    delivered = {status: value(metrics, "poller_last_run_calls_delivered", status=status)
                 for status in ("answered", "unanswered", "busy", "impossible")}
    assert delivered == {"answered": 2, "unanswered": 1, "busy": 0, "impossible": 0}
    assert value(metrics, "poller_last_run_calls_new") == 3
    assert value(metrics, "poller_last_run_calls_skipped") == 1
    assert value(metrics, "poller_last_run_recordings_uploaded") == 1
    mp3s = archive_files(tmp_path, ".mp3")
    assert len(mp3s) == 1
    assert value(metrics, "poller_last_run_recording_bytes_uploaded") == mp3s[0].stat().st_size
    assert value(metrics, "poller_last_run_failures") == 0
    assert value(metrics, "poller_last_run_rows_read") == sum(len(rows) for rows in calls)
    assert value(metrics, "poller_last_run_service_unavailable") == 0
    assert 0 < value(metrics, "poller_last_run_duration_seconds") < after - before
    for name in ("poller_last_run_timestamp_seconds", "poller_last_success_timestamp_seconds"):
        assert before <= value(metrics, name) <= after, name
    assert value(metrics, "poller_ledger_calls", stage="done") == 3
    assert value(metrics, "poller_ledger_calls", stage="skipped") == 1
    assert value(metrics, "poller_calls_parked") == 0
    mark = watermark_of(make_config(tmp_path, cdr_db.url))
    assert mark == calls[-1][-1]["calldate"]
    # the run read up to the watermark's own row: nothing newer waits
    assert value(metrics, "poller_watermark_lag_seconds") == 0
    assert sorted(p.name for p in textfile.iterdir()) == ["poller.prom"]


def test_metrics_leave_out_the_lag_while_the_source_is_down(tmp_path, cdr_db, sample_rows,
                                                             recordings_dir):
    """A run that cannot read the cdr table writes no lag (a 0 would silence a lag alert); the
    next run that reads it, quiet or not, writes one again."""
    start, _ = _recent_morning(cdr_db.url, sample_rows, tmp_path / "monitor")
    prom = tmp_path / "poller.prom"
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(start)})
    assert run_cli("--config", str(path), "run", "--metrics-file", str(prom)).exit_code == 0
    down = write_config(tmp_path, UNREACHABLE, source={"start": stamp(start)})
    assert run_cli("--config", str(down), "run", "--metrics-file", str(prom)).exit_code == 1
    metrics = metrics_of(prom)
    assert "poller_watermark_lag_seconds" not in metrics
    assert value(metrics, "poller_last_run_service_unavailable") == 1
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(start)})
    assert run_cli("--config", str(path), "run", "--metrics-file", str(prom)).exit_code == 0
    assert value(metrics_of(prom), "poller_watermark_lag_seconds") == 0


def test_metrics_lag_when_no_row_was_read_is_zero(tmp_path, cdr_db, sample_rows, recordings_dir):
    """The run reads no row at all (here the site purged its cdr table overnight) yet read the
    table: nothing is newer than the watermark, the lag is 0 and present (an `absent()` alert
    is for an unreadable table only)."""
    direct_calls(cdr_db.url, sample_rows, local("2026-11-26 09:30:00"))
    config = make_config(tmp_path, cdr_db.url)
    prom = tmp_path / "poller.prom"
    run_once(config, RunOptions(now=msk("2026-11-26 10:00"), metrics_file=str(prom)))
    cdr_db.execute("DELETE FROM cdr")
    night = run_once(config, RunOptions(now=msk("2026-11-26 23:00"), metrics_file=str(prom)))
    assert night.rows == 0 and night.newest_row is None, night.summary()
    assert value(metrics_of(prom), "poller_watermark_lag_seconds") == 0


def test_metrics_file_is_replaced_atomically(tmp_path, cdr_db, sample_rows, recordings_dir):
    """Each run renames a new metrics file into place (new inode), no temporary file left."""
    start, _ = _recent_morning(cdr_db.url, sample_rows, tmp_path / "monitor")
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(start)})
    prom = tmp_path / "textfile" / "poller.prom"
    prom.parent.mkdir()
    prom.write_text("# a scrape in progress holds this inode\n")
    held = open(prom, encoding="utf-8")  # a reader keeps the old file open across the runs
    try:
        inodes = [prom.stat().st_ino]
        for _ in range(2):
            result = run_cli("--config", str(path), "run", "--metrics-file", str(prom))
            assert result.exit_code == 0, result.output
            inodes.append(prom.stat().st_ino)
            assert sorted(p.name for p in prom.parent.iterdir()) == ["poller.prom"]
        assert len(set(inodes)) == 3, inodes
        assert held.read() == "# a scrape in progress holds this inode\n"  # untouched
    finally:
        held.close()
    metrics = metrics_of(prom)
    assert value(metrics, "poller_last_run_calls_new") == 0
    assert value(metrics, "poller_last_run_calls_delivered", status="answered") == 0
    assert value(metrics, "poller_ledger_calls", stage="done") == 3


def test_metrics_file_from_the_config(tmp_path, cdr_db, sample_rows, recordings_dir):
    """[metrics] file makes a plain run write it; --metrics-file wins over it."""
    start, _ = _recent_morning(cdr_db.url, sample_rows, tmp_path / "monitor")
    configured = tmp_path / "poller.prom"
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(start)},
                        metrics={"file": str(configured)})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 0, result.output
    metrics = metrics_of(configured)
    assert value(metrics, "poller_last_run_calls_delivered", status="answered") == 2
    assert value(metrics, "poller_ledger_calls", stage="done") == 3

    configured.unlink()
    other = tmp_path / "other.prom"
    result = run_cli("--config", str(path), "run", "--metrics-file", str(other))
    assert result.exit_code == 0, result.output
    assert other.is_file() and not configured.exists()


def test_metrics_after_a_run_that_parked_calls(tmp_path, cdr_db, sample_rows):
    """Metrics after a run whose target refused both calls: 2 failures, 2 parked."""
    direct_calls(cdr_db.url, sample_rows, local("2026-11-26 09:30:00"),
                 local("2026-11-26 09:31:00"))
    prom = tmp_path / "poller.prom"
    config = make_config(tmp_path, cdr_db.url, retry={"max_attempts": 1})
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00"), metrics_file=str(prom)),
                      target_factory=refusing())
    assert report.exit_code == 1, report.summary()
    metrics = metrics_of(prom)
    assert value(metrics, "poller_last_run_failures") == 2
    assert value(metrics, "poller_calls_parked") == 2
    assert value(metrics, "poller_ledger_calls", stage="failed") == 2
    assert value(metrics, "poller_last_run_calls_delivered", status="answered") == 0
    assert value(metrics, "poller_last_run_calls_new") == 2


def test_last_success_survives_a_failing_run(tmp_path, cdr_db, sample_rows):
    """After a good run then a failing one, last_success still holds the good run's time."""
    direct_calls(cdr_db.url, sample_rows, local("2026-11-26 09:30:00"))
    prom = tmp_path / "poller.prom"
    config = make_config(tmp_path, cdr_db.url, retry={"max_attempts": 1})
    run_once(config, RunOptions(now=msk("2026-11-26 10:00"), metrics_file=str(prom)))
    good = value(metrics_of(prom), "poller_last_success_timestamp_seconds")

    direct_calls(cdr_db.url, sample_rows, local("2026-11-26 10:01:00"))
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:05"), metrics_file=str(prom)),
                      target_factory=refusing())
    assert report.exit_code == 1, report.summary()
    metrics = metrics_of(prom)
    assert value(metrics, "poller_calls_parked") == 1
    assert "poller_last_success_timestamp_seconds" in metrics, sorted(metrics)
    assert value(metrics, "poller_last_success_timestamp_seconds") == good


# -- follow mode

@contextlib.contextmanager
def following(config: Any, interval: float = 0.05) -> Iterator[tuple[threading.Event, list[Any]]]:
    """follow() in a thread; always stopped and joined on the way out."""
    stop = threading.Event()
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(follow(config, interval, stop=stop))
        except BaseException as exc:  # reported by the test, not lost in the thread
            outcome.append(exc)

    thread = threading.Thread(target=target, name="follow", daemon=True)
    thread.start()
    try:
        yield stop, outcome
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "follow() did not stop within 10 s of the stop event"


def test_follow_delivers_calls_inserted_while_it_runs(tmp_path, cdr_db, sample_rows):
    """follow(): calls written while it runs are delivered, lock freed between polls, stops."""
    config = make_config(tmp_path, cdr_db.url, source={"settle": "0s", "start": ""})
    state = tmp_path / "state"
    with following(config) as (stop, outcome):
        wait_for(lambda: (state / "state.db").is_file(), 10, "the first poll")
        calls = direct_calls(cdr_db.url, sample_rows, now_local() - dt.timedelta(minutes=2),
                             now_local() - dt.timedelta(minutes=1))
        keys = {key_of(rows) for rows in calls}
        wait_for(lambda: set(archived(tmp_path)) == keys, 10, "the calls in the archive")

        def lock_is_free() -> bool:
            try:
                with RunLock(state):
                    return True
            except LockHeld:
                return False

        wait_for(lock_is_free, 10, "the run lock to be free between polls")
        later = direct_calls(cdr_db.url, sample_rows, now_local() - dt.timedelta(seconds=30))
        wait_for(lambda: key_of(later[0]) in archived(tmp_path), 10, "a third call")
        stop.set()
        wait_for(lambda: outcome, 10, "follow() to return")
    assert outcome == [0]
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 3}


def test_follow_polls_again_after_finding_the_lock_held(tmp_path, cdr_url, sample_rows):
    """follow() while a backfill holds the lock: polls give way, then deliver once it is free."""
    config = make_config(tmp_path, cdr_url, source={"settle": "0s", "start": ""})
    calls = direct_calls(cdr_url, sample_rows, now_local() - dt.timedelta(minutes=2))
    backfill = RunLock(tmp_path / "state")
    backfill.__enter__()
    try:
        with following(config) as (_, outcome):
            time.sleep(0.3)  # several polls find the lock held
            assert not archive_files(tmp_path, ".json") and not outcome
            backfill.__exit__(None, None, None)
            wait_for(lambda: key_of(calls[0]) in archived(tmp_path), 10, "the call delivered")
            assert not outcome  # still following
    finally:
        backfill.__exit__(None, None, None)


def test_follow_says_an_outage_when_it_starts_and_when_it_ends(tmp_path, cdr_url, sample_rows,
                                                              caplog):
    """A receiver answering 500 for a while: one line when the outage starts, one when it
    ends (with its length), not an ERROR per poll; then the call is delivered."""
    with WebhookReceiver() as receiver:
        target = {"kind": "webhook", "webhook": {"url": receiver.url, "secret": receiver.secret,
                                                 "timeout": "1s"}}
        config = make_config(tmp_path, cdr_url, target=target,
                             source={"settle": "0s", "start": ""})
        receiver.fail_next("http500", count=8)
        calls = direct_calls(cdr_url, sample_rows, now_local() - dt.timedelta(minutes=2))
        with caplog.at_level(logging.INFO, logger="poller"), \
                following(config, interval=0.02) as (stop, _):
            wait_for(lambda: key_of(calls[0]) in receiver.calls(), 30, "the call delivered")
            stop.set()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("outage: "), errors
    assert "500" in errors[0]
    over = [r.getMessage() for r in caplog.records if "outage over after" in r.getMessage()]
    assert len(over) == 1 and re.search(r"outage over after \d+s \(it began with: ", over[0]), \
        over


def test_an_outage_is_said_again_every_hour_while_it_lasts():
    """The decision alone, on plain data: polls every 15 s through a 2.5-hour outage."""
    outage = OutageLog()
    said = []
    for poll in range(620):
        now = poll * 15.0
        problems = ["the target does not answer"] if 10 <= poll < 600 else []
        line = outage.after_poll(problems, now)
        if line is not None:
            said.append((now, *line))
    assert [(level, text.split(":")[0]) for _, level, text in said] == [
        (logging.ERROR, "outage"), (logging.ERROR, "outage for 1h00m"),
        (logging.ERROR, "outage for 2h00m"),
        (logging.WARNING, "outage over after 2h27m (it began with")]


@pytest.mark.slow
def test_follow_cli_stops_cleanly_on_sigterm(tmp_path, cdr_db, sample_rows):
    """run --follow as systemd runs it: delivers a new call, and SIGTERM ends it with exit 0."""
    path = write_config(tmp_path, cdr_db.url, source={"settle": "0s", "start": ""})
    log_path = tmp_path / "follow.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "poller.cli", "--config", str(path), "run", "--follow",
             "--interval", "1s"], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"following the cdr table every 1s" in log_path.read_bytes(), 30,
                 "the follow service to start")
        calls = direct_calls(cdr_db.url, sample_rows, now_local() - dt.timedelta(minutes=1))
        wait_for(lambda: key_of(calls[0]) in archived(tmp_path), 15, "the call in the archive")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert code == 0, output
    assert "stopping after the call in hand (signal 15)" in output
    assert "interrupted" not in output and "Traceback" not in output


def test_follow_with_since_is_a_usage_error(tmp_path, cdr_url):
    """run --follow --since (or a bad --interval) is a usage error: exit 2."""
    path = write_config(tmp_path, cdr_url)
    result = run_cli("--config", str(path), "run", "--follow", "--since", "2026-11-01")
    assert result.exit_code == 2, result.output
    assert "--follow cannot be combined with --since" in result.output
    assert not (tmp_path / "state" / "state.db").exists()
    result = run_cli("--config", str(path), "run", "--follow", "--interval", "soon")
    assert result.exit_code == 2 and "--interval: not a duration" in result.output


# -- upkeep

def test_ledger_prunes_old_delivered_calls_only(tmp_path, cdr_url, sample_rows):
    """retention 8h: old done/skipped calls forgotten; parked, waiting and recent ones kept."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    done = clone_call(direct, local("2026-11-26 09:30:00"))
    skipped = clone_call(legs_of(sample_rows, OUTGOING), local("2026-11-26 09:31:00"))
    parked = clone_call(direct, local("2026-11-26 09:32:00"))
    waiting = clone_call(direct, local("2026-11-26 09:33:00"), keep_name=True)
    insert_rows(cdr_url, done + skipped + parked + waiting)
    config = make_config(tmp_path, cdr_url, state={"retention": "8h"},
                         retry={"max_attempts": 1}, recordings={"wait": "2d"})
    factory = refusing({key_of(parked)})
    run_once(config, RunOptions(now=msk("2026-11-26 10:00")), target_factory=factory)
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 1, "skipped": 1, "failed": 1, "seen": 1}

    recent = clone_call(direct, local("2026-11-26 18:00:00"))
    insert_rows(cdr_url, recent)
    report = run_once(config, RunOptions(now=msk("2026-11-26 18:30")), target_factory=factory)
    assert sum(report.delivered.values()) == 1, report.summary()
    with open_ledger(config) as ledger:
        assert ledger.known([key_of(rows) for rows in (done, skipped, parked, waiting, recent)]) \
            == {key_of(parked): "failed", key_of(waiting): "seen", key_of(recent): "done"}

    again = run_once(config, RunOptions(now=msk("2026-11-26 18:31")), target_factory=factory)
    assert (again.new_calls, sum(again.delivered.values())) == (0, 0), again.summary()


def test_pruning_after_a_quiet_night_delivers_nothing_twice(tmp_path, cdr_url, sample_rows):
    """Quiet PBX, retention 8h: the pruned 09:30 call must not come back as new at 18:01."""
    # the day's last call is at 09:30 and nothing follows: the watermark stays at 09:30, so
    # every run re-reads from 05:30, while the 18:00 run forgets calls that began before 10:00
    calls = direct_calls(cdr_url, sample_rows, local("2026-11-26 09:30:00"))
    config = make_config(tmp_path, cdr_url, state={"retention": "8h"})
    counts: Counter[str] = Counter()
    factory = refusing(set(), counts)
    run_once(config, RunOptions(now=msk("2026-11-26 10:00")), target_factory=factory)
    run_once(config, RunOptions(now=msk("2026-11-26 18:00")), target_factory=factory)
    report = run_once(config, RunOptions(now=msk("2026-11-26 18:01")), target_factory=factory)
    assert watermark_of(config) == local("2026-11-26 09:30:00")
    assert (report.new_calls, sum(report.delivered.values())) == (0, 0), report.summary()
    assert counts["create"] == 1, f"call {key_of(calls[0])} was delivered {counts['create']} times"


def test_retention_shorter_than_twice_the_lookback_is_refused(tmp_path, cdr_url):
    """state.retention 7h with lookback 4h: exit 2 naming the key, nothing run."""
    path = write_config(tmp_path, cdr_url, state={"dir": str(tmp_path / "state"),
                                                     "retention": "7h"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 2, result.output
    assert "state.retention must be at least twice source.lookback" in result.output
    assert not (tmp_path / "state").exists()


def _day_folders(root: Path, *days: str) -> None:
    for day in days:
        folder = root / day
        folder.mkdir(parents=True)
        (folder / "old-call.txt").write_text("an old call\n")


def test_prune_archive_removes_only_older_day_folders(tmp_path):
    """prune_archive drops day folders before the date (and emptied parents), nothing else."""
    root = tmp_path / "archive"
    _day_folders(root, "2025/12/31", "2026/10/31", "2026/11/20", "2026/11/25", "2026/11/26")
    (root / "2026" / "11" / "notes").mkdir()
    (root / "README").write_text("ours\n")
    (root / "2026" / "13" / "99").mkdir(parents=True)  # not a date: not ours

    assert prune_archive(root, dt.date(2026, 11, 25)) == 3
    days = sorted(str(p.relative_to(root)) for p in root.glob("*/*/*"))
    assert days == ["2026/11/25", "2026/11/26", "2026/11/notes", "2026/13/99"]
    assert not (root / "2025").exists() and not (root / "2026" / "10").exists()
    assert (root / "README").is_file()
    assert prune_archive(root, dt.date(2026, 11, 25)) == 0


def test_archive_keep_days_through_a_run(tmp_path, cdr_url, sample_rows):
    """keep_days = 1: a run on 2026-11-26 drops day folders before the 25th, keeps the rest."""
    root = tmp_path / "archive"
    _day_folders(root, "2026/10/31", "2026/11/20", "2026/11/25")
    calls = direct_calls(cdr_url, sample_rows, local("2026-11-26 09:30:00"))
    config = make_config(tmp_path, cdr_url, target={"archive": {"keep_days": 1}})
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0 and sum(report.delivered.values()) == 1, report.summary()
    days = sorted(str(p.relative_to(root)) for p in root.glob("*/*/*"))
    assert days == ["2026/11/25", "2026/11/26"]
    assert (root / "2026/11/25/old-call.txt").is_file()
    assert set(archived(tmp_path)) == {key_of(calls[0])}
    assert (root / "2026/11/26" / f"{key_of(calls[0])}.json").is_file()
    assert "2026/11/26/index.html" in (root / "index.html").read_text()
    # two days later a run with nothing to deliver prunes the 26th: the index forgets it too
    idle = run_once(config, RunOptions(now=msk("2026-11-28 10:00")))
    assert idle.exit_code == 0 and not list(root.glob("*/*/*")), idle.summary()
    assert "2026/11/26" not in (root / "index.html").read_text()


# -- the ledger's own schema

def test_newer_ledger_schema_is_refused(tmp_path, cdr_db, sample_rows):
    """After a downgrade the ledger's schema is newer: run exits 2 saying to upgrade."""
    direct_calls(cdr_db.url, sample_rows, now_local() - dt.timedelta(minutes=30))
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(now_local()
                                                                       - dt.timedelta(hours=1))})
    config = make_config(tmp_path, cdr_db.url)
    (tmp_path / "state").mkdir()
    ledger = Ledger(config.state.database_url)
    try:
        ledger.put("schema_version", str(ledger_module.SCHEMA_VERSION + 1))
    finally:
        ledger.close()
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 2, result.output
    assert (f"the ledger has schema version {ledger_module.SCHEMA_VERSION + 1}; this poller "
            f"knows {ledger_module.SCHEMA_VERSION}: upgrade the poller") in result.output
    assert not archive_files(tmp_path, ".json")
    with open_ledger(config) as ledger:
        assert ledger.counts() == {} and ledger.watermark() is None


def test_ledger_migration_runs_once_and_records_the_version(tmp_path, cdr_url, sample_rows,
                                                            monkeypatch):
    """A later poller's migration adds a column once at start and records its version."""
    direct_calls(cdr_url, sample_rows, local("2026-11-26 09:30:00"))
    config = make_config(tmp_path, cdr_url)
    run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    current = ledger_module.SCHEMA_VERSION
    with open_ledger(config) as ledger:
        assert ledger.get("schema_version") == str(current)

    steps: list[int] = []

    def add_priority(conn: Any) -> None:
        steps.append(current + 1)
        conn.exec_driver_sql("ALTER TABLE poller_calls ADD COLUMN priority INTEGER")

    monkeypatch.setattr(ledger_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(ledger_module.MIGRATIONS, current + 1, add_priority)
    for minute in ("10:01", "10:02"):
        report = run_once(config, RunOptions(now=msk(f"2026-11-26 {minute}")))
        assert report.exit_code == 0, report.summary()
    assert steps == [current + 1]
    with open_ledger(config) as ledger:
        assert ledger.get("schema_version") == str(current + 1)
        assert ledger.counts() == {"done": 1}
    database = sa.engine.make_url(config.state.database_url).database
    with contextlib.closing(sqlite3.connect(database)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(poller_calls)")]
    assert "priority" in columns


# -- progress

def test_backfill_reports_its_progress(tmp_path, cdr_db, sample_rows):
    """A backfill's progress callback gets positions moving forward and a fraction in 0..1."""
    starts = [local("2026-11-26 09:00:00") + dt.timedelta(minutes=5 * i) for i in range(12)]
    direct_calls(cdr_db.url, sample_rows, *starts)
    config = make_config(tmp_path, cdr_db.url)
    seen: list[Progress] = []
    since, until = local("2026-11-26 09:00"), local("2026-11-26 10:00")
    report = run_once(config, RunOptions(since=since, until=until, now=msk("2026-11-26 10:30"),
                                         progress=seen.append))
    assert sum(report.delivered.values()) == 12, report.summary()
    positions = [p.position for p in seen]
    assert positions == sorted(positions) and set(starts) <= set(positions)
    fractions = [p.fraction for p in seen]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert seen[-1].new_calls == 12  # current at the end, not a batch behind
    assert all(p.start == since and p.stop == until for p in seen)
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)
    assert [p.new_calls for p in seen] == sorted(p.new_calls for p in seen)
    assert all(0 <= p.new_calls <= 12 for p in seen)


def test_backfill_draws_no_progress_bar_without_a_terminal(tmp_path, cdr_db, sample_rows):
    """A backfill under cron (no terminal) draws no progress bar, only log lines."""
    base = now_local() - dt.timedelta(hours=1)
    direct_calls(cdr_db.url, sample_rows, *(base + dt.timedelta(minutes=i) for i in range(5)))
    path = write_config(tmp_path, cdr_db.url)
    result = run_cli("--config", str(path), "run", "--since", stamp(base - dt.timedelta(minutes=1)),
                 "--until", stamp(base + dt.timedelta(minutes=10)))
    assert result.exit_code == 0, result.output
    assert "delivered 5 calls" in result.output
    assert "\r" not in result.output and "\r[" not in result.output


def test_backfill_draws_a_progress_bar_on_a_terminal(tmp_path, cdr_db, sample_rows):
    """The same backfill on a terminal (a pty) draws the bar: the control for the test above."""
    base = now_local() - dt.timedelta(hours=1)
    direct_calls(cdr_db.url, sample_rows, *(base + dt.timedelta(minutes=i) for i in range(3)))
    path = write_config(tmp_path, cdr_db.url)
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "poller.cli", "--config", str(path), "run", "--since",
             stamp(base - dt.timedelta(minutes=1)), "--until",
             stamp(base + dt.timedelta(minutes=10))],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    finally:
        os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(master)
    text = output.decode(errors="replace")
    assert code == 0, text
    # the bar is cleared before each log line and drawn again below it: never on one line
    assert "\r\x1b[K[" in text and "rows" in text, text
    for line in text.replace("\r\n", "\n").split("\n"):
        shown = line.rsplit("\x1b[K", 1)[-1]  # what the line holds once the terminal drew it
        assert not (" INFO " in shown and re.search(r"\[[#.]{30}\]", shown)), line
    assert "100%" in text.rsplit("\x1b[K[", 1)[-1], text  # ends at 100 %


# -- logs

def test_quiet_suppresses_info_lines(tmp_path, cdr_db, sample_rows):
    """poller -q run (the crontab's form) prints no info line; without -q the summary is INFO."""
    start, _ = _recent_morning(cdr_db.url, sample_rows, tmp_path / "monitor")
    path = write_config(tmp_path, cdr_db.url, source={"start": stamp(start)})
    quiet = run_cli("-q", "--config", str(path), "run")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output == ""
    assert len(archived(tmp_path)) == 3

    loud = run_cli("--config", str(path), "run")
    assert loud.exit_code == 0, loud.output
    # the stamp carries its offset: the calls it speaks of may be in another zone
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d INFO run: delivered 0 calls",
                     loud.output, re.M), loud.output


@pytest.mark.skipif(not os.path.exists("/dev/log"), reason="no /dev/log (no syslog daemon here)")
def test_syslog_option_with_dev_log(tmp_path, cdr_db):
    """poller --syslog status works where /dev/log exists."""
    result = run_cli("--syslog", "--config", str(write_config(tmp_path, cdr_db.url)), "status")
    assert result.exit_code == 0, result.output
    assert "watermark:" in result.stdout


@pytest.fixture
def syslog_socket(monkeypatch):
    """A datagram socket standing in for /dev/log (a short path: AF_UNIX allows ~107 bytes)."""
    folder = tempfile.mkdtemp(prefix="syslog-")
    path = os.path.join(folder, "log")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    monkeypatch.setattr("poller.logs.SYSLOG_SOCKET", path)
    try:
        yield receiver
    finally:
        receiver.close()
        shutil.rmtree(folder)


def test_syslog_option_sends_daemon_lines(tmp_path, cdr_url, syslog_socket):
    """--syslog sends daemon.info lines to the local socket, the level in the priority only;
    -q sends none."""
    path = str(write_config(tmp_path, cdr_url))
    with RunLock(tmp_path / "state"):
        result = run_cli("--syslog", "--config", path, "run")
        assert result.exit_code == 0, result.output
        message = syslog_socket.recv(65536).decode()
        # 30 = daemon.info; no "INFO" after the tag: the priority says it
        assert re.match(r"<30>poller\[\d+\]: another run holds .*poller\.lock; "
                        r"nothing to do", message), message

        result = run_cli("-q", "--syslog", "--config", path, "run")
        assert result.exit_code == 0 and result.output == "", result.output
        syslog_socket.settimeout(0.5)
        with pytest.raises(TimeoutError):
            syslog_socket.recv(65536)


def test_syslog_without_a_daemon_says_so_once_and_logs_to_stderr(tmp_path, cdr_url,
                                                                  monkeypatch):
    """No /dev/log (a container, a chroot): --syslog says so once on standard error, where
    every line still goes, instead of dropping them all unheard."""
    monkeypatch.setattr("poller.logs.SYSLOG_SOCKET", str(tmp_path / "no-such-log"))
    path = str(write_config(tmp_path, cdr_url))
    result = run_cli("--syslog", "--config", path, "run")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("no syslog daemon") == 1, result.stderr
    assert "logging to standard error only" in result.stderr
    assert re.search(r"INFO run: delivered", result.stderr), result.stderr


def test_a_poll_with_nothing_to_do_ends_without_a_full_one():
    """The quiet poll's decision, on plain data."""
    from poller.run.probe import FULL_EVERY, Seen, nothing_to_do

    ten = dt.datetime(2026, 11, 26, 10, 0)
    seen = Seen(ten - dt.timedelta(hours=4), 12, ten, at=100.0)
    assert nothing_to_do(seen, 12, ten, ten, False, 110.0)
    assert not nothing_to_do(None, 12, ten, ten, False, 110.0)  # no full poll yet
    assert not nothing_to_do(seen, 13, ten, ten, False, 110.0)  # a row came
    later = ten + dt.timedelta(seconds=5)
    assert not nothing_to_do(seen, 12, later, ten, False, 110.0)  # one replaced by a later one
    assert not nothing_to_do(seen, 12, ten, ten - dt.timedelta(minutes=1), False, 110.0)  # held
    assert not nothing_to_do(seen, 12, ten, None, False, 110.0)
    assert not nothing_to_do(seen, 12, ten, ten, True, 110.0)  # a call or incident due
    assert not nothing_to_do(seen, 12, ten, ten, False, 100.0 + FULL_EVERY)  # a minute on
    assert not nothing_to_do(Seen(seen.since, 0, None, 100.0), 0, None, None, False, 110.0)


class Polls(threading.Event):
    """follow()'s stop event that ends the loop after `count` polls, moving a clock 15 s at
    each wait, and runs `between(poll)` before each next poll."""

    def __init__(self, count: int, between: Any = None):
        super().__init__()
        self.count, self.done, self.clock, self.between = count, 0, 0.0, between

    def wait(self, timeout: float | None = None) -> bool:
        self.done += 1
        self.clock += 15.0
        if self.done >= self.count:
            self.set()
        elif self.between is not None:
            self.between(self.done)
        return self.is_set()


def test_follow_runs_a_full_poll_only_when_a_row_came_or_a_minute_passed(
        tmp_path, cdr_db, sample_rows, monkeypatch):
    """Idle polls between full ones cost a query on a kept connection: a new call's row makes
    the next poll a full one that delivers it; with nothing new, one full poll a minute."""
    import poller.run.follow as following_module

    config = make_config(tmp_path, cdr_db.url, source={"settle": "0s", "start": ""})
    direct_calls(cdr_db.url, sample_rows, now_local() - dt.timedelta(minutes=3))
    full: list[int] = []
    real = following_module.run_once

    def counted(*args: Any, **kwargs: Any) -> Any:
        full.append(polls.done)
        return real(*args, **kwargs)

    later: list[list[dict[str, Any]]] = []

    def between(poll: int) -> None:
        if poll == 6:  # a call ends while the loop waits
            later.extend(direct_calls(cdr_db.url, sample_rows,
                                      now_local() - dt.timedelta(minutes=2)))

    polls = Polls(12, between)
    monkeypatch.setattr(following_module, "run_once", counted)
    assert follow(config, 0.0, stop=polls, clock=lambda: polls.clock) == 0
    # polls 0 (the first), 4 (a minute on), 6 (the new row), 10 (a minute after that)
    assert full == [0, 4, 6, 10], full
    assert key_of(later[0]) in archived(tmp_path)
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 2}


def test_a_quiet_poll_that_cannot_ask_makes_the_poll_a_full_one(tmp_path, cdr_db, sample_rows):
    """The cdr table gone between polls: the question fails, the poll is a full one (which
    says what is wrong), and the kept connections are let go."""
    from poller.run.probe import Probe

    config = make_config(tmp_path, cdr_db.url, source={"settle": "0s", "start": ""})
    direct_calls(cdr_db.url, sample_rows, now_local() - dt.timedelta(minutes=3))
    run_once(config)
    probe = Probe(config)
    assert Probe.applies(config)
    probe.before_full(0.0)
    assert probe.seen is not None and probe.seen.rows > 0
    assert probe.quiet(15.0)  # nothing new, nothing due
    cdr_db.execute("DROP TABLE cdr")
    assert not probe.quiet(30.0)
    assert probe.source is None and probe.ledger is None
    probe.close()
    assert not Probe.applies(dataclasses.replace(
        config, source=dataclasses.replace(config.source, kind="csv")))
