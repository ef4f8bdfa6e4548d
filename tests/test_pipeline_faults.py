"""End-to-end runs on a real MariaDB cdr table when things go wrong: a run already busy, a
process killed mid-delivery, a failing target, recordings late, missing or hostile, a database
that cannot be reached or refuses the login; and the planning options --dry-run and --limit."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support import (
    DIRECT_ANSWERED,
    OUTGOING,
    ROOT,
    archive_files,
    archived,
    clone_call,
    entry_of,
    insert_rows,
    is_mp3,
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

from poller.errors import DeliveryError
from poller.model import Call
from poller.ops.status import collect, render
from poller.run.lock import RunLock
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.targets.archive.target import ArchiveTarget


class CountingTarget(ArchiveTarget):
    """The real archive target, counting what the pipeline asks of it; optionally refusing."""

    def __init__(self, config: Any, counts: Counter[str], refuse: str | None = None):
        super().__init__(config.target.archive, config.source.timezone)
        self.counts = counts
        self.refuse = refuse

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        self.counts["create"] += 1
        if self.refuse:
            raise DeliveryError(self.refuse)
        return super().create(call, record, mp3)

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        self.counts["attach"] += 1
        super().attach(object_id, call, mp3)


def _incoming(cdr_url: Any, sample_rows: list[dict[str, Any]], *times: str,
              **options: Any) -> list[list[dict[str, Any]]]:
    """Answered direct calls (P1-01's shape) at the given local times, inserted."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    calls = [clone_call(direct, local(f"2026-11-26 {when}"), **options) for when in times]
    insert_rows(cdr_url, [row for rows in calls for row in rows])
    return calls


def test_second_concurrent_run_gives_way_to_the_lock(tmp_path, cdr_db, sample_rows):
    """Cron starts a run while the previous one is still delivering: the newcomer finds the
    lock held, says so and exits 0 at once, delivering nothing; once the lock is free the
    next run delivers."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00")
    path = write_config(tmp_path, cdr_db.url)

    with RunLock(tmp_path / "state"):
        result = run_cli("--config", str(path), "run")
    assert result.exit_code == 0, result.output
    assert "another run holds" in result.output
    assert not archive_files(tmp_path, ".json")
    assert not (tmp_path / "state" / "state.db").exists()

    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 0, result.output
    assert "delivered 1 call (answered 1)" in result.output  # the run's summary line
    assert set(archived(tmp_path)) == {key_of(calls[0])}


def test_backfill_waits_for_the_lock_and_says_so(tmp_path, cdr_db, sample_rows, caplog):
    """`run --since` while another run works: it logs that it waits, then does its range."""
    import threading

    calls = _incoming(cdr_db.url, sample_rows, "09:30:00")
    config = make_config(tmp_path, cdr_db.url)
    held = RunLock(tmp_path / "state").__enter__()
    reports: list[Any] = []
    backfill = threading.Thread(target=lambda: reports.append(run_once(
        config, RunOptions(since=local("2026-11-26 09:00"), now=msk("2026-11-26 10:00")))))
    caplog.set_level("INFO", logger="poller")
    backfill.start()
    try:
        deadline = time.monotonic() + 10
        while "waiting for it to finish" not in caplog.text:
            assert time.monotonic() < deadline and backfill.is_alive(), caplog.text
            time.sleep(0.02)
        assert not reports  # still waiting
    finally:
        held.__exit__(None, None, None)
        backfill.join(timeout=30)
    assert sum(reports[0].delivered.values()) == 1
    assert set(archived(tmp_path)) == {key_of(calls[0])}


KILLED_RUN = textwrap.dedent("""
    import datetime as dt
    import os
    import sys

    from poller.config.load import load
    from poller.run.pipeline import run_once
    from poller.run.options import RunOptions
    from poller.targets.archive.target import ArchiveTarget


    class DiesOnAttach(ArchiveTarget):
        def attach(self, object_id, call, mp3):
            os._exit(9)  # killed (OOM, reboot) after the object was created


    config = load(sys.argv[1])
    run_once(config, RunOptions(now=dt.datetime.fromisoformat(sys.argv[2])),
             target_factory=lambda c: DiesOnAttach(c.target.archive, c.source.timezone))
    sys.exit(0)
""")


def _killed_run(config_path: Path, now: dt.datetime) -> None:
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(config_path), now.isoformat()],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr


def test_process_killed_between_create_and_attach_resumes(tmp_path, cdr_db, sample_rows):
    """The poller is killed after the target created the call's object but before the MP3
    was attached. The ledger holds the object id at stage `created`; the next run attaches
    the MP3 to that object without creating a second one. Until then the record waits hidden:
    no reader finds a record whose MP3 is not there."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", monitor=tmp_path / "monitor")
    key = key_of(calls[0])
    path = write_config(tmp_path, cdr_db.url)
    now = msk("2026-11-26 10:00")

    _killed_run(path, now)
    config = make_config(tmp_path, cdr_db.url)
    entry = entry_of(config, key)
    assert entry.stage == "created"
    assert entry.object_id == f"2026/11/26/{key}.json"
    assert entry.recording == f"{key}.mp3"
    assert not archive_files(tmp_path, ".json") and not archive_files(tmp_path, ".mp3")
    (pending,) = (tmp_path / "archive").rglob(f".{key}.json.pending")
    record = pending.read_bytes()

    counts: Counter[str] = Counter()
    report = run_once(config, RunOptions(now=now + dt.timedelta(minutes=1)),
                      target_factory=lambda c: CountingTarget(c, counts))
    assert report.exit_code == 0, report.summary()
    assert counts == {"attach": 1}  # create() was not called again
    assert entry_of(config, key).stage == "done"
    jsons, mp3s = archive_files(tmp_path, ".json"), archive_files(tmp_path, ".mp3")
    assert len(jsons) == 1 and jsons[0].read_bytes() == record  # the object made before
    assert not pending.exists()
    assert [p.name for p in mp3s] == [f"{key}.mp3"]
    assert mp3s[0].stat().st_size > 1000 and is_mp3(mp3s[0])
    assert archived(tmp_path)[key]["recording"] == f"{key}.mp3"


