"""The administrator's path from a bare PBX to a running service: root and the service user,
read-only monitoring, a wrong time zone, what status shows during an outage, forged log lines,
file modes, the shipped crontab, grants and demo hint.

The poller's own files are made by a SQLite cdr table here (the paths do not depend on the
database); what needs another user runs in a forked child that dropped to `nobody`, since the
tests run as root and the interpreter lives where `nobody` cannot start it again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support import (
    DIRECT_ANSWERED,
    MSK,
    MYSQL_URL,
    NOBODY,
    ROOT,
    as_nobody,
    cdr_table,
    clone_call,
    config_keys,
    legs_of,
    local,
    msk,
    needs_root,
    run_cli,
    write_config,
)

from poller.config.load import load
from poller.config.schema import Config
from poller.errors import ConfigError, ExitCode, TargetUnavailable
from poller.ledger.store import Ledger
from poller.run.lock import RunLock
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

POLLER = Path(sys.executable).parent / "poller"


# -- a PBX of a few calls in a SQLite cdr table

def calls_at(sample_rows: list[dict[str, Any]], *starts: dt.datetime,
             **changes: Any) -> list[dict[str, Any]]:
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    return [row for start in starts for row in clone_call(direct, start, **changes)]


def cli_as_nobody(*args: str) -> tuple[int, str]:
    def work() -> tuple[int, str]:
        result = run_cli(*args)
        return result.exit_code, result.output
    return as_nobody(work)


# -- 1. root and the service user

@needs_root
@pytest.mark.parametrize("command", [["run", "--since", "2026-11-26"], ["run"], ["check"],
                                     ["retry", "--failed"]])
@pytest.mark.slow  # a CLI process per command
def test_root_on_the_service_users_state_dir_is_refused_with_the_runuser_line(
        site, sample_rows, command):
    """A backfill as root left the lock, state.db and tmp/ root's: every later run as the
    service user failed. Now root is refused (exit 2) before anything is written, told the
    exact command, as the owner of state.dir, to run instead."""
    url = cdr_table(site, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    state = site / "state"
    state.mkdir()
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    config = write_config(site, url)
    env = {**os.environ, "PATH": f"{POLLER.parent}:{os.environ.get('PATH', '')}"}
    out = subprocess.run([str(POLLER), "--config", str(config), *command], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == ExitCode.CONFIG, out.stderr
    line = " ".join(["runuser -u nobody -- poller --config", str(config), *command])
    assert line in out.stderr, out.stderr
    assert list(state.iterdir()) == []
    # status only reads: root may look
    looked = subprocess.run([str(POLLER), "--config", str(config), "status"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert looked.returncode == 0, looked.stderr
    assert list(state.iterdir()) == []


@needs_root
@pytest.mark.parametrize("left", ["lock", "ledger", "tmp", "archive day"])
def test_check_as_the_service_user_names_what_a_root_run_left_unwritable(
        site, sample_rows, left):
    """`check` as the service user said `ok` while the runs failed on root's files: it now
    writes where the runs write, as the user it runs as, and fails naming the place."""
    url = cdr_table(site, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    config_path = write_config(site, url)
    config = load(config_path, env={})
    (site / "monitor").mkdir()
    run_once(config, RunOptions(now=msk("2026-11-26 10:00")))  # as root: the files are root's
    for path in [site / "state", site / "archive", *(site / "archive").rglob("*")]:
        if path.is_dir():
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    for path in (site / "state").rglob("*"):
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    config_path.chmod(0o644)
    stuck = {"lock": site / "state" / "poller.lock", "ledger": site / "state" / "state.db",
             "tmp": site / "state" / "tmp",
             "archive day": site / "archive" / "2026" / "11" / "26"}[left]
    if left == "tmp":
        stuck.mkdir(exist_ok=True)  # made by the first run that encodes
    os.chown(stuck, 0, 0)
    code, output = cli_as_nobody("--config", str(config_path), "check")
    assert code == ExitCode.PARTIAL, output
    failed = [line for line in output.splitlines() if line.startswith("FAIL")]
    name = "target" if left == "archive day" else "state"
    assert any(line.split()[1] == name and "not writable by user nobody" in line
               for line in failed), output
    assert "PermissionError" not in output


@needs_root
def test_status_reads_a_ledger_it_may_not_write(site, sample_rows):
    """A monitoring user with read access to state.db only: status used to fail with `attempt
    to write a readonly database` (exit 1); it opens the ledger read-only and writes nothing."""
    url = cdr_table(site, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    config_path = write_config(site, url)
    config_path.chmod(0o644)
    (site / "monitor").mkdir()
    run_once(load(config_path, env={}), RunOptions(now=msk("2026-11-26 10:00")))
    (site / "state").chmod(0o755)
    ledger = site / "state" / "state.db"
    ledger.chmod(0o644)
    before = sorted(p.name for p in (site / "state").iterdir()), ledger.read_bytes()
    code, output = cli_as_nobody("--config", str(config_path), "status")
    assert code == 0, output
    assert "watermark:   2026-11-26 09:30:00 +03:00" in output and "done 1" in output
    code, output = cli_as_nobody("--config", str(config_path), "status", "--json")
    assert code == 0 and json.loads(output)["calls"]["done"] == 1, output
    assert (sorted(p.name for p in (site / "state").iterdir()), ledger.read_bytes()) == before


# -- 2. a PBX writing local time read as UTC

def test_a_newest_row_hours_ahead_is_said_by_check_run_and_status(tmp_path, sample_rows, caplog):
    """timezone = "UTC" on a PBX writing Moscow time: check said ok, run read 0 rows and exit
    0, status showed no lag. All three now say the zone is probably wrong, with the offset."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    moscow = (now - dt.timedelta(minutes=10)).astimezone(MSK).replace(tzinfo=None)
    url = cdr_table(tmp_path, calls_at(sample_rows, moscow))
    path = write_config(tmp_path, url, source={"timezone": "UTC", "start": ""})
    (tmp_path / "monitor").mkdir()

    checked = run_cli("--config", str(path), "check")
    clock = [line for line in checked.stdout.splitlines() if "source clock" in line]
    # no call is taken until the hours have passed: a failure, not a warning (exit 1)
    assert clock and clock[0].startswith("FAIL") and "UTC+03:00" in clock[0], checked.stdout
    assert checked.exit_code == ExitCode.PARTIAL, checked.stdout

    ran = run_cli("--config", str(path), "run")
    assert ran.exit_code == 0
    assert re.search(r"WARNING the newest cdr row \(.*\) is 2h[45]\dm ahead of now in "
                     r"source.timezone UTC .*UTC\+03:00", ran.output), ran.output
    again = run_cli("--config", str(path), "run")
    assert "ahead of now" not in again.output  # once a day

    status = run_cli("--config", str(path), "status")
    assert re.search(r"^clock: .*UTC\+03:00", status.stdout, re.M), status.stdout
    data = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    assert "UTC+03:00" in data["clock_warning"]


