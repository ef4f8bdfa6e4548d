"""What the tests share besides fixtures: paths and zones, cdr rows in the shape Asterisk
writes them, readers of what a run left behind (archive, ledger), config files and the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib
import itertools
import json
import logging
import os
import pickle
import pkgutil
import pwd
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from click.testing import CliRunner, Result

from poller.calls import build_call
from poller.config.load import from_mapping
from poller.config.schema import IncomingRules, TranscodeConfig
from poller.ledger.schema import Entry
from poller.ledger.store import Ledger
from poller.model import Call, Leg
from poller.recordings.transcode import to_mp3
from poller.source.csvlines import cdr_csv_line
from poller.source.freepbx import freepbx_cdr

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SAMPLES = DATA / "samples"
MSK = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
MYSQL_URL = os.environ.get("POLLER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRESQL_URL = os.environ.get("POLLER_TEST_POSTGRESQL_URL",
                                "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


# real sample calls (tests/data/samples/calls.csv), by the uniqueid of their rows
DIRECT_ANSWERED = "1795675107.1"  # P1-01: DID …01 → 201 answers after 3 s, talks 6 s; recorded
RING_GROUP_ANSWERED = "1795675142.17"  # P1-05: 211 rings, 212 answers, 213 busy; recorded
QUEUE_ANSWERED = "1795675156.25"  # P1-06: 221 answers, 222 rang (NO ANSWER 3/3)
QUEUE_ABANDON = "1795675167.31"  # P1-07: the caller hangs up in the queue (NO ANSWER 7/7, 6/6)
IVR_NOBODY = "1795675176.37"  # P1-08: announcement, Dial, nobody answers (+ ANSWERED 0/0 row)
OUTGOING = "1795675194.47"  # P1-10: 203 dials out, answered
INTERNAL = "1795675205.51"  # P1-11: 206 calls 207, answered


_call_numbers = itertools.count(1)
_sequence = itertools.count(1000)


# -- building cdr rows in the shape Asterisk writes them

def legs_of(sample_rows: list[dict[str, Any]], uniqueid: str) -> list[dict[str, Any]]:
    """Copies of the rows of one real sample call, in insertion order."""
    rows = [dict(row) for row in sample_rows if row["uniqueid"] == uniqueid]
    assert rows, uniqueid
    return rows


def clone_call(template: list[dict[str, Any]], start: dt.datetime, *, zone: ZoneInfo = MSK,
               epoch: int | None = None, monitor: Path | None = None, keep_name: bool = False,
               **changes: Any) -> list[dict[str, Any]]:
    """A real call's rows moved to `start` (naive local time, as calldate holds it).

    The legs keep their offsets from the first leg, their order and every column Asterisk
    wrote; uniqueid/linkedid get a fresh `<epoch>.<n>` (epoch = `start` in `zone`, or given,
    e.g. for the repeated DST hour) and sequence continues one counter. The recording:
    `monitor` copies the call's real WAV there under the call's new name (FreePBX date folder);
    `keep_name` renames it but writes no file; otherwise recordingfile is emptied, as on an
    unrecorded route. `changes` are set on every row.
    """
    base = template[0]["calldate"]
    if epoch is None:
        epoch = int(start.replace(tzinfo=zone).timestamp())
    number = 2 * next(_call_numbers)
    uniqueid, linkedid = f"{epoch}.{number + 1}", f"{epoch}.{number}"
    old_uniqueid = template[0]["uniqueid"]
    rows = []
    for row in template:
        new = dict(row)
        new["calldate"] = start + (row["calldate"] - base)
        new["uniqueid"], new["linkedid"] = uniqueid, linkedid
        new["sequence"] = next(_sequence)
        name = row.get("recordingfile", "")
        if name and (monitor is not None or keep_name):
            new["recordingfile"] = name.replace(old_uniqueid, uniqueid).replace(
                base.strftime("%Y%m%d-%H%M%S"), start.strftime("%Y%m%d-%H%M%S"))
        else:
            new["recordingfile"] = ""
        new.update(changes)
        rows.append(new)
    if monitor is not None and rows[0]["recordingfile"]:
        source = SAMPLES / "recordings" / base.strftime("%Y/%m/%d") / template[0]["recordingfile"]
        place_wav(source, monitor / start.strftime("%Y/%m/%d") / rows[0]["recordingfile"])
    return rows


def direct_calls(url: str, sample_rows: list[dict[str, Any]], *starts: dt.datetime,
                 **options: Any) -> list[list[dict[str, Any]]]:
    """Answered direct calls (sample P1-01) at the given local times, inserted into the cdr
    table at `url` (clone_call's `options` apply to each)."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    calls = [clone_call(direct, start, **options) for start in starts]
    insert_rows(url, [row for rows in calls for row in rows])
    return calls


def master_csv_line(row: dict[str, Any]) -> str:
    """A cdr row as cdr_csv writes it (loguniqueid, loguserfield, newcdrcolumns)."""
    return cdr_csv_line(row)


def write_master_csv(path: Path, rows: list[dict[str, Any]], mode: str = "w") -> Path:
    """Append (or write) the rows as cdr_csv lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, encoding="utf-8", newline="") as handle:
        handle.write("".join(master_csv_line(row) for row in rows))
    return path


def place_wav(source: Path, target: Path) -> Path:
    """A finished recording: copied, and last written an hour ago (settled)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    past = time.time() - 3600
    os.utime(target, (past, past))
    return target


def key_of(rows: list[dict[str, Any]]) -> str:
    return rows[0]["linkedid"] or rows[0]["uniqueid"]


def local(text: str) -> dt.datetime:
    """A naive wall-clock time in the PBX's zone, as the calldate column holds it, from
    'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text)


# P1-01's one row, decoded: DID …01 rings 201, who answers after 3 s and talks 6 s; recorded
P1_01_LEG = {"uniqueid": "1795675107.1", "linkedid": "1795675107.0", "sequence": 1,
             "clid": '"Sokolov Ivan" <+79161002301>', "src": "+79161002301", "dst": "201",
             "dcontext": "from-did-direct", "channel": "Local/74951230001@from-pstn-00000000;2",
             "dstchannel": "Local/201@sim-phone-00000001;1", "lastapp": "Dial", "duration": 9,
             "billsec": 6, "disposition": "ANSWERED", "did": "74951230001",
             "cnum": "+79161002301", "cnam": "Sokolov Ivan",
             "recordingfile": "in-74951230001-+79161002301-20261126-093827-1795675107.1.wav"}


# P1-12's columns where they differ from P1-01's: DID …01 from +79161002312, answered by 201,
# who paused the recording (two files)
P1_12_LEG = {"uniqueid": "1795675215.55", "linkedid": "1795675215.54", "sequence": 64,
             "clid": '"Volkov Sergey" <+79161002312>', "src": "+79161002312", "cnum": "",
             "cnam": "", "channel": "Local/74951230001@from-pstn-0000001b;2",
             "dstchannel": "Local/201@sim-phone-0000001c;1", "duration": 16, "billsec": 14}


def leg(calldate: str | dt.datetime = "2026-11-26 09:38:27", **columns: Any) -> Leg:
    """One decoded cdr row for tests without a table: P1-01's (see P1_01_LEG) at `calldate`
    (naive, or 'YYYY-MM-DD HH:MM[:SS]'), with `columns` changed."""
    when = local(calldate) if isinstance(calldate, str) else calldate
    return Leg(**{**P1_01_LEG, "calldate": when, **columns})


def call_of(*legs: Leg, rules: IncomingRules | None = None, zone: ZoneInfo = MSK,
            template: str = "{calldate:%Y/%m/%d}/{recordingfile}") -> Call:
    """The call built from `legs` as a run builds it (FreePBX's recording names, Moscow)."""
    return build_call(legs, rules or IncomingRules(), zone, template)


def msk(text: str) -> dt.datetime:
    """An aware Moscow time from 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=MSK)


# -- archive days written without a run: call records in the archive's shape

DAY = dt.date(2026, 11, 26)
HOSTILE = "<script>window.pwned=1</script>"
ATTRIBUTE_BREAKER = '"><img src=x onerror="window.pwned=2">'
STATUS_CYCLE = ("answered",) * 6 + ("unanswered", "unanswered", "busy", "impossible")


def record(key: str, start: dt.datetime, number: str = "+79161234567", name: str = "",
           status: str = "answered", duration: int = 60, talk_time: int = 50,
           answered_by: str = "201", recording: str | None = None,
           problem: str | None = None) -> dict[str, object]:
    """A call record in the archive's exact shape (design §8)."""
    return {"key": key, "start": start.isoformat(), "number": number, "name": name,
            "did": "74951230001", "duration": duration,
            "talk_time": talk_time if status == "answered" else 0,
            "wait_time": duration - talk_time if status == "answered" else duration,
            "status": status, "answered_by": answered_by if status == "answered" else "",
            "recording": recording, "recording_problem": problem}


def write_record(root: Path, data: dict[str, object], mp3: Path | None = None) -> Path:
    start = dt.datetime.fromisoformat(str(data["start"]))
    path = root / f"{start:%Y/%m/%d}" / f"{data['key']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if mp3 is not None:
        shutil.copyfile(mp3, path.with_suffix(".mp3"))
        data = {**data, "recording": path.with_suffix(".mp3").name}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    return path


def synthetic_day(root: Path, day: dt.date, count: int,
                  mp3s: tuple[Path, ...] = ()) -> list[dict[str, object]]:
    """`count` calls over one working day: every status, Cyrillic names, a hostile caller
    name, and the first answered calls carrying real MP3s."""
    records = []
    opening = dt.datetime.combine(day, dt.time(8, 0), MSK)
    spare = list(mp3s)
    for i in range(count):
        status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
        name = HOSTILE if i == 7 else ATTRIBUTE_BREAKER if i == 17 else (
            "Кузнецов Пётр" if i % 13 == 0 else f"Client {i}" if i % 3 == 0 else "")
        data = record(f"{1795640000 + i * 36}.{i}", opening + dt.timedelta(seconds=i * 36),
                      number=f"+7916{1000000 + i * 7:07d}" if i % 50 else "anonymous",
                      name=name, status=status, duration=20 + i % 300, talk_time=10 + i % 250,
                      answered_by=str(201 + i % 5),
                      problem=None if status == "answered" else "empty")
        mp3 = spare.pop(0) if spare and status == "answered" else None
        if mp3 is not None:
            data["recording"] = f"{data['key']}.mp3"
        write_record(root, data, mp3)
        records.append(data)
    return records


def encode_samples(folder: Path, count: int = 3) -> tuple[Path, ...]:
    """Real MixMonitor WAVs of the sample PBX, encoded by the project's own encoder."""
    day = SAMPLES / "recordings/2026/11/26"
    wavs = sorted(p for p in day.glob("*.wav") if p.stat().st_size > 20_000)[:count]
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for wav in wavs:
        mp3 = folder / f"{wav.stem}.mp3"
        to_mp3([wav], mp3, TranscodeConfig(nice=0))
        made.append(mp3)
    return tuple(made)


def two_pbx_day(root: Path, count: int = 3) -> list[dict[str, Any]]:
    """`count` calls of one day from two PBXs (kiev, and every third one lviv), their keys
    prefixed by the PBX's name as a shared archive holds them."""
    opening = dt.datetime(2026, 11, 26, 9, 0, tzinfo=MSK)
    records = []
    for i in range(count):
        pbx = "lviv" if i % 3 == 1 else "kiev"
        data = {**record(f"{pbx}:{1795640000 + i}.{i}", opening + dt.timedelta(seconds=i * 7)),
                "pbx": pbx}
        write_record(root, data)
        records.append(data)
    return records


# -- what a run left behind

def archived(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The archive's JSON records by call key (incident files beside them left out)."""
    records = [json.loads(path.read_text(encoding="utf-8"))
               for path in (tmp_path / "archive").rglob("*.json")
               if not path.name.endswith(".incident.json")]
    by_key = {record["key"]: record for record in records}
    assert len(by_key) == len(records), "two JSON files for one call"
    return by_key


def archive_files(tmp_path: Path, suffix: str) -> list[Path]:
    return sorted((tmp_path / "archive").rglob(f"*{suffix}"))


def snapshot(tmp_path: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime of every call record and recording in the archive (its pages are
    the archive's own), to prove a run left them untouched."""
    return {str(path): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in (tmp_path / "archive").rglob("*")
            if path.is_file() and path.suffix in (".json", ".mp3", ".pending")}


def is_mp3(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 0 and (data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0))


@contextlib.contextmanager
def open_ledger(config: Any) -> Iterator[Ledger]:
    ledger = Ledger(config.state.database_url, create=False)
    try:
        yield ledger
    finally:
        ledger.close()


def entry_of(config: Any, key: str) -> Entry:
    with open_ledger(config) as ledger:
        found = ledger.entry(key)
    assert found is not None, f"call {key} is not in the ledger"
    return found


def watermark_of(config: Any) -> dt.datetime | None:
    with open_ledger(config) as ledger:
        return ledger.watermark()


# -- configs, config files and the command line

def config_data(tmp_path: Path, source_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """The test configuration as a TOML document would hold it: archive target, state and
    recordings under tmp_path; `sections` merged in (nested tables merged, not replaced)."""
    data: dict[str, Any] = {
        "source": {"url": source_url, "timezone": "Europe/Moscow", "settle": "60s",
                   "lookback": "4h", "start": "2026-11-26 09:00"},
        "state": {"dir": str(tmp_path / "state")},
        "recordings": {"dir": str(tmp_path / "monitor")},
        "target": {"kind": "archive", "archive": {"dir": str(tmp_path / "archive")}},
    }
    for section, values in sections.items():
        node = data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key].update(value)
            else:
                node[key] = value
    return data


def make_config(tmp_path: Path, source_url: str, **sections: dict[str, Any]) -> Any:
    """A validated Config for tests (see config_data), its recordings folder made as on a PBX
    (a missing one makes calls wait: the spool is not mounted)."""
    config = from_mapping(config_data(tmp_path, source_url, **sections), env={})
    Path(config.recordings.dir).mkdir(parents=True, exist_ok=True)
    return config


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key a config dataclass accepts, dotted (`source.lookback`), nested tables walked."""
    keys = []
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(field.type) or isinstance(field.default_factory, type):
            nested = field.default_factory  # type: ignore[misc]
            if isinstance(nested, type) and dataclasses.is_dataclass(nested):
                keys += config_keys(nested, path + ".")
                continue
        keys.append(path)
    return keys


def to_toml(data: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    text = ""
    if scalars:
        if path:
            text += f"[{'.'.join(path)}]\n"
        text += "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in scalars.items())
    for name, value in data.items():
        if isinstance(value, dict):
            text += to_toml(value, (*path, name))
    return text


def write_config(tmp_path: Path, source_url: str, **sections: dict[str, Any]) -> Path:
    """The config as a file, mode 0600 as the README asks (the URL may hold a password)."""
    path = tmp_path / "poller.toml"
    path.write_text(to_toml(config_data(tmp_path, source_url, **sections)), encoding="utf-8")
    path.chmod(0o600)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """`poller ARGS` through click's runner. The root logger is put back afterwards (the CLI
    points it at the runner's captured stderr) and the handlers the CLI added (a syslog socket
    among them) are closed, so no socket leaks."""
    from poller.cli.main import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def sql_statements(path: Path) -> list[str]:
    """The statements of an SQL file in sql/ (comments dropped; a `DO $$ … $$` block whole)."""
    import re

    text = re.sub(r"--[^\n]*", "", path.read_text())
    parts = re.split(r"(\$\$.*?\$\$)", text, flags=re.S)  # no `;` inside a dollar quote counts
    statements, current = [], ""
    for index, part in enumerate(parts):
        if index % 2:
            current += part
            continue
        pieces = part.split(";")
        current += pieces[0]
        for piece in pieces[1:]:
            statements.append(current.strip())
            current = piece
    statements.append(current.strip())
    return [s for s in statements if s]


def explain(source: Any, lo: Any, hi: Any, column: str = "calldate") -> list[dict[str, Any]]:
    """The server's plan for one window read of a CdrSource (MySQL/MariaDB)."""
    compiled = source.window_query(lo, hi, column).compile(source.engine)
    params = compiled.params
    positional = tuple(params[name] for name in compiled.positiontup) \
        if compiled.positiontup else dict(params)
    with source.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.exec_driver_sql("EXPLAIN " + str(compiled),
                                                                positional)]


def call_json(**changes: Any) -> dict[str, Any]:
    """A built call as Call.to_json holds it (answered, 9 s, no recording files): for tests
    that hand a target a call without a cdr table."""
    return {"key": "1795675107.0", "start": "2026-11-26T09:38:27+03:00",
            "end": "2026-11-26T09:38:36+03:00", "number": "+79161002301", "name": "",
            "did": "74951230001", "duration": 9, "talk_time": 6, "wait_time": 3,
            "status": "answered", "answered_by": "201", "incoming": True, "recordings": [],
            "expects_recording": True, "first_calldate": "2026-11-26T09:38:27",
            "last_calldate": "2026-11-26T09:38:27", **changes}


# -- another user: root ignores permissions, the service user does not

NOBODY = pwd.getpwnam("nobody")


def needs_root(test: Any) -> Any:
    """Skip `test` where it cannot change owners and users."""
    import pytest

    return pytest.mark.skipif(os.geteuid() != 0, reason="changes owners and users: needs "
                              "root")(test)


def cdr_table(folder: Path, rows: list[dict[str, Any]], cursor: str | None = None) -> str:
    """A FreePBX cdr table in a SQLite file every user may read, holding `rows`; `cursor`
    ("id" or "addtime") adds that insertion-ordered column."""
    path = folder / "cdr.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata = sa.MetaData()
    table = freepbx_cdr(metadata)
    if cursor is not None:
        table.append_column(_cursor_column(cursor))
    metadata.create_all(engine)
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    engine.dispose()
    path.chmod(0o644)
    return f"sqlite:///{path}"


def _cursor_column(name: str) -> sa.Column[Any]:
    """The column a PBX adds to read its cdr table in insertion order (source.cursor)."""
    if name == "id":  # SQLite numbers an INTEGER PRIMARY KEY itself, as AUTO_INCREMENT does
        return sa.Column("id", sa.Integer, primary_key=True)
    if name == "addtime":
        return sa.Column("addtime", sa.DateTime, nullable=False, index=True,
                         server_default=sa.func.current_timestamp())
    raise ValueError(f"no cursor column {name!r}")


def _engine(url: str) -> sa.engine.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def insert_rows(url: str, rows: list[dict[str, Any]], table: str = "cdr") -> None:
    """Insert cdr rows into the table at `url` (SQLite, MariaDB or PostgreSQL), as the PBX
    would."""
    if not rows:
        return
    engine = _engine(url)
    try:
        target = sa.Table(table, sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            conn.execute(target.insert(), rows)
    finally:
        engine.dispose()


def execute_sql(url: str, sql: str, **params: Any) -> list[Any]:
    """One statement on the database at `url`; the rows it returned, if any."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def add_cursor_column(url: str, name: str) -> None:
    """Give the (still empty) cdr table at `url` the cursor column `name`: ALTER TABLE on
    MariaDB; on SQLite, which cannot add a key or a non-constant default, the table is made
    again with it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        assert not execute_sql(url, "SELECT 1 FROM cdr LIMIT 1"), "the cdr table is not empty"
        path.unlink()
        cdr_table(path.parent, [], cursor=name)
    elif name == "id":
        execute_sql(url, "ALTER TABLE cdr ADD COLUMN id INT NOT NULL AUTO_INCREMENT PRIMARY KEY "
                         "FIRST")
    else:
        execute_sql(url, f"ALTER TABLE cdr ADD COLUMN {name} TIMESTAMP NOT NULL "
                         f"DEFAULT CURRENT_TIMESTAMP, ADD INDEX {name} ({name})")


def _import_everything_a_run_may_import() -> None:
    """Import, as the caller, every poller module and what the run imports late. The tests'
    Python may live where another user cannot read it (pyenv under a 0700 /root), while a
    service user's Python is readable by it: a module first imported in the child would
    fail for a reason no installation has."""
    importlib.import_module("importlib.readers")  # what importlib.resources loads on first use
    import poller

    for module in pkgutil.walk_packages(poller.__path__, "poller."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)


def in_child(become: Callable[[], None], work: Callable[[], Any]) -> Any:
    """`work()` in a forked child that first calls `become()` (to take another user's
    identity); its result comes back, its exception fails the caller with its text."""
    _import_everything_a_run_may_import()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            try:
                become()
                outcome: Any = ("ok", work())
            except BaseException as exc:  # noqa: BLE001 - carried to the parent
                outcome = ("error", f"{type(exc).__name__}: {exc}")
            with os.fdopen(write, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data) if data else ("error", "the child died")
    assert kind == "ok", value
    return value


def as_nobody(work: Callable[[], Any]) -> Any:
    """`work()` in a forked child running as nobody; its result (or exception) comes back.

    The child cannot start the interpreter again (it lives where nobody may not read), so
    what it runs must already be imported, and it starts no encoder."""
    import poller.ops.check  # noqa: F401 - imported here: nobody cannot read the interpreter's
    import poller.ops.status  # noqa: F401 - files again after the fork
    import poller.run.pipeline  # noqa: F401
    sa.create_engine("sqlite://").dispose()  # loads SQLAlchemy's SQLite dialect

    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    return in_child(become_nobody, work)


def give_to_nobody(*paths: Path) -> None:
    """Make folders and files (recursively) nobody's, as the service user's would be."""
    for top in paths:
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
