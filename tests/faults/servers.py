"""What the suite starts, stops and mounts, each cleaned up on every path: a private MariaDB
server (never the machine's own), a size-limited tmpfs, a read-only bind mount, a process
holding the SQLite ledger locked."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

CDR_SCHEMA = Path(__file__).resolve().parents[2] / "sql" / "cdr-freepbx.sql"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateMariaDB:
    """A mariadbd of the suite's own: its data directory, socket and a free port under `root`,
    so that stopping it mid-run touches nothing else on the machine."""

    def __init__(self, root: Path):
        self.root = root
        self.datadir = root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/asteriskcdrdb"
        atexit.register(self.stop)

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mariadb-install-db")) and bool(
            shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists())

    def install(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}",
                        "--auth-root-authentication-method=normal", "--skip-test-db",
                        "--user=root"], check=True, capture_output=True, timeout=120)
        self.start()
        admin = sa.create_engine(self.url.rsplit("/", 1)[0], poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text("CREATE DATABASE asteriskcdrdb CHARACTER SET utf8mb4"))
        admin.dispose()
        engine = self.engine()
        with engine.begin() as conn:
            conn.exec_driver_sql(CDR_SCHEMA.read_text())
        engine.dispose()

    def engine(self) -> sa.engine.Engine:
        return sa.create_engine(self.url + "?charset=utf8mb4", poolclass=sa.pool.NullPool)

    def start(self) -> None:
        binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.process = subprocess.Popen(
            [binary, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.root / 'mariadbd.sock'}",
             f"--pid-file={self.root / 'mariadbd.pid'}", "--user=root", "--skip-log-bin",
             "--skip-name-resolve", "--innodb-buffer-pool-size=16M",
             f"--log-error={self.root / 'error.log'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the private mariadbd did not start: "
                                       + self._log_tail()) from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "error.log").read_text()[-2000:]
        return ""

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def can_mount() -> bool:
    """Whether this process may mount (root with CAP_SYS_ADMIN, not in a locked container)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/poller-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                              capture_output=True, timeout=30).returncode == 0
        if done:
            subprocess.run(["umount", str(probe)], capture_output=True, timeout=30)
        return done
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


class Mounts:
    """Mounts made by the suite, undone (last first) on every path."""

    def __init__(self) -> None:
        self.points: list[Path] = []
        atexit.register(self.undo_all)

    def tmpfs(self, point: Path, size: str) -> None:
        point.mkdir(parents=True, exist_ok=True)
        self._run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point))
        self.points.append(point)

    def read_only(self, point: Path) -> None:
        """`point` read-only from now on for every new open; files already open stay
        writable (a bind mount over the folder; the kernel checks the mount at open)."""
        self._run("mount", "--bind", str(point), str(point))
        self.points.append(point)
        self._run("mount", "-o", "remount,bind,ro", str(point))

    def undo(self, point: Path) -> None:
        if point in self.points:
            self.points.remove(point)
            self._run("umount", str(point))

    def undo_all(self) -> None:
        while self.points:
            point = self.points.pop()
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)

    @staticmethod
    def _run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=30)


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)
for line in sys.stdin:
    seconds = float(line)
    try:
        db.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError as exc:
        print("busy", exc, flush=True)
        continue
    print("locked", flush=True)
    time.sleep(seconds)
    db.execute("COMMIT")
    print("released", flush=True)
"""


class Locker:
    """Another process that takes the SQLite ledger with BEGIN EXCLUSIVE on demand."""

    def __init__(self, database: Path):
        self.process = subprocess.Popen([sys.executable, "-c", LOCKER, str(database)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        atexit.register(self.close)

    def hold(self, seconds: float) -> bool:
        """Lock now and keep it `seconds`; True once the lock is taken."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{seconds}\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().startswith("locked")

    def wait_released(self) -> None:
        assert self.process.stdout is not None
        self.process.stdout.readline()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
