"""`poller demo`: a sample PBX (SQLite cdr table + MixMonitor WAVs) delivered into an archive.

The calls are shaped like what a real Asterisk with a FreePBX dialplan writes: one row per callee
channel, the Hangup row after a failed Dial, queue members with NO ANSWER and billsec > 0, the
IVR's own ANSWERED row, header-only WAVs for calls nobody answered.
"""

from __future__ import annotations

import array
import datetime as dt
import json
import math
import os
import random
import shutil
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from poller.config.load import load
from poller.errors import ConfigError
from poller.run.pipeline import run_once
from poller.source.csvlines import cdr_csv_line
from poller.source.freepbx import freepbx_cdr

if TYPE_CHECKING:
    from poller.run.report import RunReport

ZONE = "Europe/Moscow"
MARKER = ".poller-demo"


@dataclass(frozen=True)
class DemoLeg:
    offset: int  # seconds after the call's start
    dst: str
    dcontext: str
    dstchannel: str
    lastapp: str
    duration: int
    billsec: int
    disposition: str


@dataclass(frozen=True)
class DemoCall:
    minutes_ago: int
    src: str
    name: str
    did: str
    legs: tuple[DemoLeg, ...]
    audio_seconds: float  # 0: a header-only file; None-like negative: no recording at all
    outgoing: bool = False


def _leg(offset: int, dst: str, ctx: str, ext: str | None, app: str, dur: int, bill: int,
         disp: str) -> DemoLeg:
    return DemoLeg(offset, dst, ctx, f"PJSIP/{ext}-0000{offset:04x}" if ext else "", app, dur,
                   bill, disp)


CALLS = (
    DemoCall(170, "+79161002301", "Sokolov Ivan", "74951230001",
             (_leg(0, "201", "from-did-direct", "201", "Dial", 42, 35, "ANSWERED"),), 35),
    DemoCall(160, "89161002302", "", "74951230002",
             (_leg(0, "202", "from-did-direct", "202", "Dial", 15, 0, "NO ANSWER"),
              _leg(15, "202", "from-did-direct", None, "Hangup", 0, 0, "NO ANSWER")), 0),
    DemoCall(150, "+79161002303", "", "74951230002",
             (_leg(0, "202", "from-did-direct", "202", "Dial", 0, 0, "BUSY"),
              _leg(0, "202", "from-did-direct", None, "Hangup", 0, 0, "NO ANSWER")), 0),
    DemoCall(140, "+79161002304", "Morozova Elena", "74951230002",
             (_leg(0, "202", "from-did-direct", "202", "Dial", 6, 0, "NO ANSWER"),), 0),
    # a known customer ringing again five minutes later: folded into the incident above
    DemoCall(135, "89161002304", "Morozova Elena", "74951230002",
             (_leg(0, "202", "from-did-direct", "202", "Dial", 9, 0, "NO ANSWER"),), 0),
    DemoCall(130, "+79161002305", "OOO Vega", "74951230003",
             (_leg(0, "260", "ext-group", "211", "Dial", 4, 0, "NO ANSWER"),
              _leg(0, "260", "ext-group", "212", "Dial", 64, 60, "ANSWERED"),
              _leg(0, "260", "ext-group", "213", "Dial", 0, 0, "BUSY")), 60),
    DemoCall(120, "89161002306", "", "74951230004",
             (_leg(0, "270", "ext-queues", "221", "Queue", 48, 48, "ANSWERED"),
              _leg(0, "270", "ext-queues", "222", "Queue", 6, 6, "NO ANSWER")), 48),
    DemoCall(110, "+79161002307", "", "74951230004",
             (_leg(0, "270", "ext-queues", "221", "Queue", 25, 25, "NO ANSWER"),
              _leg(0, "270", "ext-queues", "222", "Queue", 24, 24, "NO ANSWER")), 25),
    DemoCall(100, "+79161002308", "", "74951230000",
             (_leg(0, "261", "ext-group", "211", "Dial", 13, 13, "NO ANSWER"),
              _leg(5, "261", "ext-group", "212", "Dial", 8, 8, "NO ANSWER"),
              _leg(13, "261", "ext-group", None, "Hangup", 0, 0, "ANSWERED")), 13),
    DemoCall(90, "89161002309", "", "74951230005",
             (_leg(0, "205", "from-did-direct", "205", "Dial", 0, 0, "CONGESTION"),
              _leg(0, "205", "from-did-direct", None, "Hangup", 0, 0, "NO ANSWER")), -1),
    DemoCall(80, "203", "Ivanova Olga", "",
             (_leg(0, "89165550310", "from-internal", "provider", "Dial", 40, 33, "ANSWERED"),),
             33, outgoing=True),
    DemoCall(70, "206", "Petrov Sergey", "",
             (_leg(0, "207", "from-internal", "207", "Dial", 27, 25, "ANSWERED"),), -1,
             outgoing=True),
    DemoCall(60, "anonymous", "", "74951230001",
             (_leg(0, "201", "from-did-direct", "201", "Dial", 21, 18, "ANSWERED"),), 18),
    DemoCall(45, "+79161002413", "Кузнецов Пётр", "74951230002",
             (_leg(0, "202", "from-did-direct", "202", "Dial", 97, 92, "ANSWERED"),), 92),
)


