"""The README's install path as an administrator copies it: the commands of its fenced blocks
are run (with stand-ins for the commands that would change this machine) or read for who they
run as, and its figures are compared with the tables they come from."""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import (
    DIRECT_ANSWERED,
    NOBODY,
    ROOT,
    as_nobody,
    cdr_table,
    clone_call,
    give_to_nobody,
    in_child,
    legs_of,
    local,
    make_config,
    msk,
    needs_root,
    write_config,
)

from poller.config.load import load
from poller.errors import PollerError
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

README = (ROOT / "README.md").read_text(encoding="utf-8")
WALK_THROUGH = README.split("\n## How it works\n", 1)[0]


def section(title: str, text: str = README) -> str:
    """The text of one `### title` (or `## title`) section, up to the next heading."""
    start = re.search(rf"^#{{2,4}} {re.escape(title)}\n", text, re.M)
    assert start, title
    rest = text[start.end():]
    end = re.search(r"^#{2,4} ", rest, re.M)  # a shell comment in a block is not one
    return rest[:end.start()] if end else rest


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


# -- 2. the user and its folders

def run_with_stand_ins(block: str, tmp_path: Path, groups: set[str]) -> list[str]:
    """Run a README block with useradd, usermod, getent and install replaced by stand-ins that
    log their arguments; `getent group` answers for `groups` only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for name in ("useradd", "usermod", "install"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
    known = " ".join(sorted(groups))
    (bin_dir / "getent").write_text(
        f'#!/bin/sh\necho "getent $*" >> {log}\n'
        f'for g in {known}; do [ "$1 $2" = "group $g" ] && exit 0; done\nexit 2\n')
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    subprocess.run(["sh", "-e", "-c", block], check=True, cwd=tmp_path, timeout=30,
                   env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    return log.read_text().splitlines()


@pytest.mark.parametrize("freepbx", [True, False])
def test_the_service_user_is_made_on_hosts_with_and_without_the_asterisk_group(tmp_path,
                                                                               freepbx):
    """`useradd --groups asterisk` failed (rc 6) on a host without FreePBX and gave the user
    /bin/sh. The block now works on both, the user cannot log in, and it joins `asterisk` only
    where the group exists — which the text says before the command."""
    text = section("2. The user and its folders")
    block, = shell_blocks(text)
    calls = run_with_stand_ins(block, tmp_path, {"asterisk"} if freepbx else set())
    useradd, = (call for call in calls if call.startswith("useradd "))
    assert "--shell /usr/sbin/nologin" in useradd and "--system" in useradd
    assert "asterisk" not in useradd
    joins = [call for call in calls if call.startswith("usermod ") and "asterisk" in call]
    assert len(joins) == (1 if freepbx else 0), calls
    explained = text.split("```sh", 1)[0]
    assert "asterisk" in explained and "without" in explained


# -- every command that writes runs as the service user

POLLER_COMMAND = re.compile(r"(?<![\w/.-])poller(?: +(?:-[qv]|--syslog|--config +\S+))* +"
                            r"(run|check|retry|archive|reconcile)\b")


def command_lines(text: str) -> list[str]:
    """The lines an administrator copies: fenced shell lines, and inline commands given whole
    (with their --config)."""
    lines = [line for block in shell_blocks(text) for line in block.splitlines()]
    spans = re.findall(r"`([^`\n]*--config[^`\n]*)`", text)
    return [line for line in lines + spans if POLLER_COMMAND.search(line)]


def test_every_command_of_the_walk_through_runs_as_the_service_user():
    """§6 told root to run `poller --config … run --dry-run`, which is refused (exit 2)."""
    lines = command_lines(WALK_THROUGH)
    assert any("--dry-run" in line for line in lines)
    crontab = "poller -q --syslog --config /etc/poller/poller.toml run"  # cron runs it as poller
    wrong = [line for line in lines
             if line != crontab and not re.search(r"runuser -u poller -- poller\b", line)]
    assert wrong == []


# -- the intro's figures

def test_the_intros_idle_run_is_the_benchmark_tables():
    """The intro said 0.3 s while its own benchmark table said 0.6 s."""
    said = re.search(r"an idle run \(nothing new\) takes about ([\d.]+) s", README)
    assert said
    row = re.search(r"^\| 1 +\| idle cron run, wall +\| ([\d.]+) s", README, re.M)
    assert row
    assert float(said.group(1)) == round(float(row.group(1)), 1)


# -- the archive pages behind nginx, the metrics file for node_exporter

def lines_of(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def as_user(uid: int, gid: int, groups: list[int], work: Callable[[], Any]) -> Any:
    def become() -> None:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    return in_child(become, work)


@needs_root
def test_the_nginx_recipe_lets_the_web_server_read_the_pages_and_nothing_else(
        site, sample_rows):
    """`runuser -u www-data -- cat /var/lib/poller/archive/index.html` was Permission denied
    with the advised 0750 state.dir: the recipe now gives the archive a folder of its own,
    in the web server's group. Its commands run here (`poller` is `nobody`) and the web
    server's user reads a page and a record; the ledger stays out of its reach."""
    web = pwd.getpwnam("www-data")
    text = section("The archive pages")
    block = shell_blocks(text)[0]
    install, = (line for line in lines_of(block) if line.startswith("install "))
    folder = re.search(r"(/srv/\S+)$", install)
    assert folder and f"alias {folder.group(1)}/;" in text
    calls = site / "calls"
    subprocess.run(install.replace("-o poller", "-o nobody").replace(folder.group(1),
                                                                      str(calls)),
                   shell=True, check=True, timeout=30)
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), local("2026-11-26 09:30:00"))
    url = cdr_table(site, rows)
    config_path = write_config(site, url, target={"archive": {"dir": str(calls)}})
    (site / "state").mkdir()
    give_to_nobody(site / "state", config_path)
    config = load(config_path, env={})
    # a first run as root, elsewhere, loads what the pages need: nobody cannot read the
    # interpreter's files after the fork
    (site / "warm").mkdir()
    warm = load(write_config(site / "warm", url), env={})
    run_once(warm, RunOptions(now=msk("2026-11-26 10:00")))
    report = as_nobody(lambda: run_once(config, RunOptions(now=msk("2026-11-26 10:00"))))
    assert report.delivered, report
    record = next(calls.rglob("*.json"))

    def read() -> list[bool]:
        return [os.access(path, os.R_OK) for path in
                (calls / "index.html", record, record.parent / "index.html",
                 site / "state" / "state.db")]
    assert as_user(web.pw_uid, web.pw_gid, [], read) == [True, True, True, False]


