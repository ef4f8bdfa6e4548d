"""`poller check`: is everything the poller touches usable, each on its own line."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from poller.callers.directory import describe, verify
from poller.callers.incidents import describe as describe_rule
from poller.callers.incidents import rule_of
from poller.config.schema import Config
from poller.errors import PollerError
from poller.ledger.health import error_text, problems
from poller.ledger.store import Ledger
from poller.localfiles import user
from poller.recordings.files import RecordingDenied, unreadable_sample
from poller.run.owner import OWNER_FILE, conflict, owner_of
from poller.run.report import plural
from poller.source.kinds import open_source, reconcile_source
from poller.source.skew import rows_ahead
from poller.targets.easla.target import EaslaTarget
from poller.targets.webhook.replies import shown
from poller.targets.webhook.target import WebhookTarget
from poller.templates import recording_fields

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
        except OSError as exc:  # a folder or file this user may not touch
            where = f" {exc.filename}" if exc.filename else ""
            results.append(Result(name, FAIL, f"{exc.strerror or exc}{where} (as {user()})"))
        except Exception as exc:  # a check must report, not crash the others
            results.append(Result(name, FAIL, f"{type(exc).__name__}: {exc}"))
    return results


def _source(config: Config) -> Iterator[Result]:
    source = open_source(config.source, needed=recording_fields(config.recordings.name))
    try:
        newest = source.newest_calldate()
        yield Result("source", OK, f"{source.describe()}, newest "
                     f"{'call ' + newest.isoformat(sep=' ') if newest else 'none (empty)'}")
        rules = config.source.incoming
        # the did rule alone on a table without did: no call would ever be taken as incoming
        blind = not (rules.contexts or rules.channels)
        for warning in source.warnings:
            yield Result("source columns", FAIL if blind else WARN, warning)
        ahead = rows_ahead(newest, ZoneInfo(config.source.timezone), dt.datetime.now(dt.UTC))
        if ahead:  # no call is taken until those hours have passed: not a mere warning
            yield Result("source clock", FAIL, ahead)
        if config.source.kind == "table":
            yield _grants(source)
    finally:
        source.close()


def _reconcile(config: Config) -> Iterator[Result]:
    """Master.csv beside the table: readable, with a uniqueid; calls from it find their
    recordings without did or recordingfile (the config check refuses a name needing them)."""
    if not config.source.reconcile.enabled:
        return
    source = reconcile_source(config.source)
    try:
        newest = source.newest_calldate()
        yield Result("reconcile", OK, f"{source.describe()}, newest call "
                     f"{newest.isoformat(sep=' ') if newest else 'none'}; recordings.name "
                     f"{config.recordings.name!r} needs neither did nor recordingfile")
    finally:
        source.close()


def _grants(source: object) -> Result:
    """The poller's user should only read: look at its grants, never try a write."""
    engine = source.engine  # type: ignore[attr-defined]
    table = source.config.table  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        return _postgresql_grants(engine, table)
    if engine.dialect.name != "mysql":
        return Result("source grants", OK, f"{engine.dialect.name}: no grants to inspect")
    database = engine.url.database or ""
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


def _postgresql_grants(engine: Any, table: str) -> Result:
    """What the session's role may do to the table (its own grants, its roles', PUBLIC's)."""
    query = sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    with engine.connect() as conn:
        superuser = bool(conn.execute(query).scalar())
        writable = [privilege for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
                    if conn.execute(sa.text("SELECT has_table_privilege(:t, :p)"),
                                    {"t": table, "p": privilege}).scalar()]
    if superuser or writable:
        what = "is a superuser" if superuser else f"holds {', '.join(writable)}"
        return Result("source grants", WARN, f"the user {what} on the cdr table (recommended: "
                      "SELECT only, see sql/grant-readonly-postgresql.sql)")
    return Result("source grants", OK, "read-only on the cdr table")