def speech_like(seconds: float, rate: int = 8000, seed: int = 0) -> bytes:
    """16-bit PCM that sounds like talk: voiced harmonics in syllables, with pauses."""
    rng = random.Random(seed)
    samples = array.array("h")
    pitch = 110.0 + 40 * rng.random()
    total = int(seconds * rate)
    while len(samples) < total:
        length = min(int(rate * (0.12 + 0.2 * rng.random())), total - len(samples))
        if rng.random() < 0.25:
            samples.extend(int(rng.gauss(0, 30)) for _ in range(length))
            continue
        # one glottal period, repeated under a syllable-long envelope
        period = max(int(rate / (pitch * (0.9 + 0.2 * rng.random()))), 1)
        cycle = [sum(math.sin(2 * math.pi * k * n / period) / k for k in (1, 2, 3, 5))
                 for n in range(period)]
        samples.extend(int(6000 * math.sin(math.pi * i / length) * cycle[i % period])
                       for i in range(length))
    return samples.tobytes()


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def build(directory: Path, now: dt.datetime | None = None, source: str = "table") -> Path:
    """Write the sample cdr rows (a SQLite table, or Master.csv as cdr_csv writes it),
    recordings and config into `directory`; returns the config."""
    directory = _prepare(directory)
    zone = ZoneInfo(ZONE)
    now = (now or dt.datetime.now(zone)).astimezone(zone).replace(microsecond=0)
    rows = []
    counter = 1
    for number, call in enumerate(CALLS):
        start = now - dt.timedelta(minutes=call.minutes_ago)
        epoch = int(start.timestamp())
        uniqueid = f"{epoch}.{counter}"
        counter += 4
        prefix = "out" if call.outgoing else "in"
        recording = ""
        if call.audio_seconds >= 0:
            party = call.legs[0].dst if call.outgoing else call.did
            recording = f"{prefix}-{party}-{call.src}-{start:%Y%m%d-%H%M%S}-{uniqueid}.wav"
            path = directory / "recordings" / f"{start:%Y/%m/%d}" / recording
            write_wav(path, speech_like(call.audio_seconds, seed=number))
            end = start + dt.timedelta(seconds=max(leg.offset + leg.duration for leg in call.legs))
            os.utime(path, (end.timestamp(), end.timestamp()))
        trunk = f"PJSIP/{call.src if call.outgoing else 'provider'}-{counter:08x}"
        clid = f'"{call.name}" <{call.src}>'
        for seq, leg in enumerate(call.legs):
            rows.append({
                "calldate": (start + dt.timedelta(seconds=leg.offset)).replace(tzinfo=None),
                "clid": clid, "src": call.src, "dst": leg.dst, "dcontext": leg.dcontext,
                "channel": trunk, "dstchannel": leg.dstchannel, "lastapp": leg.lastapp,
                "lastdata": "", "duration": leg.duration, "billsec": leg.billsec,
                "disposition": leg.disposition, "amaflags": 3, "uniqueid": uniqueid,
                "did": call.did, "recordingfile": recording, "cnum": call.src,
                "cnam": call.name, "linkedid": uniqueid, "sequence": counter + seq,
            })
    if source == "csv":
        master = directory / "cdr-csv" / "Master.csv"
        master.parent.mkdir()
        master.write_text("".join(cdr_csv_line(row) for row in rows), encoding="utf-8")
    else:
        engine = sa.create_engine(f"sqlite:///{directory / 'cdr.db'}")
        table = freepbx_cdr(sa.MetaData())
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
        engine.dispose()
    (directory / "callers.csv").write_text(_CALLERS, encoding="utf-8")
    config = directory / "poller.toml"
    sections = _CSV_SOURCE if source == "csv" else _TABLE_SOURCE
    config.write_text(_CONFIG.format(source=sections.format(dir=directory, zone=ZONE),
                                     dir=directory))
    return config


