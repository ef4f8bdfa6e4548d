"""What the suite starts, stops and mounts, each cleaned up on every path: a private MariaDB
server (never the machine's own), a size-limited tmpfs, a read-only bind mount, a process
holding the SQLite ledger locked, and a run whose files are touched as the service user."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from support import NOBODY, in_child

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


SERVICE_USER = NOBODY  # the poller's user on a PBX (`poller`); nobody here


def can_act_as_service_user() -> bool:
    """Whether this process may touch files as another user (root, on Linux)."""
    return os.geteuid() == 0 and sys.platform.startswith("linux")


def give_to_service_user(*tops: Path) -> None:
    """The folders' whole trees the service user's, as on a PBX where it made them."""
    for top in tops:
        for path in [top, *top.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, SERVICE_USER.pw_uid, SERVICE_USER.pw_gid, follow_symlinks=False)


def as_service_user(work: Callable[[], Any]) -> Any:
    """`work()` in a forked child whose every file access the kernel checks as the service
    user (setfsuid/setfsgid: root's file capabilities are dropped with them), so a folder
    left root's refuses it with a real EACCES. Its encoder child, exec'd, is root again: the
    interpreter lives where the service user may not read."""
    _import_everything()
    libc = ctypes.CDLL(None, use_errno=True)

    def become_service_user() -> None:
        libc.setfsgid(SERVICE_USER.pw_gid)
        libc.setfsuid(SERVICE_USER.pw_uid)
        if libc.setfsuid(-1) != SERVICE_USER.pw_uid:  # -1 changes nothing, says the current
            raise OSError("setfsuid did not take")
        _children_start_as_root(libc)

    return in_child(become_service_user, work)


def _children_start_as_root(libc: Any) -> None:
    """exec checks the program's path with the file user too: a child process (the encoder)
    takes root's file access back just before it is exec'd."""
    def root_again() -> None:
        libc.setfsuid(0)
        libc.setfsgid(0)

    class Popen(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("preexec_fn", root_again)
            super().__init__(*args, **kwargs)

    subprocess.Popen = Popen  # type: ignore[misc] - in the forked child only


def _import_everything() -> None:
    """What a run may import late, imported now: the service user may not read the
    interpreter's own files once the child has forked."""
    import codecs
    import importlib
    import pkgutil
    import select  # noqa: F401 - imported late by the command line's guard

    import poller

    codecs.lookup("utf-8-sig")  # the directory's CSV
    pwd.getpwuid(os.geteuid())
    for module in pkgutil.walk_packages(poller.__path__, "poller."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
