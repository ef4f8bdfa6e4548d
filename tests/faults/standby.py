"""A standby poller beside the active one (design §13): two hosts run one config against one
MariaDB ledger and one easla, their cron runs started together or the lock's holder killed
mid-batch, either SIGKILLed at a random moment. Used by tests/test_standby.py and the fault
suite."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from easla_server import EaslaServer
from support import MSK, ROOT, write_config

from poller.run.ledgerlock import lock_name

WINDOW = 0.5  # seconds after createObjectref answered in which a kill may make a duplicate
RUN_TIMEOUT = 120
ATTRIBUTES = {"key": "incoming_call_key", "number": "incoming_call_number",
              "status": "status"}


class Host:
    """One poller host: its own state.dir and config file, the shared ledger and target."""

    def __init__(self, name: str, folder: Path, cdr_url: str, sections: dict[str, Any]):
        self.name = name
        self.folder = folder
        folder.mkdir(parents=True)
        self.config = write_config(folder, cdr_url, **sections)
        self.log = folder / "runs.log"

    def start(self, limit: int | None = 3) -> subprocess.Popen[bytes]:
        """`poller run` as cron starts it (three calls a run by default: a batch lasts several
        runs, and a kill finds one under way)."""
        with open(self.log, "ab") as log:
            log.write(f"--- run at {time.monotonic():.3f}\n".encode())
            more = ["--limit", str(limit)] if limit else []
            return subprocess.Popen(
                [sys.executable, "-m", "poller.cli", "--config", str(self.config), "run",
                 *more], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=RUN_TIMEOUT)


class Standby:
    """The two hosts, the easla they share, and what happened."""

    def __init__(self, folder: Path, ledger_url: str, cdr_url: str, easla: EaslaServer,
                 recordings: Path | None = None, start: str | None = None):
        self.ledger_url = ledger_url
        self.easla = easla
        start = start or (dt.datetime.now(MSK) - dt.timedelta(hours=4)).strftime(
            "%Y-%m-%d %H:%M")
        sections: dict[str, Any] = {
            "source": {"name": "kiev", "lookback": "5h", "start": start},
            "state": {"url": ledger_url},
            "retry": {"max_attempts": 5, "backoff": "1s", "max_backoff": "2s"},
            "target": {"kind": "easla", "easla": {"url": easla.url, "login": "poller",
                                                  "password": "secret", "timeout": "2s",
                                                  "attributes": ATTRIBUTES}}}
        if recordings is not None:
            sections["recordings"] = {"dir": str(recordings)}
        self.hosts = [Host(name, folder / name, cdr_url, sections)
                      for name in ("active", "standby")]
        self.answered: list[float] = []  # when a createObjectref reply went out
        self.kills: list[float] = []
        self.takeovers = 0
        self.problems: list[str] = []  # promises broken on the way
        self.engine = sa.create_engine(ledger_url, poolclass=sa.pool.NullPool,
                                       isolation_level="AUTOCOMMIT")
        self.lock = lock_name(sa.engine.make_url(ledger_url), "kiev")
        easla.hook = self._hook

    def _hook(self, moment: str, operation: str) -> None:
        if moment == "answered" and operation == "createObjectref":
            self.answered.append(time.monotonic())

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            self.kills.append(time.monotonic())
        kill(process)

    def together(self, rng: random.Random) -> None:
        """Both hosts' cron runs at once; one of them may be SIGKILLed at a random moment."""
        running = [host.start() for host in self.hosts]
        if rng.random() < 0.7:
            time.sleep(rng.uniform(0.3, 2.0))
            self._kill(rng.choice(running))
        for process in running:
            process.wait(timeout=RUN_TIMEOUT)

    def holder_pid(self) -> int | None:
        with self.engine.connect() as conn:
            if conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": self.lock}).scalar() \
                    is None:
                return None
            try:
                text = conn.execute(sa.text("SELECT value FROM poller_meta WHERE name = "
                                            "'kiev/run_holder'")).scalar()
            except sa.exc.ProgrammingError:  # the first run has the lock, not yet the ledger
                return None
        return int(json.loads(text)["pid"]) if text else None

    def failover(self, rng: random.Random) -> None:
        """The active host is killed while it holds the lock: the standby's next run works."""
        active, standby = rng.sample(self.hosts, 2)
        process = active.start()
        deadline = time.monotonic() + 20
        while self.holder_pid() != process.pid:
            if process.poll() is not None or time.monotonic() > deadline:
                return  # it had nothing to do: no failover to see this round
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        self._kill(process)
        before = standby.log.stat().st_size if standby.log.exists() else 0
        took = standby.start()
        took.wait(timeout=RUN_TIMEOUT)
        said = standby.log.read_bytes()[before:].decode(errors="replace")
        if took.returncode not in (0, 1) or "holds the ledger's lock" in said:
            # the dead host's lock must be gone at once
            self.problems.append(f"the standby did not take over: {said.strip()[-500:]}")
            return
        self.takeovers += 1

    def settle(self) -> None:
        """Runs without kills or limit, each host in turn, until the ledger holds nothing
        due."""
        for number in range(30):
            process = self.hosts[number % 2].start(limit=None)
            process.wait(timeout=RUN_TIMEOUT)
            with self.engine.connect() as conn:
                left = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM poller_calls WHERE stage NOT IN ('done', 'skipped')"
                    " AND source = 'kiev'")).scalar()
            if left == 0:
                return
        self.problems.append(f"{left} calls still not delivered after 30 clean runs")

    def created(self) -> collections.Counter[str]:
        """How many objects easla holds per call key."""
        return collections.Counter(obj["attributes"]["incoming_call_key"][0]
                                   for obj in self.easla.objects.values())

    def audit(self, incoming: set[str]) -> tuple[str, list[str]]:
        """The fault suite's line for the standby, and the promises it broke."""
        created = self.created()
        expected = {f"kiev:{key}" for key in incoming}
        duplicates = sum(count - 1 for count in created.values())
        line = (f"standby: {len(expected)} calls, {sum(created.values())} objects, "
                f"{duplicates} duplicates, {len(self.kills)} kills ({self.window_kills()} in "
                f"the lost-reply window), {self.takeovers} failovers taken over at once")
        broken = [f"standby: {text}" for text in self.problems]
        broken += [f"standby: lost {key}" for key in sorted(expected - set(created))]
        broken += [f"standby: not incoming, delivered {key}"
                   for key in sorted(set(created) - expected)]
        if duplicates > self.window_kills():
            broken.append(f"standby: {duplicates} duplicates, {self.window_kills()} kills in the "
                          "lost-reply window")
        return line, broken

    def window_kills(self) -> int:
        """Kills within WINDOW after a createObjectref reply: each may make one duplicate."""
        return sum(any(0 <= k - a <= WINDOW for a in self.answered) for k in self.kills)