def test_a_right_zone_gives_no_clock_warning(tmp_path, sample_rows):
    now = dt.datetime.now(MSK).replace(tzinfo=None, microsecond=0) - dt.timedelta(minutes=10)
    url = cdr_table(tmp_path, calls_at(sample_rows, now))
    path = write_config(tmp_path, url, source={"start": ""})
    (tmp_path / "monitor").mkdir()
    assert "source clock" not in run_cli("--config", str(path), "check").stdout
    data = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    assert data["clock_warning"] is None


# -- 9, 18. status during an outage

def _outage(tmp_path: Path, sample_rows: list[dict[str, Any]], count: int) -> Path:
    """`count` calls read and recorded while the target does not answer: all wait."""
    starts = [local("2026-11-26 09:00:00") + dt.timedelta(minutes=i) for i in range(count)]
    url = cdr_table(tmp_path, calls_at(sample_rows, *starts))
    path = write_config(tmp_path, url)
    (tmp_path / "monitor").mkdir()

    def down(config: Any) -> Any:
        raise TargetUnavailable("archive: the target does not answer")

    report = run_once(load(path, env={}), RunOptions(now=msk("2026-11-26 12:00")),
                      target_factory=down)
    assert report.exit_code == 1 and report.new_calls == count
    return path


def test_status_says_when_its_list_is_cut_and_shows_the_oldest_waiting_call(tmp_path,
                                                                           sample_rows):
    """100 calls undelivered: the list stopped at 50 without saying so, and the lag shown was
    the watermark's (0m00s). Now "50 of 100 shown", and the lag of the oldest waiting call."""
    path = _outage(tmp_path, sample_rows, 60)
    text = run_cli("--config", str(path), "status").stdout
    assert "waiting (50 of 60 shown):" in text
    assert re.search(r"^lag:         the oldest call waiting started \d+d\d\dh ago "
                     r"\(2026-11-26 09:00:00 \+03:00, ", text, re.M), text
    data = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    assert (len(data["waiting"]), data["waiting_total"]) == (50, 60)
    oldest = data["oldest_waiting"]
    assert oldest["start"] == "2026-11-26T09:00:00+03:00"
    now = dt.datetime.fromisoformat(data["now"])
    assert oldest["seconds"] == pytest.approx(
        (now - dt.datetime.fromisoformat(oldest["start"])).total_seconds(), abs=2)


