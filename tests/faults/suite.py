"""The fault suite: a PBX workload in MariaDB delivered over and over to a loopback easla, an
archive on a small disk and a loopback webhook receiver while every fault is injected; then one
clean run and the audit (faults.audit).

Three sites read the same cdr table: `easla` (after_upload = "delete"; the kills, SOAP faults,
outages, database and state faults), `archive` (its own state and recordings copy, a caller
directory, the archive on a size-limited tmpfs: the local faults — a full disk, a damaged
journal, the directory gone with its copy damaged, folders refusing the service user) and
`webhook` (its own state and recordings copy; the receiver verifies every request with
standardwebhooks and fails the ways a receiver fails, and the run is SIGKILLed right after the
receiver stored a call). Time is
real, the retry schedule shortened (backoff 1s, max_backoff 2s, max_attempts 3), so that
parking shows within a few runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from easla_server import EaslaServer
from support import MSK, MYSQL_URL, ROOT
from webhook_receiver import Message, WebhookReceiver

from .servers import (
    Locker,
    Mounts,
    PrivateMariaDB,
    as_service_user,
    can_act_as_service_user,
    can_mount,
    free_port,
    give_to_service_user,
)
from .sites import EASLA_ATTRIBUTES, Outcome, Site, children, command_line, kill_group
from .standby import Standby
from .workload import Workload

OWN_FAULT = "Object rejected by a workflow rule"  # a fault about this call: charged to it
KILLS = ("kill_reading", "kill_after_create", "kill_transcoding", "kill_upload")
LABELS = {
    "kill_reading": "SIGKILL while reading the cdr table",
    "kill_after_create": "SIGKILL right after createObjectref answered",
    "kill_transcoding": "SIGKILL while transcoding (encoder child running)",
    "kill_upload": "SIGKILL during upload (addFile in progress)",
    "soap_http500": "SOAP: HTTP 500",
    "soap_timeout": "SOAP: timeout",
    "soap_reset": "SOAP: connection reset",
    "soap_fault": "SOAP: fault",
    "session_expiry": "SOAP: session expired mid-run",
    "lost_reply": "SOAP: reply lost after the work was done",
    "target_down": "easla down (closed port)",
    "mariadb_stop": "MariaDB killed mid-read and restarted",
    "state_locked": "state database locked (BEGIN EXCLUSIVE)",
    "state_readonly": "state.dir read-only mid-run",
    "disk_full": "archive disk full",
    "webhook_http500": "webhook: HTTP 500",
    "webhook_http429": "webhook: HTTP 429 with Retry-After",
    "webhook_reset": "webhook: reset before the body was read",
    "webhook_lost_reply": "webhook: reply lost after the call was stored",
    "webhook_slow": "webhook: receiver slower than the timeout",
    "webhook_http400": "webhook: HTTP 400 for one call",
    "kill_after_webhook": "SIGKILL right after the receiver stored a call",
    "journal_damaged": "journal damaged (garbage, a torn last line)",
    "directory_damaged": "caller directory gone, its copy damaged",
    "eacces": "EACCES as the service user (tmp/, a day folder)",
    "standby": "standby host: both run, either SIGKILLed at random",
}
WEBHOOK_FAULTS = ("webhook_http500", "webhook_http429", "webhook_reset", "webhook_lost_reply",
                  "webhook_slow", "webhook_http400", "kill_after_webhook")


@dataclass(frozen=True)
class Plan:
    """How much of everything: calls, faults by kind, the length of the outage."""

    calls: int
    faults: dict[str, int]
    outage_runs: int
    lock_seconds: tuple[float, ...]  # how long each state-database lock is held, in turn

    @property
    def rounds(self) -> int:
        return sum(self.faults.values())


SHORT = Plan(calls=70, outage_runs=40, lock_seconds=(3.0,), faults={
    "kill_reading": 1, "kill_after_create": 3, "kill_transcoding": 2, "kill_upload": 2,
    "soap_http500": 2, "soap_timeout": 1, "soap_reset": 2, "soap_fault": 2,
    "session_expiry": 1, "lost_reply": 2, "target_down": 1, "mariadb_stop": 1,
    "state_locked": 1, "state_readonly": 1, "disk_full": 1,
    "webhook_http500": 1, "webhook_http429": 1, "webhook_reset": 1, "webhook_lost_reply": 1,
    "webhook_slow": 1, "webhook_http400": 1, "kill_after_webhook": 2, "journal_damaged": 1,
    "directory_damaged": 1, "eacces": 2, "standby": 3})
LONG = Plan(calls=400, outage_runs=300, lock_seconds=(3.0, 45.0), faults={
    "kill_reading": 10, "kill_after_create": 20, "kill_transcoding": 10, "kill_upload": 10,
    "soap_http500": 8, "soap_timeout": 6, "soap_reset": 8, "soap_fault": 8,
    "session_expiry": 6, "lost_reply": 8, "target_down": 1, "mariadb_stop": 3,
    "state_locked": 2, "state_readonly": 3, "disk_full": 3,
    "webhook_http500": 6, "webhook_http429": 4, "webhook_reset": 6, "webhook_lost_reply": 6,
    "webhook_slow": 4, "webhook_http400": 3, "kill_after_webhook": 10, "journal_damaged": 3,
    "directory_damaged": 3, "eacces": 4, "standby": 9})


@dataclass
class Tally:
    """What the suite did and saw, for the audit and the table."""

    injected: Counter[str] = field(default_factory=Counter)  # kind -> faults that took effect
    missed: Counter[str] = field(default_factory=Counter)  # kind -> runs where it could not
    detail: dict[str, str] = field(default_factory=dict)  # kind -> how (real or simulated)
    runs: int = 0
    # site -> keys whose own request failed (charged by design): parking them is not an
    # outage's doing
    own_failures: dict[str, set[str]] = field(default_factory=dict)
    # the stated window: the target did the work, no local commit followed
    object_windows: Counter[str] = field(default_factory=Counter)  # key -> windows
    file_windows: Counter[str] = field(default_factory=Counter)
    webhook_windows: Counter[str] = field(default_factory=Counter)  # key -> repeats caused
    window_causes: Counter[str] = field(default_factory=Counter)  # how each window came
    kill_after_create_keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # broken promises seen during the runs
    parked: dict[str, list[str]] = field(default_factory=dict)  # site -> parked before requeue
    attempts_by_outage: int = 0  # attempts charged while the target was down
    attempts_by_local: int = 0  # ... while a file or folder of the poller's own failed it
    runs_raised: list[str] = field(default_factory=list)
    standby: str = ""  # the standby pair's line for the table


class Suite:
    """Builds everything under a temporary folder, runs the rounds, heals, runs once clean."""

    def __init__(self, plan: Plan, seed: int, sample_rows: list[dict[str, Any]],
                 mysql_url: str = MYSQL_URL, keep: bool = False,
                 say: Callable[[str], None] = lambda text: None):
        self.plan = plan
        self.seed = seed
        self.rng = random.Random(seed)
        self.sample_rows = sample_rows
        self.mysql_url = mysql_url.rstrip("/")
        self.keep = keep
        self.say = say
        self.tally = Tally()
        self.stack = contextlib.ExitStack()

    # -- set-up and tear-down

    def __enter__(self) -> Suite:
        try:
            self._setup()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _setup(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="poller-faults-")).resolve()
        self.root.chmod(0o755)  # the service user goes through it (faults "eacces")
        if not self.keep:
            self.stack.callback(shutil.rmtree, self.root, ignore_errors=True)
        self.mounts = Mounts()
        self.stack.callback(self.mounts.undo_all)
        self.mountable = can_mount()
        self.database = f"poller_faults_{secrets.token_hex(4)}"
        admin = sa.create_engine(self.mysql_url, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4"))
        self.stack.callback(self._drop_database, admin)
        self.cdr_url = f"{self.mysql_url}/{self.database}"
        self.engine = sa.create_engine(self.cdr_url + "?charset=utf8mb4",
                                       poolclass=sa.pool.NullPool)
        self.stack.callback(self.engine.dispose)
        with self.engine.begin() as conn:
            conn.exec_driver_sql((ROOT / "sql" / "cdr-freepbx.sql").read_text())

        self.easla = EaslaServer(attributes=None)
        self.easla.start()
        self.stack.callback(self.easla.stop)
        now_local = dt.datetime.now(MSK).replace(tzinfo=None, microsecond=0)
        start = (now_local - dt.timedelta(hours=4, minutes=20)).strftime("%Y-%m-%d %H:%M")
        source = {"timezone": "Europe/Moscow", "settle": "60s", "lookback": "5h", "start": start}
        retry = {"max_attempts": 3, "backoff": "1s", "max_backoff": "2s"}
        self.easla_site = Site(
            "easla", self.root / "easla", self.cdr_url, source=source, retry=retry,
            recordings={"after_upload": "delete"},
            target={"kind": "easla", "easla": {
                "url": self.easla.url, "login": "poller", "password": "secret", "timeout": "1s",
                "attributes": EASLA_ATTRIBUTES}})
        archive_dir = self.root / "archive" / "archive"
        if self.mountable:
            self.mounts.tmpfs(archive_dir, "48m")
            self.tally.detail["disk_full"] = "a 48 MB tmpfs filled up (real ENOSPC)"
        else:
            self.tally.detail["disk_full"] = "simulated ENOSPC (no mount here)"
        self.archive_site = Site(
            "archive", self.root / "archive", self.cdr_url, source=source, retry=retry,
            target={"kind": "archive", "archive": {"dir": str(archive_dir)}},
            callers={"csv": str(self._directory(self.root / "archive")), "country": "RU",
                     "refresh": "1s"})
        self.receiver = WebhookReceiver()
        self.receiver.start()
        self.stack.callback(self.receiver.stop)
        self.webhook_site = Site(
            "webhook", self.root / "webhook", self.cdr_url, source=source, retry=retry,
            target={"kind": "webhook", "webhook": {
                "url": self.receiver.url, "secret": self.receiver.secret, "timeout": "1s"}})
        # a standby pair: two hosts, one config, the MariaDB ledger beside the cdr table and an
        # easla of their own (design §13)
        self.standby_easla = EaslaServer(attributes=None)
        self.standby_easla.start()
        self.stack.callback(self.standby_easla.stop)
        standby_monitor = self.root / "standby" / "monitor"
        standby_monitor.mkdir(parents=True)
        self.standby = Standby(self.root / "standby", self.cdr_url + "?charset=utf8mb4",
                               self.cdr_url, self.standby_easla, standby_monitor, start)
        self.stack.callback(self.standby.engine.dispose)
        self.tally.detail["standby"] = ("cron runs together, or the lock's holder killed "
                                        "mid-batch; a MariaDB ledger")
        self.workload = Workload(self.sample_rows, self.rng,
                                 {"easla": self.easla_site.monitor,
                                  "archive": self.archive_site.monitor,
                                  "webhook": self.webhook_site.monitor,
                                  "standby": standby_monitor}, now_local,
                                 self.plan.calls)
        self.workload.databases.append(self.engine)
        self.private: PrivateMariaDB | None = None
        self.locker: Locker | None = None
        self.victims: list[Any] = []
        self.orphans: set[int] = set()  # objects whose window was counted
        self.unconfirmed_files: dict[int, int] = {}

    def _directory(self, folder: Path) -> Path:
        """A caller directory knowing the sample callers (numbers with digits)."""
        folder.mkdir(parents=True, exist_ok=True)
        numbers = sorted({row["src"] for row in self.sample_rows
                          if sum(char.isdigit() for char in row["src"]) >= 10})
        path = folder / "callers.csv"
        path.write_text("number,name\n" + "".join(f"{number},Caller {n}\n"
                                                  for n, number in enumerate(numbers, 1)),
                        encoding="utf-8")
        return path

    def _drop_database(self, admin: sa.engine.Engine) -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{self.database}`"))
        admin.dispose()

    # -- the rounds

    def run(self) -> None:
        kinds = [kind for kind, count in self.plan.faults.items() for _ in range(count)]
        self.rng.shuffle(kinds)
        per_round = max(1, self.plan.calls // (len(kinds) + 2))
        self.workload.arrive(per_round * 2, recorded=True)
        self._run_easla(first=True)
        retries = len(kinds)  # a fault that found nothing to hit is tried again, boundedly
        number = 0
        while kinds:
            kind = kinds.pop(0)
            number += 1
            self.workload.arrive(per_round, recorded=kind in KILLS)
            self.say(f"round {number}: {kind}")
            missed = self.tally.missed[kind]
            getattr(self, f"_{kind}")()
            if kind not in KILLS:
                self._after_kill(None)
            if self.tally.missed[kind] > missed and retries > 0:
                retries -= 1
                kinds.insert(self.rng.randrange(len(kinds) + 1), kind)
            if kind != "disk_full" and number % 3 == 0:
                self._run_archive()
            if kind not in WEBHOOK_FAULTS and number % 2 == 0:
                self._run_webhook()
        while self.workload.left:
            self.workload.arrive(per_round)
            self._run_easla()
        self._heal_and_finish()

    def _heal_and_finish(self) -> None:
        """Every fault undone; parked calls noted and requeued (an operator's `poller retry
        --all`); then one clean run per site, which must deliver everything."""
        self.easla.clear_failures()
        self.easla.hook = None
        self.easla_site.configure(self.cdr_url)
        self.receiver.clear_failures()
        self.receiver.hook = None
        time.sleep(2.5)  # every back-off (max_backoff = 2s) and Retry-After (1s) has passed
        self.standby.settle()
        self.tally.standby, broken = self.standby.audit(
            {call.key for call in self.workload.incoming_calls})
        self.tally.problems += broken
        for site in (self.easla_site, self.archive_site, self.webhook_site):
            self.tally.parked[site.name] = site.requeue_parked()
            outcome = self._count(site, site.run())
            if outcome.exit_code != 0:
                self.tally.problems.append(
                    f"{site.name}: the clean run after the faults exited {outcome.exit_code}"
                    f" ({outcome.raised or (outcome.report and outcome.report.summary())})")

    def _count(self, site: Site, outcome: Outcome) -> Outcome:
        self.tally.runs += 1
        if outcome.raised:
            self.tally.runs_raised.append(f"{site.name}: {outcome.raised}")
        return outcome

    def _run_easla(self, first: bool = False) -> Outcome:
        return self._count(self.easla_site, self.easla_site.run())

    def _run_archive(self) -> Outcome:
        return self._count(self.archive_site, self.archive_site.run())

    def _run_webhook(self) -> Outcome:
        return self._count(self.webhook_site, self.webhook_site.run())

    # -- webhook faults: a switch of the receiver, one in-process run

    def _webhook_switched(self, kind: str, charged: bool, **options: Any) -> None:
        receiver = self.receiver
        before = len(receiver.seen.switched)
        receiver.fail_next(kind.removeprefix("webhook_"), **options)
        self._run_webhook()
        receiver.clear_failures()
        taken = receiver.seen.switched[before:]
        self._note(kind, bool(taken))
        for _, webhook_id in taken:
            key = self._webhook_key(webhook_id)
            if key is not None and charged:
                # the request was cut while the receiver answered otherwise: the call's
                self.tally.own_failures.setdefault("webhook", set()).add(key)

    def _webhook_key(self, webhook_id: str) -> str | None:
        """The call a message was about, by the id the receiver saw (None: not stored, or not
        a call); a reset comes before the body, so its call is found by its id."""
        from poller.targets.webhook.signing import message_id

        for key in self.workload.calls:
            if message_id("call.received", key) == webhook_id:
                return key
        return None

    def _webhook_http500(self) -> None:
        self._webhook_switched("webhook_http500", charged=False)

    def _webhook_http429(self) -> None:
        self._webhook_switched("webhook_http429", charged=False, retry_after="1")

    def _webhook_reset(self) -> None:
        self._webhook_switched("webhook_reset", charged=True)

    def _webhook_lost_reply(self) -> None:
        self._webhook_switched("webhook_lost_reply", charged=True, event="call.received")

    def _webhook_slow(self) -> None:
        self._webhook_switched("webhook_slow", charged=True, event="call.received", delay=1.5)

    def _webhook_http400(self) -> None:
        """The receiver refuses one call it does not hold yet, for one run (charged to it)."""
        delivered = self.receiver.calls()
        pending = sorted(key for key, call in self.workload.calls.items()
                         if call.incoming and key not in delivered)
        if not pending:
            self.tally.missed["webhook_http400"] += 1
            return
        key = self.rng.choice(pending)
        before = len(self.receiver.seen.switched)
        self.receiver.refuse(key)
        self._run_webhook()
        self.receiver.clear_failures()
        self.tally.own_failures.setdefault("webhook", set()).add(key)
        self._note("webhook_http400", bool(self.receiver.seen.switched[before:]))

    def _kill_after_webhook(self) -> None:
        """`poller run` SIGKILLed as soon as the receiver stored a call (its 2xx on its way):
        the next run sends the same message again, under the same webhook-id."""
        fired = threading.Event()
        victims: list[Any] = []

        def hook(moment: str, message: Message) -> None:
            if message.type == "call.received" and not fired.is_set() and victims:
                fired.set()
                _kill_now(victims[-1])
                self.tally.webhook_windows[message.payload["call"]["key"]] += 1
                self.tally.window_causes["SIGKILL after the receiver stored a call"] += 1

        self.receiver.hook = hook
        try:
            self._count(self.webhook_site, self.webhook_site.run_cli(victim=victims))
        finally:
            self.receiver.hook = None
        self._note("kill_after_webhook", fired.is_set())

    # -- SOAP faults: a switch of the test server, one in-process run

    def _switched(self, kind: str, operations: tuple[str, ...], **options: Any) -> None:
        operation = self.rng.choice(operations)
        before = len(self.easla.switched)
        self.easla.fail_next(operation, kind.removeprefix("soap_"), **options)
        self._run_easla()
        self.easla.clear_failures()
        taken = self.easla.switched[before:]
        if not taken:
            self.tally.missed[kind] += 1
            return
        self.tally.injected[kind] += 1
        for op, switch_kind, args in taken:
            key = self._key_of_request(op, args)
            charged = switch_kind in ("timeout", "reset", "lost_reply") or (
                switch_kind == "fault" and options.get("text") == OWN_FAULT)
            if key is not None and charged:
                self.tally.own_failures.setdefault("easla", set()).add(key)
            if switch_kind == "lost_reply" and key is not None:
                windows = (self.tally.object_windows if op == "createObjectref"
                           else self.tally.file_windows)
                windows[key] += 1
                self.tally.window_causes[f"lost reply to {op}"] += 1

    def _key_of_request(self, operation: str, args: dict[str, Any]) -> str | None:
        if operation == "createObjectref":
            for name, values in args.get("attributes", []):
                if name == "incoming_call_key":
                    return str(values[0])
        if operation == "addFile":
            with self.easla._lock:
                found = self.easla.objects.get(args.get("objectref"))
            if found is not None:
                return str(found["attributes"]["incoming_call_key"][0])
        return None

    def _soap_http500(self) -> None:
        self._switched("soap_http500", ("login", "getProcess", "createObjectref", "addFile"))

    def _soap_timeout(self) -> None:
        self._switched("soap_timeout", ("getProcess", "createObjectref", "addFile"), delay=1.5)

    def _soap_reset(self) -> None:
        self._switched("soap_reset", ("login", "createObjectref", "addFile"))

    def _soap_fault(self) -> None:
        own = self.rng.random() < 0.5
        self._switched("soap_fault", ("createObjectref", "addFile"),
                       text=OWN_FAULT if own else None)

    def _standby(self) -> None:
        """Both hosts' cron runs at once (one may be SIGKILLed), or the lock's holder killed
        mid-batch and the other started: the other must take over at once."""
        takeovers = self.standby.takeovers
        if self.rng.random() < 0.5:
            self.standby.failover(self.rng)
            self._note("standby", self.standby.takeovers > takeovers)
        else:
            kills = len(self.standby.kills)
            self.standby.together(self.rng)
            self._note("standby", len(self.standby.kills) > kills)

    def _lost_reply(self) -> None:
        self._switched("lost_reply", ("createObjectref", "addFile"))

    def _session_expiry(self) -> None:
        fired = threading.Event()

        def hook(moment: str, operation: str) -> None:
            if moment == "answered" and operation == "createObjectref" and not fired.is_set():
                fired.set()
                self.easla.expire_sessions()

        self._with_hook(hook, self._run_easla)
        self._note("session_expiry", fired.is_set())

    # -- kills: `poller run` in a process group of its own, SIGKILLed at the point named

    def _kill_after_create(self) -> None:
        fired = threading.Event()

        def hook(moment: str, operation: str) -> None:
            if moment == "answered" and operation == "createObjectref" and not fired.is_set():
                fired.set()
                with self.easla._lock:
                    made = self.easla.objects[max(self.easla.objects)]
                _kill_now(self.victims[-1])
                self.tally.kill_after_create_keys.append(
                    str(made["attributes"]["incoming_call_key"][0]))

        self._with_hook(hook, lambda: self._count(
            self.easla_site, self.easla_site.run_cli(victim=self.victims)))
        self._note("kill_after_create", fired.is_set())
        self._after_kill("SIGKILL after createObjectref answered")

    def _kill_upload(self) -> None:
        fired = threading.Event()

        def hook(moment: str, operation: str) -> None:
            if moment == "request" and operation == "addFile" and not fired.is_set():
                fired.set()
                _kill_now(self.victims[-1])

        self._with_hook(hook, lambda: self._count(
            self.easla_site, self.easla_site.run_cli(victim=self.victims)))
        self._note("kill_upload", fired.is_set())
        self._after_kill("SIGKILL during addFile")

    def _after_kill(self, cause: str | None) -> None:
        """Count the windows a kill left: objects and files easla holds that neither the
        ledger nor the journal recorded (the next run makes them again). Without a cause
        (after the other faults, whose windows are counted as they are made) only notes
        them as known."""
        deadline = time.monotonic() + 15
        while self.easla._handlers and time.monotonic() < deadline:
            time.sleep(0.02)  # the killed client's requests: read to the end or cut
        entries = self.easla_site.entries()
        journaled = _journal(self.easla_site.state / "journal")
        with self.easla._lock:
            objects = {oid: (obj["attributes"]["incoming_call_key"][0], len(obj["files"]))
                       for oid, obj in self.easla.objects.items()}
        for oid, (key, files) in objects.items():
            entry = entries.get(key)
            recorded = {entry.object_id if entry else None, journaled.get(key, {}).get("object_id")}
            if str(oid) not in recorded and oid not in self.orphans:
                self.orphans.add(oid)
                if cause is not None:
                    self.tally.object_windows[key] += 1
                    self.tally.window_causes[f"{cause}: object not recorded"] += 1
            confirmed = entry is not None and entry.stage in ("attached", "done")
            if files and not confirmed and files > self.unconfirmed_files.get(oid, 0):
                if cause is not None:
                    self.tally.file_windows[key] += files - self.unconfirmed_files.get(oid, 0)
                    self.tally.window_causes[f"{cause}: file not recorded"] += 1
                self.unconfirmed_files[oid] = files

    def _kill_transcoding(self) -> None:
        seen: list[int] = []

        def watch(process: Any) -> None:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                encoders = [pid for pid in children(process.pid)
                            if "poller.recordings.encoder" in command_line(pid)]
                if encoders:
                    seen.extend(encoders)
                    kill_group(process)
                    for pid in encoders:  # a session of its own: as a service stop would
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    return
                time.sleep(0.005)

        self._count(self.easla_site, self.easla_site.run_cli(watch=watch))
        self._note("kill_transcoding", bool(seen))
        self._after_kill("SIGKILL while transcoding")

    def _kill_reading(self) -> None:
        """The cdr table locked by another session: the poller's read waits on it; it is
        killed there, then the table unlocked."""
        hit = self._while_read_blocked(self.engine, self.database, lambda: self.easla_site.spawn(),
                                       kill_group)
        self._note("kill_reading", hit)
        self._after_kill("SIGKILL while reading")

    @contextlib.contextmanager
    def _table_locked(self, engine: sa.engine.Engine) -> Iterator[None]:
        with engine.connect() as conn:
            conn.exec_driver_sql("LOCK TABLES cdr WRITE")
            try:
                yield
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.exec_driver_sql("UNLOCK TABLES")

    def _while_read_blocked(self, engine: sa.engine.Engine, database: str,
                            start: Callable[[], Any], stop: Callable[[Any], None]) -> bool:
        """Start a run with the cdr table locked; once its read waits on the lock, `stop` it."""
        hit = False
        with self._table_locked(engine):
            running = start()
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and _alive(running):
                    if _waiting_reader(engine, database):
                        stop(running)
                        hit = True
                        break
                    time.sleep(0.02)
            finally:
                if not hit:
                    stop(running)
        self._finish_started(running)
        return hit

    def _finish_started(self, running: Any) -> None:
        if isinstance(running, threading.Thread):
            running.join(timeout=120)
        else:
            kill_group(running)
        self.tally.runs += 1

    # -- outages

    def _target_down(self) -> None:
        """easla unreachable for many runs in a row: nobody is charged, every run exits 1."""
        closed = f"http://127.0.0.1:{free_port()}/user/soap"
        self.easla_site.configure(target={"easla": {"url": closed}})
        attempts = self._attempts(self.easla_site)
        bad = 0
        for number in range(self.plan.outage_runs):
            # a run with nothing to deliver does not ask the target: a call arrives at the
            # outage's start (and more during it) so that every run meets the closed port
            if number % 25 == 0:
                self.workload.arrive(1)
            outcome = self._count(self.easla_site, self.easla_site.run())
            report = outcome.report
            if report is None or outcome.exit_code != 1 or not report.unavailable or \
                    report.failures or report.parked:
                bad += 1
        self.tally.attempts_by_outage += self._attempts(self.easla_site) - attempts
        if bad:
            self.tally.problems.append(f"target down: {bad} of {self.plan.outage_runs} outage "
                                       "runs did not stop with exit 1 charging nobody")
        self.easla_site.configure(target={"easla": {"url": self.easla.url}})
        self.tally.injected["target_down"] += 1
        self.tally.detail["target_down"] = f"{self.plan.outage_runs} runs in a row"
        self._run_easla()

    @staticmethod
    def _attempts(site: Site) -> int:
        return sum(entry.attempts for entry in site.entries().values())

    def _mariadb_stop(self) -> None:
        """A private mariadbd holding a copy of the cdr table: the easla site reads from it,
        it is SIGKILLed while a run's read waits on it, one run goes while it is down, then
        it is started again and the site goes back to the shared server."""
        if not PrivateMariaDB.available():
            self.tally.missed["mariadb_stop"] += 1
            self.tally.detail["mariadb_stop"] = "not run: no mariadbd here"
            return
        if self.private is None:
            self.private = PrivateMariaDB(self.root / "mariadb")
            self.stack.callback(self.private.stop)
            self.private.install()
            private_engine = self.private.engine()
            self.stack.callback(private_engine.dispose)
            self.workload.copy_into(private_engine, self.engine)
            self.private_engine = private_engine
        self.easla_site.configure(self.private.url)
        self._run_easla()
        outcomes: list[Outcome] = []

        def start() -> threading.Thread:
            thread = threading.Thread(target=lambda: outcomes.append(self.easla_site.run()))
            thread.start()
            return thread

        assert self.private is not None
        private = self.private
        hit = self._while_read_blocked(self.private_engine, "asteriskcdrdb", start,
                                       lambda thread: private.kill())
        down = self._count(self.easla_site, self.easla_site.run())
        if outcomes and outcomes[0].raised:
            self.tally.runs_raised.append(f"easla (MariaDB killed mid-read): {outcomes[0].raised}")
        if down.exit_code != 1 or down.report is None or not down.report.unavailable:
            self.tally.problems.append(f"a run with the cdr database down exited "
                                       f"{down.exit_code}: {down.raised or ''}")
        private.start()
        self._run_easla()
        self.easla_site.configure(self.cdr_url)
        self._note("mariadb_stop", hit)
        self.tally.detail["mariadb_stop"] = "a private mariadbd on its own port and datadir"

    def _state_locked(self) -> None:
        """Another process holds the SQLite ledger (BEGIN EXCLUSIVE) from just before easla
        creates an object until a while after: the run must not lose that object's id."""
        seconds = self.plan.lock_seconds[self.tally.injected["state_locked"]
                                         % len(self.plan.lock_seconds)]
        if self.locker is None:
            self.locker = Locker(self.easla_site.state / "state.db")
            self.stack.callback(self.locker.close)
        locker = self.locker
        taken = threading.Event()

        def hook(moment: str, operation: str) -> None:
            if moment == "request" and operation == "createObjectref" and not taken.is_set():
                if locker.hold(seconds):
                    taken.set()

        self._with_hook(hook, self._run_easla)
        if taken.is_set():
            locker.wait_released()
        self._note("state_locked", taken.is_set())
        held = ", ".join(f"{s:g}" for s in self.plan.lock_seconds)
        self.tally.detail["state_locked"] = f"held {held} s by another process"

    def _state_readonly(self) -> None:
        """state.dir turns read-only just before easla creates an object (a read-only bind
        mount: files already open stay writable, as after a remount); back after the run."""
        turned = threading.Event()
        state = self.easla_site.state

        if self.mountable:
            self.tally.detail["state_readonly"] = "read-only bind mount (real EROFS)"

            def hook(moment: str, operation: str) -> None:
                if moment == "request" and operation == "createObjectref" and \
                        not turned.is_set():
                    turned.set()
                    self.mounts.read_only(state)

            try:
                self._with_hook(hook, self._run_easla)
            finally:
                self.mounts.undo(state)
        else:
            self.tally.detail["state_readonly"] = "simulated EROFS (no mount here)"
            with _simulated_erofs(turned):
                self._run_easla()
        self._note("state_readonly", turned.is_set())

    def _disk_full(self) -> None:
        """The archive's disk fills up for three runs in a row, then space comes back."""
        site = self.archive_site
        attempts = self._attempts(site)
        with self._full_disk(site.archive):
            for _ in range(3):
                self._run_archive()
        self.tally.attempts_by_local += self._attempts(site) - attempts
        self.tally.injected["disk_full"] += 1
        self._run_archive()

    def _journal_damaged(self) -> None:
        """Garbage, `[1, 2, 3]` and a torn last line (a kill or a full disk mid-append) in the
        archive site's journal: the next run sets them aside and delivers."""
        site = self.archive_site
        site.state.mkdir(parents=True, exist_ok=True)
        aside = site.state / "journal.bad"
        before = aside.stat().st_size if aside.exists() else 0
        attempts = self._attempts(site)
        with open(site.state / "journal", "ab") as journal:
            journal.write(b"\x00\x17 damaged \xff\xfe\n[1, 2, 3]\n"
                          b'{"key": "1795675107.0", "stage": "crea')
        outcome = self._run_archive()
        self.tally.attempts_by_local += self._attempts(site) - attempts
        if outcome.stopped:
            self.tally.problems.append(f"a damaged journal stopped a run: {outcome.stopped}")
        self._note("journal_damaged", aside.exists() and aside.stat().st_size > before)
        self.tally.detail["journal_damaged"] = "garbage, [1,2,3], a torn line; set aside"

    def _directory_damaged(self) -> None:
        """The directory's CSV gone (an NFS mount lost) and its copy in state.dir damaged, for
        two runs: calls go on without caller fields, exit 1, never 2; then it comes back."""
        site = self.archive_site
        directory = site.folder / "callers.csv"
        away = directory.with_name("callers.csv.away")
        attempts = self._attempts(site)
        directory.rename(away)
        try:
            (site.state / "callers.json").write_text("{damaged", encoding="utf-8")
            outcomes = [self._run_archive() for _ in range(2)]
        finally:
            away.rename(directory)
        said = [text for outcome in outcomes if outcome.report
                for text in outcome.report.unavailable if "cannot read the directory" in text]
        for outcome in outcomes:
            if outcome.stopped:
                self.tally.problems.append(f"the directory's outage stopped a run "
                                           f"(exit {outcome.exit_code}): {outcome.stopped}")
        time.sleep(1.1)  # callers.refresh: tried again
        back = self._run_archive()
        if back.report and any("cannot read the directory" in text
                               for text in back.report.unavailable):
            self.tally.problems.append("the directory was not read again once it was back")
        self.tally.attempts_by_local += self._attempts(site) - attempts
        self._note("directory_damaged", bool(said))
        self.tally.detail["directory_damaged"] = "CSV moved away, callers.json garbage, 2 runs"

    def _eacces(self) -> None:
        """The archive site's files are the service user's, as on a PBX; a root run left one
        folder root's — tmp/ or the day folder the calls go to — and a run as the service
        user meets EACCES: it stops, exit 1, charging nobody; given back, the next run
        delivers."""
        if not can_act_as_service_user():
            self.tally.missed["eacces"] += 1
            self.tally.detail["eacces"] = "not run: needs root to act as another user"
            return
        site = self.archive_site
        self._run_archive()  # as root before: what it leaves is then given to the user
        self.workload.arrive(2, recorded=True)  # calls for the service user's run
        give_to_service_user(site.state, site.archive)
        if self.tally.injected["eacces"] % 2 == 0:
            stuck = [site.state / "tmp"]
        else:
            now = dt.datetime.now(MSK)
            days = {(now - dt.timedelta(hours=hours)).strftime("%Y/%m/%d") for hours in (0, 4)}
            stuck = [site.archive / day for day in sorted(days)]
        for folder in stuck:
            folder.mkdir(parents=True, exist_ok=True)
        give_to_service_user(site.state, site.archive)
        for folder in stuck:
            os.chown(folder, 0, 0)
        attempts = self._attempts(site)
        try:
            outcome = self._count(site, as_service_user(site.run))
        finally:
            give_to_service_user(*stuck)
        self.tally.attempts_by_local += self._attempts(site) - attempts
        denied = bool(outcome.report) and any(
            "permission denied" in text.lower() for text in outcome.report.unavailable)
        if outcome.stopped and outcome.exit_code != 1:
            self.tally.problems.append(f"EACCES stopped a run with exit {outcome.exit_code}: "
                                       f"{outcome.stopped}")
        self._note("eacces", denied and outcome.exit_code == 1)
        self.tally.detail["eacces"] = "tmp/ or the day folders root's; file access as nobody"
        self._run_archive()

    @contextlib.contextmanager
    def _full_disk(self, folder: Path) -> Iterator[None]:
        if not self.mountable:
            with _simulated_enospc():
                yield
            return
        filler = folder / ".filler"
        try:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for size in (1 << 20, 4096, 512):  # till not even 512 bytes are left
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(fd, b"\0" * size)
            finally:
                os.close(fd)
            yield
        finally:
            filler.unlink(missing_ok=True)

    # -- helpers

    def _with_hook(self, hook: Callable[[str, str], None], run: Callable[[], Any]) -> None:
        self.easla.hook = hook
        try:
            run()
        finally:
            self.easla.hook = None

    def _note(self, kind: str, hit: bool) -> None:
        if hit:
            self.tally.injected[kind] += 1
        else:
            self.tally.missed[kind] += 1


def _journal(path: Path) -> dict[str, dict[str, Any]]:
    """The values of the steps a journal holds, by call key."""
    steps: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                step = json.loads(line)  # a damaged line holds no step (the run sets it aside)
                steps.setdefault(step["key"], {}).update(step["values"])
    return steps


def _kill_now(process: Any) -> None:
    """SIGKILL to the poller's process group, from the server's thread: no waiting there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _alive(running: Any) -> bool:
    if isinstance(running, threading.Thread):
        return running.is_alive()
    return bool(running.poll() is None)


def _waiting_reader(engine: sa.engine.Engine, database: str) -> bool:
    """Whether a session other than ours waits on the cdr table's lock in `database`."""
    with engine.connect() as conn:
        found = conn.execute(sa.text(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE db = :db "
            "AND id <> CONNECTION_ID() AND command = 'Query' AND state LIKE '%lock%'"),
            {"db": database}).scalar()
    return bool(found)


@contextlib.contextmanager
def _simulated_erofs(turned: threading.Event) -> Iterator[None]:
    """Where nothing may be mounted: every ledger write after the first object fails as
    SQLite fails on a read-only folder."""
    import sqlite3

    from poller.ledger.store import Ledger

    real = Ledger.advance

    def refusing(self: Any, key: str, stage: Any, **values: Any) -> None:
        if stage == "created":
            turned.set()
        if turned.is_set():
            raise sa.exc.OperationalError("UPDATE poller_calls", {}, sqlite3.OperationalError(
                "attempt to write a readonly database"))
        real(self, key, stage, **values)

    Ledger.advance = refusing  # type: ignore[method-assign]
    try:
        yield
    finally:
        Ledger.advance = real  # type: ignore[method-assign]


@contextlib.contextmanager
def _simulated_enospc() -> Iterator[None]:
    """Where no small tmpfs may be mounted: every archive write fails as on a full disk."""
    import errno

    from poller.targets.archive import files, target

    real = files.atomic_write

    def full(path: Path, write: Any) -> None:
        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        raise files.write_error(f"archive: cannot write {path}: {error}", error)

    # the target's own writes and the pages' (through files.write_atomically)
    files.atomic_write = target.atomic_write = full  # type: ignore[assignment]
    try:
        yield
    finally:
        files.atomic_write = target.atomic_write = real  # type: ignore[assignment]