_TABLE_SOURCE = """\
[source]
url = "sqlite:///{dir}/cdr.db"
timezone = "{zone}"

[recordings]
dir = "{dir}/recordings"
"""

# Master.csv has no did and no recordingfile: incoming calls by their trunk channel, the
# recording by the one file whose name ends in the call's uniqueid
_CSV_SOURCE = """\
[source]
kind = "csv"
timezone = "{zone}"

[source.csv]
path = "{dir}/cdr-csv/Master.csv"

[source.incoming]
did_set = false
channels = ["PJSIP/provider-*"]

[recordings]
dir = "{dir}/recordings"
name = "{{calldate:%Y/%m/%d}}/*-{{uniqueid}}.wav"
"""

_CONFIG = """\
# The configuration `poller demo` ran with; try `poller --config {dir}/poller.toml status`.
{source}
[state]
dir = "{dir}/state"

[target]
kind = "archive"

[target.archive]
dir = "{dir}/archive"

[callers]
country = "RU"
csv = "{dir}/callers.csv"
fields = ["manager"]

[incidents]
statuses = ["unanswered", "busy"]
callers = "known"
fold = "30m"

[incidents.attributes]
title = "Missed call from {{caller_name}} {{number_e164}}, manager {{caller_manager}}"
"""

# some of the demo's callers, written as a CRM export would have them
_CALLERS = """\
number,name,id,manager
+7 916 100-23-01,Sokolov Ivan,C-101,Petrova
8 916 100-23-04,Morozova Elena,C-104,Petrova
79161002305,OOO Vega,C-105,Sidorov
"""


