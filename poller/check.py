"""`poller check`: is everything the poller touches usable, each on its own line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import PollerError

OK, WARN, FAIL = "ok", "warn", "FAIL"
_WRITE_PRIVILEGES = re.compile(r"\b(ALL PRIVILEGES|INSERT|UPDATE|DELETE|DROP|ALTER)\b", re.I)


@dataclass(frozen=True)
class Result:
    name: str
    outcome: str  # ok | warn | FAIL
    detail: str


def run_checks(config: Config) -> list[Result]:
    """Every check, in order; none of them writes to the cdr table or delivers anything."""
    results = [Result("config", OK, "valid")]
    for name, check in CHECKS:
        try:
            results.extend(check(config))
        except PollerError as exc:
            results.append(Result(name, FAIL, str(exc)))
        except Exception as exc:  # a check must report, not crash the others
            results.append(Result(name, FAIL, f"{type(exc).__name__}: {exc}"))
    return results


def _source(config: Config) -> Iterator[Result]:
    from .recordings import template_fields
    from .source import CdrSource

    source = CdrSource(config.source, needed=template_fields(config.recordings.name))
    try:
        newest = source.newest_calldate()
        yield Result("source", OK, f"table {config.source.table!r} readable, "
                     f"newest row {newest.isoformat(sep=' ') if newest else 'none (empty)'}")
        for warning in source.warnings:
            yield Result("source columns", WARN, warning)
        yield _grants(source)
    finally:
        source.close()


def _grants(source: object) -> Result:
    """The poller's user should only read: look at its grants, never try a write."""
    engine = source.engine  # type: ignore[attr-defined]
    if engine.dialect.name != "mysql":
        return Result("source grants", OK, f"{engine.dialect.name}: no grants to inspect")
    database = engine.url.database or ""
    table = source.config.table  # type: ignore[attr-defined]
    with engine.connect() as conn:
        grants = [row[0] for row in conn.exec_driver_sql("SHOW GRANTS FOR CURRENT_USER()")]
    # only the privilege part (never the IDENTIFIED BY … hash), and only grants that reach the
    # cdr table: on *.*, on its database, or on the table itself
    scopes = {"*.*", f"`{database}`.*", f"`{database}`.`{table}`"}
    writable = []
    for grant in grants:
        privileges, _, rest = grant.partition(" ON ")
        scope = rest.split(" TO ")[0].strip()
        if scope in scopes and _WRITE_PRIVILEGES.search(privileges):
            writable.append(f"{privileges.removeprefix('GRANT ')} ON {scope}")
    if writable:
        return Result("source grants", WARN, "the user may write to the cdr table (recommended: "
                      f"SELECT only, see sql/grant-readonly.sql): {writable[0][:120]}")
    return Result("source grants", OK, "read-only on the cdr table")


def _writable_folder(folder: Path) -> str:
    """How `folder` is writable, found without creating anything that stays (a check run as
    root must not leave root-owned folders or databases the poller's user cannot write)."""
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PollerError(f"{folder} does not exist and {parent} is not writable: create it "
                              "for the poller's user")
        return f"{folder} will be made by the first run"
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-"):
        pass
    return f"{folder} writable"


def _state(config: Config) -> Iterator[Result]:
    from .ledger import Ledger

    yield Result("state.dir", OK, _writable_folder(Path(config.state.dir)))
    ledger = Ledger.open_existing(config.state.database_url)
    if ledger is None:
        yield Result("state database", OK, "no ledger yet: the first run makes it")
        return
    try:
        mark = ledger.watermark()
        counts = ledger.counts()
    finally:
        ledger.close()
    shown = mark.isoformat(sep=" ") if mark else "none yet"
    yield Result("state database", OK, f"watermark {shown}, {sum(counts.values())} calls known")


def _target(config: Config) -> Iterator[Result]:
    if config.target.kind == "archive":
        yield Result("target", OK, "archive " + _writable_folder(Path(config.target.archive.dir)))
        return
    from .targets.easla import EaslaTarget

    target = EaslaTarget(config.target.easla, None)  # no WSDL cache: check makes nothing
    try:
        yield Result("target", OK, f"easla at {config.target.easla.url}: logged in, process "
                     f"{target.process}, object definition {target.objectdef}")
    finally:
        target.close()


def _encoder(config: Config) -> Iterator[Result]:
    out = subprocess.run([sys.executable, "-c", "import lameenc, poller.encoder"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        yield Result("encoder", FAIL, out.stderr.strip().splitlines()[-1])
    else:
        yield Result("encoder", OK, "in-process LAME (lameenc) for PCM, A-law and mu-law WAV")
    ffmpeg = shutil.which(config.transcode.ffmpeg)
    if ffmpeg:
        yield Result("ffmpeg", OK, ffmpeg)
    else:
        yield Result("ffmpeg", WARN, f"{config.transcode.ffmpeg!r} not found: needed only for "
                     "GSM (wav49) and other non-PCM recordings")


def _recordings(config: Config) -> Iterator[Result]:
    folder = Path(config.recordings.dir)
    if not folder.is_dir():
        yield Result("recordings", FAIL, f"{folder} is not a directory")
    elif not os.access(folder, os.R_OK | os.X_OK):
        yield Result("recordings", FAIL, f"{folder} is not readable by this user "
                     "(add it to the asterisk group)")
    elif config.recordings.after_upload == "delete" and not os.access(folder, os.W_OK):
        yield Result("recordings", FAIL, f"{folder} is not writable by this user, and "
                     "recordings.after_upload = \"delete\" needs it (a ReadWritePaths= line in "
                     "the systemd unit)")
    else:
        yield Result("recordings", OK, f"{folder} readable")


def _callers(config: Config) -> Iterator[Result]:
    """The directory read once, as a run reads it (nothing kept: no copy in state.dir)."""
    if not config.callers.enabled:
        return
    from .directory import describe, verify

    count = verify(config.callers)
    per_run = " (asked per run with :numbers)" if "numbers" in config.callers.query else ""
    yield Result("callers", OK if count else WARN,
                 f"{describe(config.callers)}: {count} subscribers{per_run}")


CHECKS: list[tuple[str, Callable[[Config], Iterator[Result]]]] = [
    ("source", _source), ("state", _state), ("target", _target), ("encoder", _encoder),
    ("recordings", _recordings), ("callers", _callers),
]