@needs_root
def test_the_metrics_recipe_passes_check_and_node_exporter_reads_the_file(site):
    """The README's metrics path failed `check` (`/var/lib is not writable by user poller`)
    with no advice. Its recipe runs here on a folder made as Debian's node_exporter makes
    it (`poller` is `nobody`, the group `prometheus` is `staff`); `check` says ok as the
    service user, a run's file is written, and a member of the group reads it."""
    import prometheus_client.exposition  # noqa: F401 - imported before the child drops root

    from poller.ops.check import CHECKS
    from poller.run.metrics import write_metrics
    from poller.run.report import RunReport

    text = section("Metrics and alerts")
    path = re.search(r'file = "(/var/lib/prometheus/node-exporter/poller\.prom)"', text)
    assert path
    folder = site / "node-exporter"
    folder.mkdir(mode=0o755)
    staff = grp.getgrnam("staff").gr_gid
    prom = folder / "poller.prom"
    config = make_config(site, "sqlite:///unused.db", metrics={"file": str(prom)})
    check = dict(CHECKS)["metrics"]

    def before_the_recipe() -> str:
        try:
            list(check(config))
        except PollerError as exc:
            return str(exc)
        return "ok"
    said = as_user(NOBODY.pw_uid, NOBODY.pw_gid, [staff], before_the_recipe)
    assert "group write" in said and "chown" not in said, said  # not node_exporter's folder
    for line in lines_of(shell_blocks(text)[0]):
        if line.startswith(("chgrp", "chmod")):
            subprocess.run(line.replace("/var/lib/prometheus/node-exporter", str(folder))
                           .replace("prometheus", "staff"), shell=True, check=True,
                           timeout=30)
    assert any(line.startswith("usermod -a -G prometheus poller")
               for line in lines_of(shell_blocks(text)[0]))

    def as_service_user() -> str:
        result, = check(config)
        write_metrics(str(prom), RunReport(), None)
        return f"{result.outcome} {result.detail}"
    said = as_user(NOBODY.pw_uid, NOBODY.pw_gid, [staff], as_service_user)
    assert said.startswith("ok"), said
    assert prom.stat().st_gid == staff and stat.S_IMODE(prom.stat().st_mode) == 0o640
    reader = as_user(4322, 4322, [staff], lambda: prom.read_text())
    assert "poller_last_run_timestamp_seconds" in reader
    uninstall = section("Upgrade and uninstall")
    assert f"rm -f {path.group(1)}" in uninstall