def _prepare(directory: Path) -> Path:
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise ConfigError(f"{directory} is not empty and was not made by `poller demo`; "
                              "name a new directory")
        for name in ("cdr.db", "poller.toml"):
            (directory / name).unlink(missing_ok=True)
        for name in ("recordings", "state", "archive", "cdr-csv"):
            shutil.rmtree(directory / name, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by poller demo; it deletes and rebuilds this folder\n")
    return directory


def run_demo(directory: str | os.PathLike[str], program: str = "poller",
             webhook: str = "", secret: str = "",
             source: str = "table") -> tuple[RunReport, list[str]]:
    """Build the sample (a SQLite cdr table, or Master.csv: `source`), run the real pipeline
    into the archive (and, given a receiver's URL and secret, into that receiver too), and
    describe what arrived; the hint names `program` as the administrator started it."""

    if webhook and not secret:
        raise ConfigError("demo --webhook: set POLLER_WEBHOOK_SECRET to the receiver's secret "
                          "(whsec_...)")
    config_path = build(Path(directory), source=source)
    config = load(config_path, env={})
    report = run_once(config)
    archive = Path(config.target.archive.dir)
    zone = ZoneInfo(config.source.timezone)
    offset = dt.datetime.now(zone).isoformat()[-6:]
    lines = [f"sample PBX in {config_path.parent} (its calls in {zone.key}, {offset}; the log's "
             f"stamps are this host's time); delivered into {archive}:", ""]
    lines.append(f"{'start':<19}  {'number':<14} {'status':<10} {'dur':>4} {'talk':>4} "
                 f"{'by':<4} recording")
    for path in sorted(archive.rglob("*.json")):
        if path.name.endswith(".incident.json"):
            continue  # listed below
        record = json.loads(path.read_text())
        mp3 = path.with_suffix(".mp3")
        recording = (f"{mp3.name} ({mp3.stat().st_size // 1024} KiB)" if record["recording"]
                     else f"none ({_why_none(record)})")
        lines.append(f"{record['start'][:19].replace('T', ' '):<19}  {record['number']:<14} "
                     f"{record['status']:<10} {record['duration']:>4} {record['talk_time']:>4} "
                     f"{record['answered_by'] or '-':<4} {recording}")
    lines += _incidents(archive)
    lines += ["", f"run: {report.summary()}",
              f"pages: {archive / 'index.html'} (open it in a browser)",
              f"config: {config_path} (try: {program} --config {config_path} status)"]
    if webhook:
        sent, more = _to_webhook(config_path, webhook, secret, program)
        lines += ["", *more]
        report.add(sent)
    return report, lines


def _to_webhook(config_path: Path, url: str, secret: str,
                program: str) -> tuple[RunReport, list[str]]:
    """The same sample delivered once more, to a webhook receiver, with a ledger of its own
    (the secret comes from the environment, never written into the file)."""
    text = config_path.read_text()
    folder = config_path.parent
    text = text.replace(f'dir = "{folder}/state"', f'dir = "{folder}/state-webhook"')
    text = text.replace('kind = "archive"', 'kind = "webhook"')
    text = text.replace(f'[target.archive]\ndir = "{folder}/archive"\n',
                        f"[target.webhook]\nurl = {json.dumps(url)}\n")
    path = folder / "poller-webhook.toml"
    path.write_text(text)
    path.chmod(0o600)  # the URL may hold the receiver's credential
    report = run_once(load(path, env={"POLLER_WEBHOOK_SECRET": secret}))
    parts = urlsplit(url)
    return report, [f"webhook {parts.scheme}://{parts.netloc}: {report.summary()}",
                    f"config: {path} (with POLLER_WEBHOOK_SECRET set, try: {program} "
                    f"--config {path} status)"]


def _why_none(record: dict[str, Any]) -> str:
    """Why a call has no recording, as the archive pages say it: a call nobody answered has
    nothing to record (its header-only file is no news)."""
    problem = record["recording_problem"]
    if record["status"] != "answered" and problem in (None, "empty"):
        return "not answered"
    return problem or "not recorded"


def _incidents(archive: Path) -> list[str]:
    """The calls of known callers and the incidents the rule opened, for the demo's output."""
    records = [json.loads(path.read_text()) for path in sorted(archive.rglob("*.json"))
               if not path.name.endswith(".incident.json")]
    lines = ["", "known callers (callers.csv):"]
    lines += [f"  {r['start'][11:19]}  {r['number']:<14} {r['caller_name']} ({r['caller_id']}), "
              f"{r['status']}" for r in records if r.get("caller_name")]
    for path in sorted(archive.rglob("*.incident.json")):
        incident = json.loads(path.read_text())
        joined = ", ".join(incident["joined"]) or "none"
        lines.append(f"incident {path.name}: {incident['attributes']['title']}; calls folded "
                     f"into it: {joined}")
    return lines