def test_the_run_line_counts_the_calls_an_outage_held_back_as_waiting(tmp_path, sample_rows):
    """Found in a walk-through: while the archive refused writes the run line said `0
    waiting` and status listed the calls under `waiting:`. Both now say they wait."""
    starts = [local("2026-11-26 09:00:00") + dt.timedelta(minutes=i) for i in range(3)]
    path = write_config(tmp_path, cdr_table(tmp_path, calls_at(sample_rows, *starts)))
    (tmp_path / "monitor").mkdir()

    def down(config: Any) -> Any:
        raise TargetUnavailable("archive: the target does not answer")

    report = run_once(load(path, env={}), RunOptions(now=msk("2026-11-26 12:00")),
                      target_factory=down)
    assert "3 waiting (3 held back by the outage), 0 failed" in report.summary()
    text = run_cli("--config", str(path), "status").stdout
    assert "waiting:\n" in text and "3 waiting (3 held back by the outage)" in text, text


def test_status_shows_every_time_in_one_zone(tmp_path, sample_rows):
    """The watermark was local without an offset, the last run and retries in UTC."""
    path = _outage(tmp_path, sample_rows, 1)
    text = run_cli("--config", str(path), "status").stdout
    times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( [+-]\d\d:\d\d)?", text)
    assert times and all(offset == " +03:00" for offset in times), text
    assert "UTC" not in text and "Z:" not in text


def test_status_during_a_run_says_the_run_is_delivering_the_due_calls(tmp_path, sample_rows):
    """A call another run was transcoding was listed as `due at the next run`."""
    path = _outage(tmp_path, sample_rows, 2)
    assert "due at the next run" in run_cli("--config", str(path), "status").stdout
    with RunLock(tmp_path / "state"):
        text = run_cli("--config", str(path), "status").stdout
        data = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    assert f"run:         in progress (pid {os.getpid()})" in text
    assert "due at the next run" not in text
    assert f"due: the run in progress (pid {os.getpid()}) is delivering it" in text
    assert data["run_in_progress"] == os.getpid()


# -- 10. a run stopped by the configuration