def _writable_folder(folder: Path) -> str:
    """How `folder` is writable by this user, found by writing a file there and removing it;
    a folder not there yet is judged by its nearest existing parent. Nothing is left behind (a
    check run as root must not leave root-owned folders the poller's user cannot write)."""
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PollerError(f"{folder} does not exist and {parent} is not writable by "
                              f"{user()}: create it for the poller's user")
        return f"{folder} will be made by the first run"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-"):
            pass
    except OSError as exc:
        raise PollerError(f"{folder} is not writable by {user()} ({exc.strerror}): "
                          f"chown it to the poller's user") from None
    return f"{folder} writable"


def _writable_file(path: Path) -> None:
    """A file the runs rewrite in place must be writable by this user (opened, not changed)."""
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise PollerError(f"{path} is not writable by {user()} (owner {_owner(path)}): "
                          "chown it to the poller's user")


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _newest_days(root: Path) -> list[Path]:
    """The newest YYYY, YYYY/MM and YYYY/MM/DD folders under `root`: where the next files go."""
    found, folder = [], root
    for _ in range(3):
        children = sorted(p for p in folder.glob("[0-9]*") if p.is_dir()) \
            if folder.is_dir() else []
        if not children:
            break
        folder = children[-1]
        found.append(folder)
    return found


def _state(config: Config) -> Iterator[Result]:
    state_dir = Path(config.state.dir)
    detail = _writable_folder(state_dir)
    for name in ("tmp", "directory"):
        if (state_dir / name).is_dir():
            _writable_folder(state_dir / name)
    for name in ("poller.lock", "journal", "state.db", "state.db-wal", "state.db-shm",
                 OWNER_FILE):
        _writable_file(state_dir / name)
    shared = conflict(state_dir, owner_of(config.state.database_url, config.source.name))
    yield Result("state.dir", FAIL, shared) if shared else Result("state.dir", OK, detail)
    try:
        ledger = Ledger.open_existing(config.state.database_url, read_only=True,
                                       source=config.source.name)
    except (sa.exc.SQLAlchemyError, PollerError) as exc:  # no database, a newer one
        yield Result("state database", FAIL, f"cannot be read: {error_text(exc)}")
        return
    if ledger is None:
        yield Result("state database", OK, "no ledger yet: the first run makes it")
        return
    try:
        found = problems(ledger)
        if found:
            for problem in found:
                yield Result("state database", FAIL, problem)
            return
        mark = ledger.watermark()
        counts = ledger.counts()
    finally:
        ledger.close()
    _ledger_writable(config.state.database_url)
    shown = mark.isoformat(sep=" ") if mark else "none yet"
    yield Result("state database", OK, f"watermark {shown}, {sum(counts.values())} calls "
                 "known, writable")


def _ledger_writable(url: str) -> None:
    """Write to the ledger as the runs would, and roll it back."""
    ledger = Ledger(url, create=False)
    try:
        with ledger.engine.connect() as conn, conn.begin() as transaction:
            conn.exec_driver_sql("UPDATE poller_meta SET value = value "
                                 "WHERE name = 'schema_version'")
            transaction.rollback()
    except sa.exc.OperationalError as exc:
        database = sa.engine.make_url(url).database or ""
        owner = f" (owner {_owner(Path(database))})" if Path(database).is_file() else ""
        raise PollerError(f"the ledger is not writable by {user()}{owner}: "
                          f"{getattr(exc, 'orig', exc)}") from None
    finally:
        ledger.close()


def _journal(config: Config) -> Iterator[Result]:
    """Steps the target confirmed that a run could not read back: someone must look."""
    from poller.ledger.journal import problems

    for problem in problems(config.state.dir):
        yield Result("journal", FAIL, problem)


def _target(config: Config) -> Iterator[Result]:
    if config.target.kind == "archive":
        root = Path(config.target.archive.dir)
        detail = _writable_folder(root)
        for folder in _newest_days(root):
            _writable_folder(folder)
        yield Result("target", OK, "archive " + detail)
        return
    if config.target.kind == "webhook":
        yield _webhook(config)
        return

    target = EaslaTarget(config.target.easla, None)  # no WSDL cache: check makes nothing
    try:
        yield Result("target", OK, f"easla at {config.target.easla.url}: logged in, process "
                     f"{target.process}, object definition {target.objectdef}")
    finally:
        target.close()


