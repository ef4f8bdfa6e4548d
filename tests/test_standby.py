"""A standby poller (design §13): two hosts run one config against one MariaDB ledger and the
loopback easla, `poller run` started on both at once, again and again, either SIGKILLed at a
random moment. Every call is created exactly once (bar a kill in the lost-reply window), and
the standby takes over in its first run after the active host is killed mid-batch."""

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

import pytest
import sqlalchemy as sa
from easla_server import EaslaServer
from support import (
    DIRECT_ANSWERED,
    IVR_NOBODY,
    MSK,
    QUEUE_ANSWERED,
    ROOT,
    cdr_table,
    clone_call,
    legs_of,
    write_config,
)

from poller.run.ledgerlock import lock_name

CALLS = 24
ROUNDS = 12  # both hosts started together; in every third the active one is killed instead
WINDOW = 0.5  # seconds after createObjectref answered in which a kill may make a duplicate
RUN_TIMEOUT = 120
ATTRIBUTES = {"key": "incoming_call_key", "number": "incoming_call_number",
              "status": "status"}


class Host:
    """One poller host: its own state.dir and config file, the shared ledger and target."""

    def __init__(self, name: str, folder: Path, cdr_url: str, sections: dict[str, Any]):
        self.name = name
        self.folder = folder
        folder.mkdir()
        self.config = write_config(folder, cdr_url, **sections)
        self.log = folder / "runs.log"

    def start(self) -> subprocess.Popen[bytes]:
        """`poller run` as cron starts it (three calls a run: a batch lasts several runs)."""
        with open(self.log, "ab") as log:
            log.write(f"--- run at {time.monotonic():.3f}\n".encode())
            return subprocess.Popen(
                [sys.executable, "-m", "poller.cli", "--config", str(self.config), "run",
                 "--limit", "3"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=RUN_TIMEOUT)


def workload(sample_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CALLS settled calls of the last few hours, in Moscow time as the PBX writes it."""
    now = dt.datetime.now(MSK).replace(tzinfo=None, microsecond=0)
    templates = [legs_of(sample_rows, uid) for uid in (DIRECT_ANSWERED, QUEUE_ANSWERED,
                                                       IVR_NOBODY)]
    return [row for number in range(CALLS)
            for row in clone_call(templates[number % 3],
                                  now - dt.timedelta(hours=3) + dt.timedelta(minutes=7 * number))]


class Standby:
    """The two hosts, the easla they share, and what happened."""

    def __init__(self, tmp_path: Path, ledger_url: str, rows: list[dict[str, Any]],
                 easla: EaslaServer):
        self.ledger_url = ledger_url
        self.easla = easla
        cdr_url = cdr_table(tmp_path, rows)
        start = (dt.datetime.now(MSK) - dt.timedelta(hours=4)).strftime("%Y-%m-%d %H:%M")
        sections = {
            "source": {"name": "kiev", "lookback": "5h", "start": start},
            "state": {"url": ledger_url},
            "retry": {"max_attempts": 5, "backoff": "1s", "max_backoff": "2s"},
            "target": {"kind": "easla", "easla": {"url": easla.url, "login": "poller",
                                                  "password": "secret", "timeout": "2s",
                                                  "attributes": ATTRIBUTES}}}
        self.hosts = [Host(name, tmp_path / name, cdr_url, sections)
                      for name in ("active", "standby")]
        self.answered: list[float] = []  # when a createObjectref reply went out
        self.kills: list[float] = []
        self.takeovers = 0
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
            text = conn.execute(sa.text("SELECT value FROM poller_meta WHERE name = "
                                        "'kiev/run_holder'")).scalar()
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
        assert took.returncode in (0, 1), said
        assert "holds the ledger's lock" not in said, said  # the dead host's lock is gone
        self.takeovers += 1

    def settle(self) -> None:
        """Runs without kills, each host in turn, until the ledger holds nothing due."""
        for number in range(30):
            process = self.hosts[number % 2].start()
            process.wait(timeout=RUN_TIMEOUT)
            with self.engine.connect() as conn:
                left = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM poller_calls WHERE stage NOT IN ('done', 'skipped')"
                    " AND source = 'kiev'")).scalar()
            if left == 0:
                return
        raise AssertionError(f"{left} calls still not delivered")

    def window_kills(self) -> int:
        """Kills within WINDOW after a createObjectref reply: each may make one duplicate."""
        return sum(any(0 <= k - a <= WINDOW for a in self.answered) for k in self.kills)


@pytest.mark.slow
@pytest.mark.mariadb
def test_two_hosts_one_config_killed_at_random_create_every_call_once(
        tmp_path, sample_rows, empty_db):
    rng = random.Random(20261126)
    rows = workload(sample_rows)
    with EaslaServer(attributes=None) as easla:
        standby = Standby(tmp_path, empty_db.url + "?charset=utf8mb4", rows, easla)
        try:
            for number in range(ROUNDS):
                if number % 3 == 2:
                    standby.failover(rng)
                else:
                    standby.together(rng)
            standby.settle()
        finally:
            standby.engine.dispose()
        keys = collections.Counter(obj["attributes"]["incoming_call_key"][0]
                                   for obj in easla.objects.values())
    incoming = {f"kiev:{row['linkedid'] or row['uniqueid']}" for row in rows}
    duplicates = sum(count - 1 for count in keys.values())
    print(f"\nstandby: {len(incoming)} calls, {len(easla.objects)} objects, "
          f"{duplicates} duplicates, {len(standby.kills)} kills "
          f"({standby.window_kills()} in the lost-reply window), "
          f"{standby.takeovers} failovers taken over at once")
    assert set(keys) == incoming
    assert duplicates <= standby.window_kills()
    assert standby.kills and standby.takeovers >= 2