def test_process_killed_mid_delivery_leaves_no_temporary_files(tmp_path, cdr_db, sample_rows):
    """After a kill during delivery (OOM killer, reboot) and the run that resumes it,
    state.dir holds no leftover temporary MP3: a PBX that crashes now and then must not slowly
    fill its disk."""
    _incoming(cdr_db.url, sample_rows, "09:30:00", monitor=tmp_path / "monitor")
    path = write_config(tmp_path, cdr_db.url)
    now = msk("2026-11-26 10:00")
    _killed_run(path, now)
    report = run_once(make_config(tmp_path, cdr_db.url),
                      RunOptions(now=now + dt.timedelta(minutes=1)))
    assert report.exit_code == 0 and report.recordings == 1, report.summary()
    assert list((tmp_path / "state" / "tmp").iterdir()) == []


def test_failing_target_backs_off_then_parks_the_call(tmp_path, cdr_db, sample_rows):
    """The target refuses a call (e.g. the ITSM system rejects it). The run exits 1, the call
    stays pending with a back-off and the watermark still moves; after retry.max_attempts the
    call is parked as failed and `poller status` shows it with its error. A backfill over its
    range, once the target is fixed, delivers it."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00")
    key = key_of(calls[0])
    config = make_config(tmp_path, cdr_db.url, retry={"max_attempts": 2, "backoff": "1m"})
    counts: Counter[str] = Counter()

    def refusing(c: Any) -> CountingTarget:
        return CountingTarget(c, counts, refuse="objectdef incoming_call: attribute rejected")

    now = msk("2026-11-26 10:00")
    report = run_once(config, RunOptions(now=now), target_factory=refusing)
    assert report.exit_code == 1 and report.failures == 1, report.summary()
    entry = entry_of(config, key)
    assert (entry.stage, entry.attempts) == ("seen", 1)
    now_utc = now.astimezone(dt.UTC).replace(tzinfo=None)
    assert entry.next_attempt_at == now_utc + dt.timedelta(minutes=1)
    assert "attribute rejected" in entry.last_error
    assert watermark_of(config) == local("2026-11-26 09:30:00")

    early = run_once(config, RunOptions(now=now + dt.timedelta(seconds=30)),
                     target_factory=refusing)
    assert early.exit_code == 0 and counts["create"] == 1  # still backing off
    assert entry_of(config, key).attempts == 1

    late = run_once(config, RunOptions(now=now + dt.timedelta(minutes=2)),
                    target_factory=refusing)
    assert late.exit_code == 1 and late.parked == 1, late.summary()
    entry = entry_of(config, key)
    assert (entry.stage, entry.attempts, entry.next_attempt_at) == ("failed", 2, None)
    text = render(collect(config))
    failed = text.split("failed (", 1)[1]
    assert key in failed and "2 attempts: objectdef incoming_call: attribute rejected" in failed

    later = run_once(config, RunOptions(now=now + dt.timedelta(hours=3)),
                     target_factory=refusing)
    assert counts["create"] == 2 and later.exit_code == 0  # parked: not retried by cron runs
    assert not archive_files(tmp_path, ".json")

    backfill = run_once(config, RunOptions(since=local("2026-11-26 09:00"),
                                           until=local("2026-11-26 10:00"),
                                           now=now + dt.timedelta(hours=3)))
    assert backfill.exit_code == 0 and sum(backfill.delivered.values()) == 1
    assert entry_of(config, key).stage == "done"
    assert set(archived(tmp_path)) == {key}


class BreaksOn(ArchiveTarget):
    """The real archive target, raising a chosen exception for some calls at create."""

    def __init__(self, config: Any, errors: dict[str, BaseException]):
        super().__init__(config.target.archive, config.source.timezone)
        self.errors = errors

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        if call.key in self.errors:
            raise self.errors[call.key]
        return super().create(call, record, mp3)


def test_an_unforeseen_error_charges_its_call_alone_and_the_run_goes_on(tmp_path, cdr_url,
                                                                         sample_rows, caplog):
    """A bug (any exception) or an OS error while one call is delivered counts an attempt for
    that call, with what went wrong; the calls after it are delivered in the same run."""
    calls = _incoming(cdr_url, sample_rows, "09:30:00", "09:31:00", "09:32:00")
    buggy, denied, fine = (key_of(rows) for rows in calls)
    config = make_config(tmp_path, cdr_url)
    errors = {buggy: ZeroDivisionError("division by zero"),
              denied: PermissionError(13, "Permission denied")}
    with caplog.at_level(logging.ERROR, logger="poller"):
        report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")),
                          target_factory=lambda c: BreaksOn(c, errors))
    assert report.exit_code == 1 and report.failures == 2, report.summary()
    assert set(archived(tmp_path)) == {fine}
    assert entry_of(config, buggy).last_error == "ZeroDivisionError: division by zero"
    assert entry_of(config, denied).last_error == "PermissionError: [Errno 13] Permission denied"
    assert (entry_of(config, buggy).attempts, entry_of(config, denied).attempts) == (1, 1)
    # the bug's traceback is in the log, for a report
    assert f"call {buggy}: unexpected failure" in caplog.text and "Traceback" in caplog.text


def test_backfill_retries_a_call_still_backing_off(tmp_path, cdr_db, sample_rows):
    """A call failed once and waits out an hour's back-off; a backfill over its range (the
    target fixed) retries it at once instead of leaving it to the back-off."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00")
    key = key_of(calls[0])
    config = make_config(tmp_path, cdr_db.url, retry={"backoff": "1h"})
    counts: Counter[str] = Counter()
    now = msk("2026-11-26 10:00")
    failed = run_once(config, RunOptions(now=now),
                      target_factory=lambda c: CountingTarget(c, counts, refuse="rejected"))
    assert failed.exit_code == 1 and entry_of(config, key).next_attempt_at is not None

    backfill = run_once(config, RunOptions(since=local("2026-11-26 09:00"),
                                           now=now + dt.timedelta(minutes=1)))
    assert sum(backfill.delivered.values()) == 1, backfill.summary()
    assert entry_of(config, key).stage == "done"
    assert set(archived(tmp_path)) == {key}


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, cdr_db, sample_rows):
    """`poller run --dry-run` on a new install: it lists the calls it would deliver and
    writes nothing, neither archive files nor a ledger; a real run afterwards delivers them."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", "09:31:00", "09:32:00")
    path = write_config(tmp_path, cdr_db.url)

    result = run_cli("--config", str(path), "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 calls would be delivered" in result.output
    for rows in calls:
        assert key_of(rows) in result.output
    assert not (tmp_path / "archive").exists()
    assert not (tmp_path / "state" / "state.db").exists()

    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 0, result.output
    assert set(archived(tmp_path)) == {key_of(rows) for rows in calls}


def test_dry_run_in_process_plans_without_a_ledger(tmp_path, cdr_db, sample_rows):
    """The same with a pinned clock through the library: the report plans the incoming calls
    (not the outgoing one); no file appears, not even the run lock."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", "09:31:00")
    cdr_db.insert(clone_call(legs_of(sample_rows, OUTGOING), local("2026-11-26 09:32:00")))
    config = make_config(tmp_path, cdr_db.url)

    report = run_once(config, RunOptions(dry_run=True, now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0
    assert [call.key for call in report.planned] == [key_of(rows) for rows in calls]
    assert sum(report.delivered.values()) == 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_limit_delivers_part_now_and_the_rest_next_run(tmp_path, cdr_db, sample_rows):
    """After an outage an administrator caps a run with --limit 2: two calls go out, the oldest
    first, and the following runs deliver the rest."""
    calls = _incoming(cdr_db.url, sample_rows, *(f"09:3{i}:00" for i in range(5)))
    keys = [key_of(rows) for rows in calls]
    config = make_config(tmp_path, cdr_db.url)

    first = run_once(config, RunOptions(limit=2, now=msk("2026-11-26 10:00")))
    assert first.exit_code == 0 and sum(first.delivered.values()) == 2
    assert set(archived(tmp_path)) == set(keys[:2])
    assert first.new_calls == 5  # all were read and recorded
    assert watermark_of(config) == local("2026-11-26 09:34:00")

    second = run_once(config, RunOptions(limit=2, now=msk("2026-11-26 10:01")))
    assert sum(second.delivered.values()) == 2
    third = run_once(config, RunOptions(now=msk("2026-11-26 10:02")))
    assert sum(third.delivered.values()) == 1
    assert set(archived(tmp_path)) == set(keys)


def test_missing_recording_is_waited_for_then_given_up(tmp_path, cdr_db, sample_rows):
    """recordingfile names a WAV that never appears (disk full on the PBX). Within
    recordings.wait the call waits, and status says so; once the wait is over it is delivered
    without audio and with recording_problem "missing"."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", keep_name=True)  # ends 09:30:09
    key = key_of(calls[0])
    config = make_config(tmp_path, cdr_db.url, recordings={"wait": "5m"})

    first = run_once(config, RunOptions(now=msk("2026-11-26 09:32")))
    assert first.exit_code == 0 and first.waiting == 1, first.summary()
    assert not archive_files(tmp_path, ".json")
    entry = entry_of(config, key)
    assert entry.stage == "seen" and entry.attempts == 0
    assert "waiting for recording" in entry.note
    text = render(collect(config))
    waiting = text.split("waiting:", 1)[1]
    assert key in waiting and "not there yet" in waiting

    second = run_once(config, RunOptions(now=msk("2026-11-26 09:36")))
    assert second.exit_code == 0 and sum(second.delivered.values()) == 1, second.summary()
    record = archived(tmp_path)[key]
    assert record["recording"] is None and record["recording_problem"] == "missing"
    assert record["status"] == "answered"
    assert not archive_files(tmp_path, ".mp3")
    assert entry_of(config, key).stage == "done"


def test_recordings_folder_not_mounted_makes_calls_wait(tmp_path, cdr_db, sample_rows):
    """recordings.dir is gone (the spool not mounted): calls wait, no attempt counted, the run
    exits 1 saying why; once the folder is back the call goes out with its recording."""
    monitor = tmp_path / "monitor"
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", monitor=monitor)
    key = key_of(calls[0])
    unrecorded = clone_call(legs_of(sample_rows, OUTGOING), local("2026-11-26 09:31:00"),
                            did="74951230001", dcontext="from-trunk", recordingfile="")
    cdr_db.insert(unrecorded)
    config = make_config(tmp_path, cdr_db.url, recordings={"wait": "1m"})
    hidden = tmp_path / "unmounted"
    monitor.rename(hidden)
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 1 and "not a folder" in report.unavailable[0], report.summary()
    entry = entry_of(config, key)
    assert (entry.stage, entry.attempts) == ("seen", 0)
    # a call with no recording is not held up by the missing folder
    assert set(archived(tmp_path)) == {key_of(unrecorded)}
    assert "stopped by: recordings.dir" in render(collect(config))

    hidden.rename(monitor)
    again = run_once(config, RunOptions(now=msk("2026-11-26 10:05")))
    assert again.exit_code == 0 and again.recordings == 1, again.summary()
    assert archived(tmp_path)[key]["recording_problem"] is None


def test_more_than_a_page_of_held_calls_does_not_hide_the_rest(tmp_path, cdr_url, sample_rows):
    """120 recorded calls held by a missing recordings folder stay due; delivery pages past
    them (by key, not by what it has seen) to the unrecorded calls behind them."""
    recorded = [clone_call(legs_of(sample_rows, DIRECT_ANSWERED),
                           local("2026-11-26 09:00:00") + dt.timedelta(seconds=10 * n),
                           keep_name=True) for n in range(120)]
    unrecorded = clone_call(legs_of(sample_rows, OUTGOING), local("2026-11-26 09:40:00"),
                            did="74951230001", dcontext="from-trunk", recordingfile="")
    insert_rows(cdr_url, [row for rows in recorded for row in rows] + unrecorded)
    config = make_config(tmp_path, cdr_url)
    (tmp_path / "monitor").rmdir()
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.new_calls == 121 and report.unavailable, report.summary()
    assert set(archived(tmp_path)) == {key_of(unrecorded)}


def test_missing_recording_given_up_on_time_when_the_wait_ends_soon(tmp_path, cdr_db,
                                                                     sample_rows):
    """The last look within recordings.wait happens less than 30 s before the wait ends; the
    call must be delivered by the first run after the wait, not hours later."""
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", keep_name=True)  # ends 09:30:09
    key = key_of(calls[0])
    config = make_config(tmp_path, cdr_db.url, recordings={"wait": "5m"})  # until 09:35:09

    first = run_once(config, RunOptions(now=msk("2026-11-26 09:34:50")))
    assert first.waiting == 1, first.summary()
    second = run_once(config, RunOptions(now=msk("2026-11-26 09:36")))
    assert sum(second.delivered.values()) == 1, second.summary()
    assert archived(tmp_path)[key]["recording_problem"] == "missing"


HOSTILE = [
    "../../../../etc/passwd",  # climbs out of the recordings directory
    "/etc/passwd",  # an absolute path outside it
    "../../../etc/passwd",  # behind the three date folders: lands back inside, still refused
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_recordingfile_is_refused(tmp_path, cdr_db, sample_rows, value):
    """A recordingfile value that climbs out of the recordings directory (a tampered cdr row)
    is never read: the call is delivered at once with recording_problem "refused_path"."""
    (tmp_path / "monitor" / "etc").mkdir(parents=True)
    (tmp_path / "monitor" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    calls = _incoming(cdr_db.url, sample_rows, "09:30:00", recordingfile=value)
    config = make_config(tmp_path, cdr_db.url)

    report = run_once(config, RunOptions(now=msk("2026-11-26 09:33")))  # within the wait
    assert report.exit_code == 0 and report.waiting == 0, report.summary()
    record = archived(tmp_path).get(key_of(calls[0]))
    assert record is not None, "the call was not delivered"
    assert record["recording"] is None and record["recording_problem"] == "refused_path"
    assert not archive_files(tmp_path, ".mp3")


def test_unreachable_source_exits_1_without_the_password(tmp_path):
    """The cdr database is down (nothing listens on the port): the run exits 1 (retried by the
    next run) with a message saying the source is unreachable; the password never shows."""
    path = write_config(tmp_path, "mysql+pymysql://poller:Sekr3t-pw@127.0.0.1:1/asteriskcdrdb")
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 1, result.output
    assert "source database unreachable" in result.output
    assert "127.0.0.1" in result.output
    assert "Sekr3t-pw" not in result.output

    status = run_cli("--config", str(path), "status")
    assert "unreachable" in status.output and "Sekr3t-pw" not in status.output


def test_wrong_credentials_exit_2_without_the_password(tmp_path, cdr_db):
    """The read-only user was never created (or its password is wrong): a configuration
    problem, exit 2, and the message never shows the password."""
    server = sa.engine.make_url(cdr_db.url)
    url = (f"mysql+pymysql://no_such_poller:Sekr3t-pw@{server.host}:{server.port or 3306}/"
           f"{server.database}")
    path = write_config(tmp_path, url)
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 2, result.output
    assert "Access denied" in result.output and "no_such_poller" in result.output
    assert "Sekr3t-pw" not in result.output
    assert not archive_files(tmp_path, ".json")
    with open_ledger(make_config(tmp_path, url)) as ledger:
        assert ledger.watermark() is None
