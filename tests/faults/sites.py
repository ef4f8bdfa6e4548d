"""A site: one poller installation (its config file, state.dir, recordings folder, target)
and the ways the suite runs it -- in this process with run_once, or as `poller run` in a
process group of its own that the suite may SIGKILL."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from support import ROOT, config_data, to_toml

from poller.config.load import from_mapping
from poller.config.schema import Config
from poller.errors import PollerError
from poller.ledger.schema import Entry
from poller.ledger.store import Ledger
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.run.report import RunReport

RUN_TIMEOUT = 180.0  # seconds: a run that takes longer is killed and counted as hung

EASLA_ATTRIBUTES = {"key": "incoming_call_key", "number": "incoming_call_number",
                    "duration": "incoming_call_time", "status": "status",
                    "answered_by": "incoming_call_answered_by"}


@dataclass
class Outcome:
    """How one run ended: its exit code (-9 when the suite killed it), or what it raised."""

    exit_code: int
    report: RunReport | None = None
    raised: str | None = None  # an unexpected exception
    stopped: str | None = None  # one of the poller's own errors, as the CLI reports it


class Site:
    """One poller installation under `folder`."""

    def __init__(self, name: str, folder: Path, source_url: str, **sections: dict[str, Any]):
        self.name = name
        self.folder = folder
        self.sections = sections
        self.source_url = source_url
        self.config_path = folder / "poller.toml"
        self.log = folder / "runs.log"
        self.monitor = folder / "monitor"
        self.state = folder / "state"
        self.archive = folder / "archive"
        self.monitor.mkdir(parents=True, exist_ok=True)
        self.config: Config = self.configure()

    def configure(self, source_url: str | None = None, **sections: dict[str, Any]) -> Config:
        """Write the config (the source and sections given replace the current ones)."""
        if source_url is not None:
            self.source_url = source_url
        self.sections = _merged(self.sections, sections)
        data = config_data(self.folder, self.source_url, **self.sections)
        self.config_path.write_text(to_toml(data), encoding="utf-8")
        self.config_path.chmod(0o600)
        self.config = from_mapping(data, env={})
        return self.config

    # -- running

    def run(self, now: dt.datetime | None = None) -> Outcome:
        """One run in this process."""
        try:
            report = run_once(self.config, RunOptions(now=now))
        except PollerError as exc:  # the CLI's exit code for it (guard.py): a run's answer
            return Outcome(int(exc.exit_code), stopped=str(exc))
        except Exception as exc:  # the CLI would say "unexpected error": a finding, kept
            return Outcome(1, raised=f"{type(exc).__name__}: {exc}")
        return Outcome(int(report.exit_code), report)

    def spawn(self) -> subprocess.Popen[bytes]:
        """`poller run` as cron starts it, in a process group of its own."""
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "poller.cli", "--config", str(self.config_path), "run"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def run_cli(self, watch: Callable[[subprocess.Popen[bytes]], None] | None = None,
                victim: list[subprocess.Popen[bytes]] | None = None) -> Outcome:
        """`poller run`; `watch` is called with the process (it may kill it) while it runs;
        `victim` (a list) gets the process as soon as it exists, for a hook to kill."""
        process = self.spawn()
        if victim is not None:
            victim.append(process)
        try:
            if watch is not None:
                watch(process)
            process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(process)
            return Outcome(-1, raised=f"hung: killed after {RUN_TIMEOUT:.0f}s")
        finally:
            if process.poll() is None:
                kill_group(process)
        return Outcome(process.returncode)

    # -- reading what it left

    def ledger(self) -> Ledger:
        return Ledger(self.config.state.database_url, create=False)

    def entries(self) -> dict[str, Entry]:
        ledger = Ledger.open_existing(self.config.state.database_url)
        if ledger is None:  # no run made it yet
            return {}
        try:
            with ledger.engine.connect() as conn:
                keys = [row[0] for row in
                        conn.execute(sa.text("SELECT call_key FROM poller_calls"))]
            found = {key: ledger.entry(key) for key in keys}
        finally:
            ledger.close()
        return {key: entry for key, entry in found.items() if entry is not None}

    def requeue_parked(self) -> list[str]:
        """`poller retry --all`, as an operator would after the faults: the keys requeued."""
        parked = [key for key, entry in self.entries().items() if entry.stage == "failed"]
        if not parked:
            return []
        ledger = self.ledger()
        try:
            ledger.requeue_failed(None)
        finally:
            ledger.close()
        return parked


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merged(merged[name], value)
        else:
            merged[name] = value
    return merged


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the encoder runs in a session of its own, but is still
    the poller's child)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(n) for n in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