def _webhook(config: Config) -> Result:
    """A signed ping, and what the receiver answered (any 2xx or 4xx: it is there)."""
    target = WebhookTarget(config.target.webhook)  # opening pings it
    try:
        reply = target.greeting
    finally:
        target.close()
    said = shown(reply.body.decode("utf-8", errors="replace"), target.hidden)[:80]
    outcome = OK if 200 <= reply.status < 300 else WARN
    return Result("target", outcome, f"webhook at {target.where}: a signed ping answered "
                  f"HTTP {reply.status} {reply.reason}{': ' + said if said else ''}"
                  + ("" if outcome == OK else " (calls need a 2xx: does the receiver take "
                     "type \"ping\"?)"))


def _encoder(config: Config) -> Iterator[Result]:
    out = subprocess.run([sys.executable, "-c", "import lameenc, poller.recordings.encoder"],
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
    elif config.recordings.after_upload == "delete" and not all(
            os.access(f, os.W_OK) for f in [folder, *_newest_days(folder)]):
        stuck = next(f for f in [folder, *_newest_days(folder)] if not os.access(f, os.W_OK))
        yield Result("recordings", FAIL, f"{stuck} is not writable by {user()}, and "
                     "recordings.after_upload = \"delete\" needs it (a ReadWritePaths= line in "
                     "the systemd unit)")
    else:
        yield _recordings_readable(folder)


def _recordings_readable(folder: Path) -> Result:
    """The newest recordings opened as this user: a file 0600 root's would otherwise show
    only at a call, after `recordings.wait`."""
    days = _newest_days(folder)
    opened, denied = unreadable_sample([folder, *days[-1:]])
    if denied:
        files = [path for path in denied if not path.is_dir()]
        tally = f"; {len(files)} of the {opened} newest files refused" if files else ""
        return Result("recordings", FAIL, f"{RecordingDenied.of(denied[0])}{tally}")
    return Result("recordings", OK, f"{folder} readable ({plural(opened, 'recent file')} "
                  "opened)")


def _metrics(config: Config) -> Iterator[Result]:
    if config.metrics.file:
        path = Path(config.metrics.file)
        _writable_file(path)
        try:
            where = _writable_folder(path.parent)
        except PollerError as exc:
            # node_exporter's folder is not the poller's to take: a group that may write
            raise PollerError(str(exc).replace(
                "chown it to the poller's user",
                "give the poller's user group write there (README: Metrics and alerts), or "
                "put the file in state.dir")) from None
        yield Result("metrics", OK, f"{path.name} in {where}")


def _callers(config: Config) -> Iterator[Result]:
    """The directory read once, as a run reads it (nothing kept: no copy in state.dir)."""
    if not config.callers.enabled:
        return

    parsed = verify(config.callers)
    count = len(parsed.callers)
    per_run = " (asked per run with :numbers)" if "numbers" in config.callers.query else ""
    yield Result("callers", OK if count else WARN,
                 f"{describe(config.callers)}: {count} known callers{per_run}")
    for problem in parsed.problems:
        yield Result("callers rows", WARN, problem)


def _incidents(config: Config) -> Iterator[Result]:
    """The incident rule in words: a missed call that opens none is otherwise a mystery."""
    rule = rule_of(config.incidents, ZoneInfo(config.source.timezone), config.callers.country)
    if rule is not None:
        # without a country, a number written the national way (8916…) opens nothing
        yield Result("incidents", OK if rule.region else WARN, describe_rule(rule))


CHECKS: list[tuple[str, Callable[[Config], Iterator[Result]]]] = [
    ("source", _source), ("reconcile", _reconcile), ("state", _state), ("journal", _journal),
    ("target", _target), ("encoder", _encoder), ("recordings", _recordings),
    ("metrics", _metrics), ("callers", _callers), ("incidents", _incidents),
]
