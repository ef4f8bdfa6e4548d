"""The benchmark's own workload: a FreePBX cdr table on MariaDB filled with clones of the real
sample calls, speech recordings on disk, and the poller configurations that read them."""

from __future__ import annotations

import array
import datetime as dt
import json
import os
import secrets
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cdrtable import load_table  # noqa: E402

SAMPLES = ROOT / "tests" / "data" / "samples"
SOUNDS = Path("/usr/share/asterisk/sounds")
SPEECH = ("demo-instruct.wav", "demo-congrats.wav", "priv-callee-options.wav",
          "basic-pbx-ivr-main.wav", "demo-echotest.wav")
ZONE = "Europe/Moscow"
RATE = 8000
# the first leg of a real answered, recorded call straight to an extension (P1-01)
DIRECT = "1795675107.0"
COLUMNS = ("calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp",
           "lastdata", "duration", "billsec", "disposition", "amaflags", "accountcode",
           "uniqueid", "userfield", "did", "recordingfile", "cnum", "cnam", "outbound_cnum",
           "outbound_cnam", "dst_cnam", "linkedid", "peeraccount", "sequence")


def templates() -> list[list[dict[str, Any]]]:
    """The real sample calls (ring groups, queues, a transfer, failed and internal calls),
    each its rows in insertion order."""
    calls: dict[str, list[dict[str, Any]]] = {}
    for row in load_table(SAMPLES / "cdr.txt"):
        calls.setdefault(row["linkedid"] or row["uniqueid"], []).append(row)
    return list(calls.values())


def clone(template: list[dict[str, Any]], start: dt.datetime, number: int,
          **changes: Any) -> list[dict[str, Any]]:
    """A real call moved to `start` (naive local) under ids of its own; `changes` on every row."""
    base = template[0]["calldate"]
    epoch = int(start.replace(tzinfo=ZoneInfo(ZONE)).timestamp())
    linkedid, uniqueid = f"{epoch}.{2 * number}", f"{epoch}.{2 * number + 1}"
    rows = []
    for index, row in enumerate(template):
        new = dict(row, calldate=start + (row["calldate"] - base), linkedid=linkedid,
                   uniqueid=uniqueid, sequence=number * 8 + index, recordingfile="")
        new.update(changes)
        rows.append(new)
    return rows


def mixed_calls(count: int, first: dt.datetime, spacing: float) -> Iterator[list[dict[str, Any]]]:
    """`count` calls cycling through every sample call, one every `spacing` seconds."""
    shapes = templates()
    for number in range(count):
        yield clone(shapes[number % len(shapes)], first + dt.timedelta(seconds=number * spacing),
                    number)


def recorded_calls(count: int, first: dt.datetime, spacing: float, seconds: int,
                   offset: int = 0) -> Iterator[list[dict[str, Any]]]:
    """Answered incoming calls of `seconds` of talk, each naming a recording of its own."""
    shape = next(t for t in templates() if t[0]["linkedid"] == DIRECT)
    for number in range(offset, offset + count):
        start = first + dt.timedelta(seconds=(number - offset) * spacing)
        rows = clone(shape, start, 500_000_000 + number, duration=seconds + 3, billsec=seconds)
        # FreePBX's name: the poller looks in the day folder for the paused parts of a call
        name = f"in-74951230001-+79161002301-{start:%Y%m%d-%H%M%S}-{rows[0]['uniqueid']}.wav"
        yield [dict(row, recordingfile=name) for row in rows]