def test_a_config_error_found_by_a_run_is_not_recorded_as_a_clean_run(tmp_path, sample_rows):
    """A cdr table without a needed column stops the run with exit 2: last_run says so, and
    the metrics' last success does not move."""
    url = cdr_table(tmp_path, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    with sqlite3.connect(tmp_path / "cdr.db") as conn:
        conn.execute("ALTER TABLE cdr DROP COLUMN disposition")
    path = write_config(tmp_path, url)
    (tmp_path / "monitor").mkdir()
    metrics = tmp_path / "poller.prom"
    ran = run_cli("--config", str(path), "run", "--metrics-file", str(metrics))
    assert ran.exit_code == ExitCode.CONFIG, ran.output
    data = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    assert "disposition" in data["last_run"]["config_error"]
    text = run_cli("--config", str(path), "status").stdout
    assert re.search(r"^last run:    .*: stopped by the configuration: .*disposition", text,
                     re.M), text
    ledger = Ledger(load(path, env={}).state.database_url, create=False)
    try:
        assert ledger.last_success() is None
    finally:
        ledger.close()


# -- 17. forged log lines

FORGED = "\n2026-11-26 10:00:00 ERROR forged\x1b[31m"


def test_control_characters_from_the_pbx_are_escaped_in_logs_status_and_dry_runs(
        tmp_path, sample_rows):
    """A src or recordingfile holding a newline wrote a log line of its own."""
    rows = calls_at(sample_rows, local("2026-11-26 09:30:00"), src=f"101{FORGED}",
                    cnum=f"101{FORGED}", recordingfile=f"../x{FORGED}.wav")
    rows += calls_at(sample_rows, local("2026-11-26 09:40:00"), keep_name=True,
                     recordingfile=f"later{FORGED}.wav")
    url = cdr_table(tmp_path, rows)
    path = write_config(tmp_path, url, recordings={"wait": "3000d"})
    (tmp_path / "monitor").mkdir()
    dry = run_cli("--config", str(path), "run", "--dry-run")
    ran = run_cli("--config", str(path), "run")
    status = run_cli("--config", str(path), "status")
    for result in (dry, ran, status):
        for line in result.output.splitlines():
            assert not line.startswith("2026-11-26 10:00:00 ERROR"), result.output
            assert "\x1b" not in line
    assert "recording refused" in ran.output and "\\n2026-11-26 10:00:00 ERROR forged" in \
        ran.output
    assert "\\x1b[31m" in status.output and "\\n" in status.output


# -- 13. file modes: set by the poller, whatever the umask

@pytest.mark.parametrize("umask", [0o077, 0o022, 0o027, 0o000])
def test_every_file_the_poller_writes_has_its_mode_whatever_the_umask(
        tmp_path, sample_rows, recordings_dir, umask):
    """Under cron's umask 022, 651 of 656 files a run wrote were world-readable (records, MP3,
    pages, the lock, .index-days, the metrics file), and under 077 the web server's group
    could not read the archive. Now what a reader of the group may see is 0640, what only the
    poller reads 0600, and the folders it makes 0750."""
    rows = calls_at(sample_rows, local("2026-11-26 09:30:00"), monitor=recordings_dir)
    url = cdr_table(tmp_path, rows)
    config = load(write_config(tmp_path, url, recordings={"dir": str(recordings_dir)},
                               metrics={"file": str(tmp_path / "metrics" / "poller.prom")}),
                  env={})
    previous = os.umask(umask)
    try:
        report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    finally:
        os.umask(previous)
    assert report.recordings == 1, report.summary()
    made = [path for top in ("archive", "state", "metrics") for path in (tmp_path / top).rglob("*")]
    modes = {path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in made}
    private = {"state/state.db", "state/journal"}
    expected = {name: 0o750 if (tmp_path / name).is_dir() else
                0o600 if name in private or name.startswith("state/state.db-") else 0o640
                for name in modes}
    assert modes == expected
    assert any(name.endswith(".mp3") for name in modes) and "state/poller.lock" in modes
    assert "archive/.index-days" in modes and "metrics/poller.prom" in modes


@needs_root
def test_a_set_group_id_archive_folder_gives_its_group_every_day_folder_and_file(
        tmp_path, sample_rows):
    """The README's nginx recipe: the archive in a folder of its own, group www-data with
    the set-group-ID bit; the web server's group reads every page, record and recording."""
    group = 4321
    archive = tmp_path / "calls"
    archive.mkdir()
    os.chown(archive, 0, group)
    archive.chmod(0o2750)
    url = cdr_table(tmp_path, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    config = load(write_config(tmp_path, url, target={"archive": {"dir": str(archive)}}),
                  env={})
    previous = os.umask(0o077)
    try:
        run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    finally:
        os.umask(previous)
    made = list(archive.rglob("*"))
    assert any(path.name == "index.html" for path in made)
    assert {path.stat().st_gid for path in made} == {group}
    for path in made:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & (0o050 if path.is_dir() else 0o040), (path, oct(mode))
        assert not mode & 0o007, (path, oct(mode))


def test_the_units_set_a_umask():
    for name in ("poller.service", "poller-follow.service"):
        text = (ROOT / "contrib" / "systemd" / name).read_text()
        assert re.search(r"^UMask=0027$", text, re.M), name


# -- 14. the crontab

def test_the_crontab_line_logs_through_the_poller_with_real_levels():
    """`| logger -t poller` gave every line, errors too, one priority and a second stamp."""
    lines = [line for line in (ROOT / "crontab.example").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split()
    assert fields[:5] == ["*"] * 5 and fields[5] == "poller"
    command = " ".join(fields[6:])
    assert command.startswith("poller ") and "--syslog" in fields and "|" not in command
    assert "run" in fields


# -- 3. the grants

def test_the_shipped_grants_let_the_example_url_connect_over_tcp(mysql_server):
    """The grants made 'poller'@'localhost' only, while the example URL connects to
    127.0.0.1: with skip_name_resolve that is `Access denied`."""
    sql = (ROOT / "sql" / "grant-readonly.sql").read_text()
    user = f"poller_g{os.getpid()}"
    database = f"poller_grants_{os.getpid()}"
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", sql).split(";") if s.strip()]
    admin = sa.create_engine(MYSQL_URL, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{database}`")
            conn.exec_driver_sql(f"CREATE TABLE `{database}`.cdr (calldate DATETIME)")
            for statement in statements:
                conn.exec_driver_sql(statement.replace("'poller'@", f"'{user}'@")
                                     .replace("`asteriskcdrdb`", f"`{database}`"))
        server = sa.engine.make_url(MYSQL_URL)
        url = (f"mysql+pymysql://{user}:change-me@127.0.0.1:{server.port or 3306}/{database}")
        reader = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM cdr").scalar() == 0
        reader.dispose()
        with admin.connect() as conn:
            hosts = {row[0] for row in conn.exec_driver_sql(
                f"SELECT host FROM mysql.user WHERE user = '{user}'")}
        assert hosts == {"localhost", "127.0.0.1"}
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
            for host in ("localhost", "127.0.0.1"):
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.dispose()


# -- 7, 8, 12. small traps

def test_a_dry_run_counts_only_recordings_a_real_run_would_attach(tmp_path, sample_rows,
                                                                 recordings_dir):
    """A bare 44-byte MixMonitor header counted as a recording in the dry run's list, and the
    summary line did not say it was a dry run."""
    rows = calls_at(sample_rows, local("2026-11-26 09:30:00"), monitor=recordings_dir)
    header_only = calls_at(sample_rows, local("2026-11-26 09:40:00"), monitor=recordings_dir)
    wav = recordings_dir / "2026/11/26" / header_only[0]["recordingfile"]
    wav.write_bytes(wav.read_bytes()[:44])
    os.utime(wav, (0, 0))
    url = cdr_table(tmp_path, rows + header_only)
    path = write_config(tmp_path, url, recordings={"dir": str(recordings_dir)})
    result = run_cli("--config", str(path), "run", "--dry-run")
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if "2026-11-26" in line]
    assert len(listed) == 2
    assert listed[0].endswith("1 recording") and listed[1].endswith("no recording (empty)")
    assert "2 calls would be delivered" in result.stdout
    assert "INFO dry run, nothing written: " in result.output


@pytest.mark.slow  # builds the demo
def test_the_demo_hint_names_the_program_as_it_was_started(tmp_path):
    """`try: poller --config … status` failed when poller was not on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run([str(POLLER), "demo", str(tmp_path / "demo")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"(try: {POLLER} --config {tmp_path / 'demo' / 'poller.toml'} status)" in out.stdout


def test_venv_is_ignored_by_git():
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()


def test_interval_without_follow_is_a_usage_error(tmp_path):
    result = run_cli("--config", str(tmp_path / "x.toml"), "run", "--interval", "5s")
    assert result.exit_code == ExitCode.CONFIG
    assert "--interval only applies to --follow" in result.output


def test_one_call_is_one_call(tmp_path, sample_rows):
    url = cdr_table(tmp_path, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    path = write_config(tmp_path, url)
    (tmp_path / "monitor").mkdir()
    report = run_once(load(path, env={}), RunOptions(now=msk("2026-11-26 10:00")))
    assert report.summary().startswith("delivered 1 call (answered 1), 0 recordings, ")


# -- the README, for its readers

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_leads_from_install_to_reference_with_a_table_of_contents():
    sections = re.findall(r"^## (.*)$", README, re.M)
    assert sections == ["Contents", "Quick start", "Install on a PBX", "Daily operation",
                        "Troubleshooting", "Upgrade and uninstall", "How it works", "Reference",
                        "Performance: will it keep up, will it hurt the PBX?",
                        "Development"], sections
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    for title in sections[1:]:
        assert f"[{title}](#" in contents, title
    for name in ("Commands", "Configuration", "Exit codes", "Status JSON", "Call fields"):
        assert f"\n### {name}\n" in README.split("\n## Reference\n", 1)[1], name


def test_every_config_key_is_in_the_one_reference_table_with_type_and_default():
    table = README.split("Every key, with its type and default:", 1)[1].split("\n\n", 2)[1]
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"^\| `([\w.]+)` \| ((?:[^|]|\\\|)+) \| ((?:[^|\\]|\\\|)+) \| (.+) \|$", table, re.M)}
    assert set(rows) == set(config_keys(Config))


def test_the_developer_section_says_what_ci_run_does_to_a_machine():
    """`.ci/run` creates a MariaDB superuser and rebuilds a /tmp venv: never offered to an
    administrator as "the test command" without saying so."""
    before = README.split("\n## Development\n", 1)[0]
    assert ".ci/run" not in before
    development = README.split("\n## Development\n", 1)[1]
    for said in ("poller_test", "never", "/tmp/poller-ci-venv", "apt"):
        assert said in development, said


# -- check: every problem once, in its table, blamed on where it comes from

def test_check_puts_a_world_readable_config_in_its_table_and_says_each_error_once(
        tmp_path, sample_rows):
    """The world-readable-config warning went to standard error, not into the table; a bad
    configuration was printed twice (the table's FAIL line, then the log's ERROR)."""
    url = cdr_table(tmp_path, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    path = write_config(tmp_path, url, target={"kind": "easla", "easla": {
        "url": "http://127.0.0.1:9/user/soap", "login": "poller", "password": "Zq7-secret"}})
    path.chmod(0o644)
    (tmp_path / "monitor").mkdir()
    checked = run_cli("--config", str(path), "check")
    rows = [line for line in checked.stdout.splitlines() if line.split()[1:2] == ["config"]]
    assert rows[0].startswith("ok") and rows[1].startswith("warn"), checked.stdout
    assert "readable by every user" in rows[1]
    assert "readable by every user" not in checked.stderr

    bad = write_config(tmp_path, url, state={"retension": "90d"})
    result = run_cli("--config", str(bad), "check")
    assert result.exit_code == ExitCode.CONFIG
    assert result.output.count("unknown key 'state.retension'") == 1, result.output


def test_a_bad_source_url_from_the_environment_is_blamed_on_the_variable(tmp_path):
    """A bad POLLER_SOURCE_URL was reported as the file's `source.url`, which was fine."""
    path = write_config(tmp_path, "sqlite:///cdr.db")
    env = {"POLLER_SOURCE_URL": "mysql+pymysql://poller:Zq7@Xw9@127.0.0.1/asteriskcdrdb"}
    with pytest.raises(ConfigError) as caught:
        load(path, env=env)
    said = str(caught.value)
    assert said.startswith("POLLER_SOURCE_URL (in the environment, it overrides source.url): "
                           "the password holds a raw"), said
    assert str(path) not in said and "Zq7" not in said


def test_check_fails_when_no_call_could_be_taken_as_incoming(tmp_path, sample_rows):
    """incoming.did_set alone on a table without a did column: no call would ever be
    delivered, and check said only `warn` (exit 0)."""
    import sqlalchemy as sa

    url = cdr_table(tmp_path, calls_at(sample_rows, local("2026-11-26 09:30:00")))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cdr DROP COLUMN did")
    engine.dispose()
    (tmp_path / "monitor").mkdir()
    blind = write_config(tmp_path, url, source={"incoming": {"contexts": [], "channels": []}})
    result = run_cli("--config", str(blind), "check")
    columns = [line for line in result.stdout.splitlines() if "source columns" in line]
    assert columns and columns[0].startswith("FAIL"), result.stdout
    assert result.exit_code == ExitCode.PARTIAL
    seeing = write_config(tmp_path, url)  # the stock contexts still recognise calls
    result = run_cli("--config", str(seeing), "check")
    columns = [line for line in result.stdout.splitlines() if "source columns" in line]
    assert columns and columns[0].startswith("warn"), result.stdout


# -- the first run: what it did not read, and where the pages are

def test_the_first_run_and_status_say_what_was_not_read_and_the_backfill_for_it(
        tmp_path, sample_rows, caplog):
    """The first run delivered only the last 4 hours (6 of the day's 20 calls) and nothing
    said so — not the run, not status — nor suggested `run --since`; a run did not say where
    the archive pages are. Now the first run and status say how many rows were left, since
    when, and the backfill that delivers them, until a backfill covers them."""
    import logging

    rows = calls_at(sample_rows, local("2026-11-26 02:30:00"), local("2026-11-26 05:10:00"),
                    local("2026-11-26 10:15:00"))
    url = cdr_table(tmp_path, rows)
    path = write_config(tmp_path, url, source={"start": ""})
    config = load(path, env={})
    (tmp_path / "monitor").mkdir()
    with caplog.at_level(logging.INFO, logger="poller"):
        run_once(config, RunOptions(now=msk("2026-11-26 12:00"), dry_run=True))
    assert "first run of this ledger: it would read the calls from 2026-11-26 08:00" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="poller"):
        report = run_once(config, RunOptions(now=msk("2026-11-26 12:00")))
    assert report.delivered_count == 1, report.summary()
    backfill = "poller run --since 2026-11-26 --until '2026-11-26 08:00'"
    said = [r.getMessage() for r in caplog.records if "first run" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert "from 2026-11-26 08:00 on" in said[0] and "2 cdr rows before then" in said[0]
    assert "back to 2026-11-26 02:30" in said[0] and f"`{backfill}` delivers them" in said[0]
    pages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("archive pages")]
    assert pages and str(tmp_path / "archive" / "index.html") in pages[0], caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="poller"):
        run_once(config, RunOptions(now=msk("2026-11-26 12:05")))
    assert "first run" not in caplog.text and "archive pages" not in caplog.text

    text = run_cli("--config", str(path), "status").stdout
    history = [line for line in text.splitlines() if line.startswith("history:")]
    assert history and "2 cdr rows before 2026-11-26 08:00:00 +03:00" in history[0], text
    assert backfill in history[0]
    assert f"pages:       {tmp_path / 'archive' / 'index.html'}" in text
    data = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    assert data["unread_history"] == {"before": "2026-11-26T08:00:00+03:00",
                                      "oldest": "2026-11-26T02:30:00+03:00", "rows": 2,
                                      "backfill": backfill}

    run_once(config, RunOptions(since=local("2026-11-26 00:00"), until=local("2026-11-26 08:00"),
                                now=msk("2026-11-26 12:10")))
    assert "history:" not in run_cli("--config", str(path), "status").stdout
    assert json.loads(run_cli("--config", str(path), "status", "--json").stdout)[
        "unread_history"] is None


def test_a_reconcile_over_the_unread_rows_keeps_their_note(tmp_path, sample_rows):
    """`poller reconcile --since` reads only Master.csv's calls the table lacks: the table's
    rows before the origin are still unread, and their note (with its backfill) stays."""
    rows = calls_at(sample_rows, local("2026-11-26 02:30:00"), local("2026-11-26 05:10:00"),
                    local("2026-11-26 10:15:00"))
    url = cdr_table(tmp_path, rows)
    master = tmp_path / "Master.csv"
    master.write_bytes(b"")
    path = write_config(tmp_path, url, source={"start": "", "reconcile": {"csv": str(master)}},
                        recordings={"name": "{calldate:%Y/%m/%d}/*-{uniqueid}.wav"})
    config = load(path, env={})
    (tmp_path / "monitor").mkdir()
    run_once(config, RunOptions(now=msk("2026-11-26 12:00")))
    note = json.loads(run_cli("--config", str(path), "status", "--json").stdout)[
        "unread_history"]
    assert note is not None and note["rows"] == 2
    report = run_once(config, RunOptions(since=local("2026-11-26 00:00"), reconcile=True,
                                         until=local("2026-11-26 08:00"),
                                         now=msk("2026-11-26 12:10")))
    assert report.exit_code == 0 and report.delivered_count == 0, report.summary()
    assert json.loads(run_cli("--config", str(path), "status", "--json").stdout)[
        "unread_history"] == note
