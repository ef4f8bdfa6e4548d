"""The suite's PBX: calls of every outcome cloned from the real sample rows, with their real
WAVs, arriving a few at a time; what each call must look like in a target once delivered."""

from __future__ import annotations

import csv
import datetime as dt
import random
import shutil
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from support import MSK, SAMPLES, clone_call, key_of, legs_of

MIN_BYTES = 1024  # recordings.min_bytes: a smaller WAV holds no audio and is not attached
LONG_CALL = (1200, 2400)  # seconds: a long call is inserted after calls that began later


@dataclass(frozen=True)
class Template:
    """One real sample call: its rows and what calls.csv says it was."""

    call_id: str
    rows: tuple[dict[str, Any], ...]
    direction: str  # incoming | outgoing | internal
    outcome: str
    answered_by: str


@dataclass
class Expected:
    """One call of the workload and what a target must hold for it."""

    key: str
    template: str
    incoming: bool
    status: str
    answered_by: str
    number: str
    duration: int
    wavs: dict[str, Path] = field(default_factory=dict)  # site -> its copy of the WAV
    seconds: float | None = None  # the recording's length, None when none is attached
    late: bool = False


def templates(sample_rows: list[dict[str, Any]]) -> list[Template]:
    with open(SAMPLES / "calls.csv", newline="", encoding="utf-8") as handle:
        described = list(csv.DictReader(handle))
    found = []
    for row in described:
        epoch = row["placed_epoch"].split(".")[0]
        uniqueids = {r["uniqueid"] for r in sample_rows if r["uniqueid"].startswith(epoch + ".")}
        if len(uniqueids) != 1:
            continue  # a call without rows of its own (the defaults of P2 wrote none)
        rows = legs_of(sample_rows, uniqueids.pop())
        found.append(Template(row["call_id"], tuple(rows), row["direction"],
                              row["expected_outcome"], row["answered_by"]))
    return found


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes() / handle.getframerate()


def call_seconds(rows: list[dict[str, Any]]) -> int:
    """Latest leg end minus earliest leg start (design §3), from the rows alone."""
    start = min(row["calldate"] for row in rows)
    end = max(row["calldate"] + dt.timedelta(seconds=int(row["duration"])) for row in rows)
    return int((end - start).total_seconds())


class Workload:
    """Calls arriving over the last hours, inserted into every database given, WAVs copied
    into every site's recordings folder."""

    def __init__(self, sample_rows: list[dict[str, Any]], rng: random.Random,
                 monitors: dict[str, Path], now_local: dt.datetime, total: int):
        self.templates = templates(sample_rows)
        self.incoming = [t for t in self.templates if t.direction == "incoming"]
        self.other = [t for t in self.templates if t.direction != "incoming"]
        self.rng = rng
        self.monitors = monitors
        self.total = total
        self.begin = now_local - dt.timedelta(hours=3)
        self.end = now_local - dt.timedelta(minutes=50)  # the longest call ends in the past
        self.calls: dict[str, Expected] = {}
        self.databases: list[sa.engine.Engine] = []
        self.inserted_rows = 0
        self._made = 0

    @property
    def left(self) -> int:
        return self.total - self._made

    def arrive(self, count: int, *, recorded: bool = False) -> list[Expected]:
        """`count` more calls, in calldate order after the ones before; one in eight is an
        outgoing or internal call, one in ten a long incoming call that began before calls
        already inserted. `recorded`: the first holds a recording."""
        count = min(count, self.left)
        made, rows = [], []
        for number in range(count):
            position = (self._made + 1) / self.total
            start = self.begin + (self.end - self.begin) * position
            start += dt.timedelta(seconds=self.rng.randrange(0, 30))
            late = self._made > 10 and self.rng.random() < 0.1
            template = self._pick(need_recording=recorded and number == 0, late=late)
            if late:  # began an hour earlier, ended long after: inserted now all the same
                start -= dt.timedelta(minutes=self.rng.randrange(20, 60))
            call_rows, expected = self._clone(template, start, late)
            made.append(expected)
            rows.extend(call_rows)
            self._made += 1
        self.insert(rows)
        return made

    def _pick(self, need_recording: bool, late: bool) -> Template:
        if need_recording or late:
            pool = [t for t in self.incoming
                    if t.outcome == "answered" and t.rows[0]["recordingfile"]]
            return self.rng.choice(pool)
        if self.rng.random() < 0.125:
            return self.rng.choice(self.other)
        return self.rng.choice(self.incoming)

    def _clone(self, template: Template, start: dt.datetime,
               late: bool) -> tuple[list[dict[str, Any]], Expected]:
        rows = clone_call(list(template.rows), start, zone=MSK, keep_name=True)
        if late:
            length = self.rng.randrange(*LONG_CALL)
            for row in rows:
                if row["disposition"] == "ANSWERED" and row["dstchannel"]:
                    row["billsec"] = length - (int(row["duration"]) - int(row["billsec"]))
                    row["duration"] = length
        key = key_of(rows)
        expected = Expected(key, template.call_id, template.direction == "incoming",
                            template.outcome, template.answered_by, rows[0]["src"],
                            call_seconds(rows), late=late)
        name = rows[0]["recordingfile"]
        if name:
            source = (SAMPLES / "recordings" / template.rows[0]["calldate"].strftime("%Y/%m/%d")
                      / template.rows[0]["recordingfile"])
            for site, monitor in self.monitors.items():
                target = monitor / rows[0]["calldate"].strftime("%Y/%m/%d") / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                expected.wavs[site] = target
            if source.stat().st_size >= MIN_BYTES:
                expected.seconds = wav_seconds(source)
        self.calls[key] = expected
        return rows, expected

    def insert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:  # the workload is used up: a fault that comes later has nothing to hit
            return
        for engine in self.databases:
            table = sa.Table("cdr", sa.MetaData(), autoload_with=engine)
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)
        self.inserted_rows += len(rows)

    def copy_into(self, engine: sa.engine.Engine, source: sa.engine.Engine) -> None:
        """Every row inserted so far into another database (a private server's), and the
        later ones as they arrive."""
        table = sa.Table("cdr", sa.MetaData(), autoload_with=source)
        with source.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(sa.select(table))]
        target = sa.Table("cdr", sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            if rows:
                conn.execute(target.insert(), rows)
        self.databases.append(engine)

    @property
    def incoming_calls(self) -> list[Expected]:
        return [call for call in self.calls.values() if call.incoming]