@dataclass
class Database:
    """A database of the benchmark's own on the server, dropped at the end."""

    server: str
    name: str

    @classmethod
    def create(cls, server: str) -> Database:
        name = f"poller_bench_{secrets.token_hex(4)}"
        with _engine(server).begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        database = cls(server, name)
        database.execute((ROOT / "sql" / "cdr-freepbx.sql").read_text())
        return database

    @property
    def url(self) -> str:
        return f"{self.server.rstrip('/')}/{self.name}"

    def execute(self, sql: str) -> list[Any]:
        engine = _engine(self.url)
        with engine.begin() as conn:
            result = conn.exec_driver_sql(sql)
            rows = list(result) if result.returns_rows else []
        engine.dispose()
        return rows

    def copy_table(self, table: str) -> None:
        self.execute(f"CREATE TABLE `{table}` LIKE cdr")

    def load(self, calls: Iterator[list[dict[str, Any]]], folder: Path,
             table: str = "cdr") -> int:
        """Bulk-load the calls' rows (LOAD DATA, as a dump would be restored); the row count."""
        path = folder / f"{table}.tsv"
        count = 0
        with open(path, "w", encoding="utf-8") as handle:
            for rows in calls:
                for row in rows:
                    handle.write("\t".join(_field(row[c]) for c in COLUMNS) + "\n")
                    count += 1
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool,
                                  connect_args={"local_infile": True, "charset": "utf8mb4"})
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                f"({', '.join(COLUMNS)})")
        engine.dispose()
        path.unlink()
        return count

    def drop(self) -> None:
        with _engine(self.server).begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{self.name}`"))


def _engine(url: str) -> sa.engine.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _field(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


# -- recordings

def speech_pcm() -> bytes:
    """Real 8 kHz 16-bit mono speech: Debian's asterisk-core-sounds prompts if installed
    (any voice folder under /usr/share/asterisk/sounds), else the MixMonitor samples."""
    found: list[Path] = []
    for name in SPEECH:
        found.extend(sorted(SOUNDS.glob(f"*/{name}"))[:1])
    if not found:
        found = sorted(p for p in SAMPLES.glob("recordings/**/*.wav") if p.stat().st_size > 4096)
    parts = []
    for path in found:
        with wave.open(str(path), "rb") as source:
            if (source.getframerate(), source.getsampwidth(), source.getnchannels()) == (
                    RATE, 2, 1):
                parts.append(source.readframes(source.getnframes()))
    return b"".join(parts)


def speech_origin() -> str:
    hits = [p for name in SPEECH for p in SOUNDS.glob(f"*/{name}")]
    return (f"{len(hits)} asterisk-core-sounds prompts ({hits[0].parent.name})" if hits
            else "the MixMonitor samples of tests/data")


def write_speech(path: Path, seconds: float, pcm: bytes | None = None) -> Path:
    """A WAV of real speech repeated to `seconds`, written a MB at a time, last changed an
    hour ago (settled)."""
    pcm = pcm or speech_pcm()
    path.parent.mkdir(parents=True, exist_ok=True)
    left, start = int(seconds * RATE) * 2, 0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        while left:
            part = pcm[start:start + min(left, 1 << 20)]
            out.writeframesraw(part)
            left -= len(part)
            start = (start + len(part)) % len(pcm)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def place_recordings(calls: list[list[dict[str, Any]]], monitor: Path, master: Path) -> None:
    """Each call's recording in its FreePBX date folder: hard links to one speech file."""
    for rows in calls:
        name = rows[0]["recordingfile"]
        target = monitor / rows[0]["calldate"].strftime("%Y/%m/%d") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(master, target)


def mp3_file(path: Path, megabytes: float) -> Path:
    """A file of `megabytes` (its bytes need not be audio: the upload does not look)."""
    block = array.array("B", range(256)).tobytes() * 4096
    left = int(megabytes * 2**20)
    with open(path, "wb") as handle:
        while left:
            handle.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path


# -- configurations

def config_data(folder: Path, source_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A configuration as its TOML file would hold it: archive target, state and recordings
    under `folder`; `sections` merged in."""
    data: dict[str, Any] = {
        "source": {"url": source_url, "timezone": ZONE, "settle": "60s", "lookback": "4h"},
        "state": {"dir": str(folder / "state")},
        "recordings": {"dir": str(folder / "monitor")},
        "target": {"kind": "archive", "archive": {"dir": str(folder / "archive")}},
    }
    for section, values in sections.items():
        node = data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key].update(value)
            else:
                node[key] = value
    return data


def make_config(data: dict[str, Any]) -> Any:
    from poller.config.load import from_mapping

    config = from_mapping(data, env={})
    Path(config.recordings.dir).mkdir(parents=True, exist_ok=True)
    return config


def to_toml(data: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    text = ""
    if scalars:
        if path:
            text += f"[{'.'.join(path)}]\n"
        text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in scalars.items())
    for name, value in data.items():
        if isinstance(value, dict):
            text += to_toml(value, (*path, name))
    return text


NOTHING_INCOMING = {"incoming": {"did_set": False, "channels": [], "contexts": []}}
