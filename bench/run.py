"""Will it keep up, and will it hurt my PBX? One table that answers both, each figure a ratio
against the best the same building block does on this machine, measured side by side in the
same run (interleaved pairs, medians).

    python bench/run.py [--quick] [--mysql mysql+pymysql://root@127.0.0.1:3306]

It builds its own workload — a database of its own on the MariaDB server (dropped at the end),
recordings and state in a temporary folder (removed at the end), the easla test server on
loopback — and prints the table and the machine it ran on. `--quick` shrinks every size so the
whole table runs in well under a minute (CI runs it to keep it working; its figures mean little).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import Cost, child, machine, median, pairs, rotated, timed, waited  # noqa: E402
from workload import (  # noqa: E402
    NOTHING_INCOMING,
    ROOT,
    ZONE,
    Database,
    config_data,
    mixed_calls,
    mp3_file,
    place_recordings,
    recorded_calls,
    speech_origin,
    speech_pcm,
    to_toml,
    write_speech,
)

POLLER = str(Path(sys.executable).parent / "poller")
SERVER = """
import sys, threading, time
sys.path.insert(0, %r)
from easla_server import EaslaServer
with EaslaServer(objectdefs={(7, "incoming_call"): 42, (7, "incident"): 43}) as server:
    def forget():  # the benchmark uploads gigabytes over a run: keep none of them
        while True:
            time.sleep(0.5)
            for item in list(server.objects.values()):
                item["files"].clear()
    threading.Thread(target=forget, daemon=True).start()
    print(server.url, flush=True)
    sys.stdin.read()
"""
FLOOR = """
import sys, time
import sqlalchemy, pymysql
host, port, user, password, database, query = sys.argv[1:]
conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                       database=database, ssl_disabled=True)
with conn.cursor() as cursor:
    cursor.execute(query)
    cursor.fetchall()
conn.close()
"""
# the raw driver's stream: what reading through PyMySQL costs before any work on the rows
RAW_STREAM = """
import json, sys, time
import pymysql, pymysql.cursors
host, port, user, password, database, query = sys.argv[1:]
wall, cpu = time.perf_counter(), time.process_time()
conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                       database=database, charset="utf8mb4", ssl_disabled=True)
rows = 0
with conn.cursor(pymysql.cursors.SSCursor) as cursor:
    cursor.execute(query)
    while batch := cursor.fetchmany(1000):
        rows += len(batch)
conn.close()
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "rows": rows}))
"""
LAMEENC = """
import sys, wave
import lameenc
encoder = lameenc.Encoder()
encoder.set_bit_rate(32)
encoder.set_channels(1)
encoder.set_quality(7)
with wave.open(sys.argv[1], "rb") as wav, open(sys.argv[2], "wb") as out:
    encoder.set_in_sample_rate(wav.getframerate())
    while chunk := wav.readframes(wav.getframerate()):
        out.write(encoder.encode(chunk))
    out.write(encoder.flush())
"""
BUSY = "while True: pass"


@dataclass(frozen=True)
class Sizes:
    pairs: int  # interleaved pairs of the quick measurements
    rows: int  # cdr rows of the reading table
    rows_small: int  # the first rows of it, for the memory comparison
    tail: int  # rows of the small table of the cron-run comparison
    new_rows: int  # rows a cron run finds new
    deliver: int  # calls of the delivery row
    lengths: tuple[float, ...]  # seconds of speech transcoded
    rss_lengths: tuple[float, float]
    contention: float  # seconds of speech encoded against a busy competitor
    uploads: tuple[float, ...]  # MB
    e2e_calls: int
    talk: int  # seconds of each recorded call
    catchup: int  # calls waiting after the outage
    backfill: int  # calls of the measured backfill
    follow_polls: int
    directory_size: int = 100_000  # known callers in the directory of row 6
    directory_big: int = 1_000_000  # subscribers of row 9's directory CSV
    directory_read: int = 150_000  # the largest CSV a run reads whole (row 9)
    day_calls: int = 50_000  # calls of row 10's archive day


FULL = Sizes(pairs=5, rows=1_000_000, rows_small=100_000, tail=10_000, new_rows=1000,
             deliver=1000, lengths=(30, 180, 1800), rss_lengths=(60, 7200), contention=180,
             uploads=(1, 10, 30), e2e_calls=300, talk=180, catchup=600, backfill=1000,
             follow_polls=40)
QUICK = Sizes(pairs=1, rows=2000, rows_small=200, tail=500, new_rows=100, deliver=20,
              lengths=(2, 5, 10), rss_lengths=(5, 60), contention=10, uploads=(0.1, 0.5, 1),
              e2e_calls=6, talk=2, catchup=12, backfill=12, follow_polls=10, directory_size=500,
              directory_big=3000, directory_read=1000, day_calls=2500)


@dataclass
class Row:
    number: str
    what: str
    ours: str
    reference: str
    ratio: float | None
    goal: str
    met: bool | None
    note: str = ""


@dataclass
class Bench:
    sizes: Sizes
    db: Database
    work: Path
    url: str = ""  # the easla test server
    rows: list[Row] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)  # per-unit costs of the blocks
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def add(self, *args: Any, **kwargs: Any) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(f"  {row.number:<3} {row.what}: {row.ours} vs {row.reference}"
              f"{'' if row.ratio is None else f' = {row.ratio:.2f}x'}", file=sys.stderr,
              flush=True)

    def folder(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        return path

    @property
    def local_now(self) -> dt.datetime:
        from zoneinfo import ZoneInfo

        return self.now.astimezone(ZoneInfo(ZONE)).replace(tzinfo=None, microsecond=0)


# -- rows 1 and 2: idle runs, reading and grouping

def login(server: str) -> list[str]:
    """Host, port, user and password of the server's URL."""
    import sqlalchemy as sa

    url = sa.engine.make_url(server)
    return [url.host or "127.0.0.1", str(url.port or 3306), url.username or "root",
            url.password or ""]


def client_login(server: str) -> list[str]:
    """The `mariadb` client's options for the server's URL."""
    host, port, user, password = login(server)
    return ["-h", host, "-P", port, "-u", user, *([f"-p{password}"] if password else [])]


def idle(bench: Bench) -> None:
    """Row 1: `poller run` with nothing new against the floor, and a follow-mode poll."""
    end = bench.local_now - dt.timedelta(hours=1)
    bench.db.copy_table("cdr_idle")
    # an office of 300 calls a day: the day before now
    calls = list(mixed_calls(300, end - dt.timedelta(days=1), 288))
    bench.db.load(iter(calls), bench.work, "cdr_idle")
    folder = bench.folder("idle")
    data = config_data(folder, bench.db.url, source={"table": "cdr_idle"})
    config = folder / "poller.toml"
    config.write_text(to_toml(data))
    command = [POLLER, "--config", str(config), "-q", "run"]
    waited(command)  # the first run delivers the day: the measured ones find nothing new
    since = (bench.local_now - dt.timedelta(hours=5)).isoformat(sep=" ")
    query = (f"SELECT * FROM cdr_idle WHERE calldate >= '{since}' ORDER BY calldate")
    floor = [sys.executable, "-c", FLOOR, *login(bench.db.server), bench.db.name, query]
    ours, theirs = pairs(lambda: waited(command)[0], lambda: waited(floor)[0],
                         max(3, bench.sizes.pairs))
    bench.add("1", "idle cron run, wall", f"{ours.wall:.3f} s", f"{theirs.wall:.3f} s floor",
              ours.wall / theirs.wall, "<= 1.1x", ours.wall / theirs.wall <= 1.1,
              f"CPU {ours.cpu:.3f} s vs {theirs.cpu:.3f} s")
    bench.add("1", "idle cron run, CPU", f"{ours.cpu:.3f} s", f"{theirs.cpu:.3f} s floor",
              ours.cpu / theirs.cpu, "<= 1.1x", ours.cpu / theirs.cpu <= 1.1)
    polled = child("follow", config=data, query=query, polls=bench.sizes.follow_polls,
                   blocks=max(2, bench.sizes.pairs))
    reference = polled.extra["reference_cpu"] if polled.extra else 0.0
    bench.add("1", "follow: CPU per idle poll", f"{polled.cpu * 1e3:.1f} ms",
              f"{reference * 1e3:.1f} ms warm loop", polled.cpu / reference, "<= 2x",
              polled.cpu / reference <= 2,
              f"RSS {((polled.extra or {}).get('rss_growth_kb', 0)) / 1024:+.1f} MB over "
              f"{(polled.extra or {}).get('polls')} polls at 15 s, "
              f"{(polled.extra or {}).get('full_polls')} of them full (one a minute): "
              f"{(polled.extra or {}).get('full_ms', 0):.1f} ms each, a quiet one "
              f"{(polled.extra or {}).get('quiet_ms', 0):.1f} ms")


def reading(bench: Bench) -> None:
    """Row 2: a backfill reading and grouping the whole table vs the mariadb client."""
    sizes = bench.sizes
    end = bench.local_now - dt.timedelta(hours=2)
    spacing = 20.0
    count = int(sizes.rows / 1.63)
    first = end - dt.timedelta(seconds=count * spacing)
    started = time.perf_counter()
    loaded = bench.db.load(mixed_calls(count, first, spacing), bench.work)
    print(f"  loaded {loaded} cdr rows in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    bounds = bench.db.execute("SELECT calldate FROM cdr ORDER BY calldate LIMIT 1 OFFSET "
                              f"{min(sizes.rows_small, loaded - 1)}")
    small_until = bounds[0][0]
    since = first.replace(hour=0, minute=0, second=0)
    columns = ("calldate, clid, src, dst, dcontext, channel, dstchannel, lastapp, duration, "
               "billsec, disposition, uniqueid, linkedid, sequence, did, cnum, cnam, "
               "recordingfile, accountcode, userfield")

    def client(until: dt.datetime) -> Cost:
        query = (f"SELECT {columns} FROM cdr WHERE calldate >= '{since}' AND calldate < "
                 f"'{until}' ORDER BY calldate")
        return waited(["mariadb", *client_login(bench.db.server), "-B", "-N", "--quick",
                       bench.db.name, "-e", query])[0]

    def backfill(until: dt.datetime) -> Cost:
        data = config_data(bench.folder("scan"), bench.db.url, source=NOTHING_INCOMING)
        return child("run", config=data, since=since.isoformat(), until=until.isoformat())

    def raw(until: dt.datetime) -> Cost:
        query = (f"SELECT {columns} FROM cdr WHERE calldate >= '{since}' AND calldate < "
                 f"'{until}' ORDER BY calldate")
        _, out = waited([sys.executable, "-c", RAW_STREAM, *login(bench.db.server),
                         bench.db.name, query], stdout=subprocess.PIPE)
        figures = json.loads(out.decode().strip().splitlines()[-1])
        return Cost(figures["wall"], figures["cpu"], 0, figures)

    whole_until = end + dt.timedelta(days=1)
    small, small_client = pairs(lambda: backfill(small_until), lambda: client(small_until),
                                max(1, sizes.pairs // 2))
    big, big_raw, big_client = rotated([lambda: backfill(whole_until),
                                        lambda: raw(whole_until),
                                        lambda: client(whole_until)], max(1, sizes.pairs // 2))
    rows = loaded
    speed = big_raw.wall / big.wall
    bench.best["row_s"] = big_client.wall / max(rows, 1)
    bench.add("2", f"backfill read+group {rows:,} rows, rows/s",
              f"{rows / big.wall:,.0f}/s", f"{rows / big_raw.wall:,.0f}/s raw PyMySQL",
              speed, ">= 0.6x", speed >= 0.6,
              f"{big.wall:.1f} s vs {big_raw.wall:.1f} s (PyMySQL's unbuffered cursor, "
              f"fetchmany(1000), the same query) vs {big_client.wall:.1f} s (mariadb client, "
              f"{rows / big_client.wall:,.0f}/s: {big_client.wall / big.wall:.2f}x); "
              f"{sizes.rows_small:,} rows: {small.wall:.1f} s vs {small_client.wall:.1f} s "
              f"(client); the backfill read {(big.extra or {}).get('rows', 0):,} rows (each day "
              "reads the lookback past its end, for the legs of its last calls)")
    cpu = big.cpu / max(big_raw.cpu, 1e-3)
    bench.add("2", "backfill read+group, CPU", f"{big.cpu:.1f} s",
              f"{big_raw.cpu:.2f} s raw PyMySQL", cpu, "<= 2x", cpu <= 2,
              f"mariadb client {big_client.cpu:.2f} s ({big.cpu / max(big_client.cpu, 1e-3):.1f}x)")
    growth = (big.rss_kb - small.rss_kb) / 1024
    bench.add("2", f"peak RSS {rows:,} vs {sizes.rows_small:,} rows",
              f"{big.rss_kb / 1024:.0f} MB", f"{small.rss_kb / 1024:.0f} MB", None,
              "<= +10 MB", growth <= 10, f"{growth:+.1f} MB")
    tail_runs(bench, end)


# the poller's Master.csv source reading a whole file (its rotated-copies mode), every line
# made a leg; against the csv module reading the same file into lists of strings
READ_MASTER_CSV = """
import sys
from poller.config.schema import CsvConfig, IncomingRules, SourceConfig
from poller.source.mastercsv import CsvSource
config = SourceConfig(kind="csv", csv=CsvConfig(path=sys.argv[1]),
                      incoming=IncomingRules(did_set=False))
source = CsvSource(config, backfill=True)
end, position, legs = (source.newest_position("offset") or -1) + 1, 0, 0
while position < end:
    legs += len(source.read_window(position, position + (4 << 20)))
    position += 4 << 20
print(legs)
"""
CSV_MODULE = ("import csv, sys\n"
              "print(sum(1 for _ in csv.reader(open(sys.argv[1], newline='', encoding='utf-8'))))")


def master_csv(bench: Bench) -> None:
    """Row 2c: reading Master.csv (source.kind = "csv") vs `wc -l` and Python's csv module on
    the same file, and a backfill over it through the whole read phase."""
    from poller.source.csvlines import cdr_csv_line

    sizes = bench.sizes
    folder = bench.folder("csv")
    path = folder / "Master.csv"
    count = int(sizes.rows / 1.63)
    first = bench.local_now - dt.timedelta(hours=2, seconds=count * 20)
    lines = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for call in mixed_calls(count, first, 20.0):
            handle.write("".join(cdr_csv_line(row) for row in call))
            lines += len(call)
    size = path.stat().st_size

    def ours() -> Cost:
        return waited([sys.executable, "-c", READ_MASTER_CSV, str(path)])[0]

    def module() -> Cost:
        return waited([sys.executable, "-c", CSV_MODULE, str(path)])[0]

    read, parsed = pairs(ours, module, sizes.pairs)
    counted, _ = pairs(lambda: waited(["wc", "-l", str(path)])[0], module, 1)
    data = config_data(bench.folder("csv-run"), "", source={
        "kind": "csv", "csv": {"path": str(path)}, **NOTHING_INCOMING},
        recordings={"name": "{uniqueid}.wav"})
    backfill = child("run", config=data, since=first.replace(hour=0, minute=0,
                                                               second=0).isoformat())
    ratio = parsed.wall / read.wall
    bench.add("2c", f"Master.csv read {lines:,} lines ({size / 2**20:.0f} MB), lines/s",
              f"{lines / read.wall:,.0f}/s", f"{lines / parsed.wall:,.0f}/s csv module",
              ratio, ">= 0.3x", ratio >= 0.3,
              f"{read.wall:.1f} s (each line made a leg) vs {parsed.wall:.1f} s (csv.reader "
              f"into lists) vs {counted.wall:.2f} s (wc -l: {lines / counted.wall:,.0f} "
              f"lines/s); a backfill over the file through the read phase: "
              f"{backfill.wall:.1f} s, {lines / backfill.wall:,.0f} lines/s, peak RSS "
              f"{backfill.rss_kb / 1024:.0f} MB")


def tail_runs(bench: Bench, end: dt.datetime) -> None:
    """Row 2: one cron run finding the same new rows at the end of a small and a big table."""
    sizes = bench.sizes
    bench.db.copy_table("cdr_tail")
    bench.db.execute(f"INSERT INTO cdr_tail SELECT * FROM cdr ORDER BY calldate DESC "
                     f"LIMIT {sizes.tail}")
    mark = bench.db.execute(f"SELECT calldate FROM cdr ORDER BY calldate DESC LIMIT 1 "
                            f"OFFSET {sizes.new_rows}")[0][0]

    def cron(table: str) -> Cost:
        data = config_data(bench.folder("cron"), bench.db.url,
                           source={**NOTHING_INCOMING, "table": table,
                                   "start": mark.isoformat(sep=" ")})
        return child("run", config=data)

    big, small = pairs(lambda: cron("cdr"), lambda: cron("cdr_tail"), max(3, sizes.pairs))
    ratio = big.wall / small.wall
    total = bench.db.execute("SELECT COUNT(*) FROM cdr")[0][0]
    bench.add("2", f"cron run, {sizes.new_rows:,} new rows: {total:,} vs {sizes.tail:,}-row "
              "table", f"{big.wall:.2f} s", f"{small.wall:.2f} s", ratio, "<= 1.2x",
              ratio <= 1.2, f"CPU {big.cpu:.2f} s vs {small.cpu:.2f} s; "
              f"{(big.extra or {}).get('rows')} rows read")


# -- row 2b: delivery without recordings

def delivery(bench: Bench) -> None:
    sizes = bench.sizes
    bench.db.copy_table("cdr_deliver")
    end = bench.local_now - dt.timedelta(hours=1)
    shapes = list(mixed_calls(sizes.deliver, end - dt.timedelta(hours=3),
                              3 * 3600 / sizes.deliver))
    bench.db.load(iter(shapes), bench.work, "cdr_deliver")
    now = bench.now.isoformat()

    def deliver(kind: str) -> Cost:
        target: dict[str, Any] = {"kind": kind}
        if kind == "easla":
            target["easla"] = {"url": bench.url, "login": "poller", "password": "secret"}
        folder = bench.folder("deliver")
        data = config_data(folder, bench.db.url, source={"table": "cdr_deliver",
                                                          "start": str(end - dt.timedelta(
                                                              hours=3, minutes=1))},
                           target=target)
        if kind == "easla":
            data["target"].pop("archive", None)
        # the first run reads every call and delivers none: the measured one delivers them
        return child("run", config=data, before=[now], before_limit=0, now=now)

    results: dict[str, list[Cost]] = {"archive": [], "easla": [], "floor": []}
    for index in range(max(1, sizes.pairs // 2)):
        order = ["archive", "easla", "floor"]
        for kind in order[index % 3:] + order[:index % 3]:
            if kind == "floor":
                calls = (results["archive"][-1].extra or {}).get("delivered", sizes.deliver) \
                    if results["archive"] else sizes.deliver
                results[kind].append(child("floor", folder=str(bench.folder("floor")),
                                           calls=calls))
            else:
                results[kind].append(deliver(kind))
    floor = median(results["floor"])
    per_floor = floor.wall / max(1, (floor.extra or {}).get("calls", sizes.deliver))
    bench.best["commit_s"] = per_floor
    for kind in ("archive", "easla"):
        cost = median(results[kind])
        delivered = (cost.extra or {}).get("delivered", 0)
        per_call = cost.wall / max(1, delivered)
        ratio = per_call / per_floor
        # easla's goal allows for its two round trips to a server on the same cores
        goal = 2 if kind == "archive" else 3
        bench.add("2b", f"deliver {delivered} calls, no recordings, {kind}",
                  f"{per_call * 1e3:.2f} ms/call", f"{per_floor * 1e3:.2f} ms/call floor",
                  ratio, f"<= {goal}x", ratio <= goal,
                  f"{1 / per_call:,.0f} calls/s; CPU {cost.cpu / max(1, delivered) * 1e3:.2f} "
                  "ms/call")


# -- rows 3 and 4: transcoding, and the PBX's share of the core

def transcoding(bench: Bench) -> None:
    """Row 3: CPU per audio second of a run's encoder child (started once, as a run's first
    recording starts it; each job's CPU as the child counts it, plus the poller's side of the
    pipe) against LAME in this process, a lameenc child and ffmpeg, interleaved; then the
    child's peak memory per job for a short and a long recording."""
    from poller.config.schema import Seconds, TranscodeConfig
    from poller.recordings.transcode import EncoderProcess, to_mp3

    sizes = bench.sizes
    pcm = speech_pcm()
    config = TranscodeConfig(timeout=Seconds(7200))
    out = bench.work / "out.mp3"
    with EncoderProcess(config) as encoder:
        for seconds in sizes.lengths:
            source = write_speech(bench.work / f"speech-{seconds:g}.wav", seconds, pcm)
            encoder.encode([source], out)  # the run's first call: the start-up is paid here
            measured: dict[str, list[Cost]] = {"poller": [], "in-process": [], "ffmpeg": [],
                                               "lameenc": []}
            runs = {
                "poller": lambda s=source: _encoder_job(encoder, s, out),
                "in-process": lambda s=source: timed(lambda: _lame(s, out))[0],
                "ffmpeg": lambda s=source: waited(["ffmpeg", "-nostdin", "-v", "error", "-y",
                                                   "-i", str(s), "-ac", "1", "-b:a", "32k",
                                                   str(out)])[0],
                "lameenc": lambda s=source: waited([sys.executable, "-c", LAMEENC, str(s),
                                                    str(out)])[0],
            }
            for index in range(max(5, sizes.pairs)):
                names = list(runs)
                for name in names[index % 4:] + names[:index % 4]:
                    measured[name].append(runs[name]())
            cpu = {name: median(costs).cpu for name, costs in measured.items()}
            best = min(cpu["in-process"], cpu["ffmpeg"], cpu["lameenc"])
            bench.best[f"encode_{seconds:g}"] = best / seconds
            ratio = cpu["poller"] / best
            note = (f"LAME in-process {cpu['in-process'] / seconds * 1e3:.2f}, lameenc child "
                    f"{cpu['lameenc'] / seconds * 1e3:.2f}, ffmpeg "
                    f"{cpu['ffmpeg'] / seconds * 1e3:.2f} ms")
            if seconds == sizes.lengths[0]:
                one_shot = median([timed(lambda s=source: to_mp3([s], out, config))[0]
                                   for _ in range(3)]).cpu
                note += (f"; the child's start-up, paid once per run: "
                         f"{(one_shot - cpu['poller']) * 1e3:.0f} ms CPU (a one-call run: "
                         f"{one_shot / seconds * 1e3:.2f} ms per audio s)")
            bench.add("3", f"transcode {_length(seconds)} speech, CPU per audio s",
                      f"{cpu['poller'] / seconds * 1e3:.2f} ms",
                      f"{best / seconds * 1e3:.2f} ms LAME in-process", ratio, "<= 1.1x",
                      ratio <= 1.1, note)
            source.unlink()
        peaks = []
        for seconds in sizes.rss_lengths:
            source = write_speech(bench.work / f"rss-{seconds:g}.wav", seconds, pcm)
            peaks.append(encoder.encode([source], out).peak_rss_kb)
            source.unlink()
    growth = (peaks[1] - peaks[0]) / 1024
    bench.add("3", f"encoder peak RSS {_length(sizes.rss_lengths[1])} vs "
              f"{_length(sizes.rss_lengths[0])}", f"{peaks[1] / 1024:.1f} MB",
              f"{peaks[0] / 1024:.1f} MB", None, "<= +20 MB", growth <= 20,
              f"{growth:+.1f} MB (each job's own peak in the run's one encoder child, the "
              "whole tree for a WAV)")


def _encoder_job(encoder: Any, source: Path, out: Path) -> Cost:
    """One job of a running encoder child: this process's CPU on it plus the child's own."""
    cost, encoded = timed(lambda: encoder.encode([source], out))
    return Cost(cost.wall, cost.cpu + encoded.cpu, cost.rss_kb)


def _lame(source: Path, out: Path) -> None:
    """LAME in this process, as the encoder child drives it (1 s chunks, quality 7)."""
    import wave

    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(32)
    encoder.set_channels(1)
    encoder.set_quality(7)
    with wave.open(str(source), "rb") as wav, open(out, "wb") as target:
        encoder.set_in_sample_rate(wav.getframerate())
        while chunk := wav.readframes(wav.getframerate()):
            target.write(encoder.encode(chunk))
        target.write(encoder.flush())


def contention(bench: Bench) -> None:
    """Row 4: the share of one core a busy process in another session keeps while the
    encoder runs on the same core."""
    source = write_speech(bench.work / "contention.wav", bench.sizes.contention)
    out = bench.work / "contention.mp3"
    poller_way = [sys.executable, "-m", "poller.recordings.encoder", "--nice", "19", str(out),
                  str(source)]
    plain = ["nice", "-n", "19", sys.executable, "-m", "poller.recordings.encoder", "--nice", "0",
             str(out), str(source)]
    faster = [*poller_way[:4], "10", *poller_way[5:]]
    cases = {"poller's default (transcode.nice = 19)": (poller_way, True),
             "poller's settings, transcode.nice = 10": (faster, True),
             "plain nice -n 19": (plain, False)}
    core = sorted(os.sched_getaffinity(0))[0]
    results: dict[str, list[float]] = {name: [] for name in cases}
    alone: list[float] = []
    for index in range(max(1, bench.sizes.pairs // 2)):
        for name, (command, session) in cases.items():
            share, seconds = _share(command, session, core)
            results[name].append(share)
            alone.append(_share(None, True, core, seconds)[0])
        del index
    reference = sorted(alone)[len(alone) // 2]
    for name, shares in results.items():
        share = sorted(shares)[len(shares) // 2] / reference
        bench.add("4", f"competitor's share of its core, encoder with {name}",
                  f"{share * 100:.0f} %", f"{reference * 100:.0f} % of the core alone", share,
                  ">= 95 %", share >= 0.95)
    source.unlink()


def _share(command: list[str] | None, session: bool, core: int,
           seconds: float = 0.0) -> tuple[float, float]:
    """The CPU share a busy loop in a session of its own gets on `core` while `command` runs
    there (or for `seconds`, alone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", BUSY],
                            start_new_session=True)
    try:
        time.sleep(0.3)
        before, started = _ticks(busy.pid), time.perf_counter()
        if command is None:
            time.sleep(seconds)
        else:
            subprocess.run(["taskset", "-c", str(core), *command], check=True,
                           start_new_session=session, stdout=subprocess.DEVNULL,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - started
        used = (_ticks(busy.pid) - before) / ticks
    finally:
        busy.kill()
        busy.wait()
    return used / wall, wall


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# -- row 5: upload

def upload(bench: Bench) -> None:
    sizes = bench.sizes
    folder = bench.folder("upload")
    files = [str(mp3_file(folder / f"{mb:g}MB.mp3", mb)) for mb in sizes.uploads]
    work = {"url": bench.url, "state": str(folder), "files": files, "call": _call_json()}
    measured: dict[str, list[dict[str, Any]]] = {"poller": [], "raw": []}
    for index in range(max(1, sizes.pairs // 2)):
        for how in (("poller", "raw") if index % 2 == 0 else ("raw", "poller")):
            measured[how].append((child("upload", how=how, **work).extra or {})["files"])
    for mb, path in zip(sizes.uploads, files, strict=True):
        name = Path(path).name
        cpu = {how: _median([r[name]["cpu"] for r in runs]) for how, runs in measured.items()}
        rss = {how: _median([r[name]["rss_growth_kb"] for r in runs]) / 1024
               for how, runs in measured.items()}
        bench.best[f"upload_{mb:g}"] = cpu["raw"] / mb
        ratio = cpu["poller"] / max(cpu["raw"], 1e-4)
        bench.add("5", f"addFile {mb:g} MB, client CPU", f"{cpu['poller'] * 1e3:.0f} ms",
                  f"{cpu['raw'] * 1e3:.0f} ms raw POST", ratio, "<= 1.5x", ratio <= 1.5)
        bench.add("5", f"addFile {mb:g} MB, peak RSS added", f"{rss['poller']:.1f} MB",
                  f"{rss['raw']:.1f} MB raw POST", None, f"<= {mb + 40:g} MB",
                  rss["poller"] <= mb + 40)


RECEIVER = """
import sys, threading, time
sys.path.insert(0, %r)
from webhook_receiver import WebhookReceiver
with WebhookReceiver() as receiver:
    def forget():  # the benchmark uploads gigabytes over a run: keep none of them
        while True:
            time.sleep(0.5)
            with receiver.lock:
                receiver.seen.requests.clear()
                receiver.seen.messages.clear()
    threading.Thread(target=forget, daemon=True).start()
    print(receiver.url, receiver.secret, flush=True)
    sys.stdin.read()
"""


def webhook_upload(bench: Bench) -> None:
    """Row 5b: a call with its MP3 to the loopback webhook receiver (its own process, which
    verifies every request), against a raw standard-library POST of the same signed body."""
    sizes = bench.sizes
    folder = bench.folder("webhook")
    files = [str(mp3_file(folder / f"{mb:g}MB.mp3", mb)) for mb in sizes.uploads]
    server = subprocess.Popen([sys.executable, "-c", RECEIVER % str(ROOT / "tests")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url, secret = server.stdout.readline().split()
        work = {"url": url, "secret": secret, "files": files, "call": _call_json()}
        measured: dict[str, list[dict[str, Any]]] = {"poller": [], "raw": []}
        for index in range(max(1, sizes.pairs // 2)):
            for how in (("poller", "raw") if index % 2 == 0 else ("raw", "poller")):
                measured[how].append(
                    (child("webhook_upload", how=how, **work).extra or {})["files"])
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    for mb, path in zip(sizes.uploads, files, strict=True):
        name = Path(path).name
        cpu = {how: _median([r[name]["cpu"] for r in runs]) for how, runs in measured.items()}
        rss = {how: _median([r[name]["rss_growth_kb"] for r in runs]) / 1024
               for how, runs in measured.items()}
        ratio = cpu["poller"] / max(cpu["raw"], 1e-4)
        bench.add("5b", f"webhook {mb:g} MB, client CPU", f"{cpu['poller'] * 1e3:.0f} ms",
                  f"{cpu['raw'] * 1e3:.0f} ms raw POST", ratio, "<= 1.5x", ratio <= 1.5,
                  note="signed in a first pass over the parts, then streamed from disk"
                  if mb == sizes.uploads[0] else "")
        bench.add("5b", f"webhook {mb:g} MB, peak RSS added", f"{rss['poller']:.1f} MB",
                  f"{rss['raw']:.1f} MB raw POST", None, f"< {mb:g} MB (the file)",
                  rss["poller"] < mb)


# -- rows 6, 7 and 8: whole runs with recordings

def recorded_table(bench: Bench, table: str, calls: list[list[dict[str, Any]]],
                   monitor: Path) -> None:
    master = bench.work / f"talk-{bench.sizes.talk}.wav"
    if not master.exists():
        write_speech(master, bench.sizes.talk)
    bench.db.copy_table(table)
    bench.db.load(iter(calls), bench.work, table)
    place_recordings(calls, monitor, master)


def easla_data(bench: Bench, folder: Path, **source: Any) -> dict[str, Any]:
    data = config_data(folder, bench.db.url, source=source,
                       target={"kind": "easla", "easla": {"url": bench.url, "login": "poller",
                                                          "password": "secret"}})
    data["target"].pop("archive", None)
    return data


def end_to_end(bench: Bench) -> None:
    sizes = bench.sizes
    folder = bench.folder("e2e")
    end = bench.local_now - dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=3)
    calls = list(recorded_calls(sizes.e2e_calls, start, 3 * 3600 / sizes.e2e_calls, sizes.talk))
    recorded_table(bench, "cdr_e2e", calls, folder / "monitor")
    data = easla_data(bench, folder, table="cdr_e2e",
                      start=str(start - dt.timedelta(minutes=1)))
    cost = child("run", config=data, now=bench.now.isoformat())
    delivered = (cost.extra or {}).get("delivered", 0)
    per_call = cost.wall / max(1, delivered)
    limit = per_call_limit(bench)
    bench.best["e2e_call_s"] = per_call
    ratio = limit / per_call
    cpu = cost.cpu / max(1, delivered)
    bench.add("6", f"end to end, {delivered} calls with {_length(sizes.talk)} recordings, "
              "easla", f"{3600 / per_call:,.0f} calls/h", f"{3600 / limit:,.0f} calls/h limit",
              ratio, ">= 0.8x", ratio >= 0.8,
              f"{per_call * 1e3:.0f} ms/call vs {limit * 1e3:.0f} ms: read + encode + upload "
              f"+ one commit at their best; CPU {cpu * 1e3:.0f} ms/call (the limit's "
              f"{limit / cpu:.2f}x), the encoder child's included")


def callers_cost(bench: Bench) -> None:
    """Row 6, with caller identification and incidents on: whole runs (read, identify, decide,
    deliver; no recordings) into easla, against the same runs without them, interleaved. The
    callers are a third as many numbers (three calls in a row each), half of them in a
    directory of `sizes.directory_size` written as a CRM exports them; missed and busy calls of
    known callers open incidents, repeated calls fold. The directory's copy in state.dir is
    made before the measured run, as every run but the first finds it (its first load is
    bench/directory.py's)."""
    sizes = bench.sizes
    bench.db.copy_table("cdr_callers")
    end = bench.local_now - dt.timedelta(hours=1)
    callers = max(3, sizes.deliver // 3)
    calls = []
    for number, rows in enumerate(mixed_calls(sizes.deliver, end - dt.timedelta(hours=3),
                                              3 * 3600 / sizes.deliver)):
        if rows[0]["src"].lstrip("+").isdigit() and len(rows[0]["src"].lstrip("+")) == 11:
            src = f"+7916{(number // 3) % callers:07d}"  # three calls in a row: folds
            rows = [dict(row, src=src, clid=f'"{src}" <{src}>') for row in rows]
        calls.append(rows)
    bench.db.load(iter(calls), bench.work, "cdr_callers")
    directory = bench.work / "callers.csv"
    with directory.open("w", encoding="utf-8") as out:
        out.write("number,name,id\n")
        for n in range(0, callers, 2):  # the known half, as a CRM writes numbers
            out.write(f"8 916 {n:07d},Customer {n},C-{n}\n")
        for n in range(sizes.directory_size - (callers + 1) // 2):
            out.write(f"+7 495 {n:07d},Other {n},O-{n}\n")
    now = bench.now.isoformat()

    def run(enriched: bool) -> Cost:
        data = easla_data(bench, bench.folder("callers"), table="cdr_callers",
                          start=str(end - dt.timedelta(hours=3, minutes=1)))
        if enriched:
            data["callers"] = {"country": "RU", "csv": str(directory)}
            data["incidents"] = {"statuses": ["unanswered", "busy"], "callers": "known"}
        return child("run", config=data, now=now, warm_directory=enriched)

    plain, enriched = pairs(lambda: run(False), lambda: run(True), max(1, sizes.pairs // 2))
    delivered = max(1, (enriched.extra or {}).get("delivered", 0))
    incidents = (enriched.extra or {}).get("incidents", 0)
    joined = (enriched.extra or {}).get("joined", 0)
    extra_wall = (enriched.wall - plain.wall) / delivered
    extra_cpu = (enriched.cpu - plain.cpu) / delivered
    bench.add("6", f"callers + incidents on, {delivered} calls, extra per call",
              f"{extra_wall * 1e3:+.2f} ms", f"{plain.wall / delivered * 1e3:.2f} ms/call off",
              None, "report", None,
              f"CPU {extra_cpu * 1e3:+.2f} ms/call; {incidents} incidents made (one "
              f"createObjectref each), {joined} calls folded into them; a directory of "
              f"{sizes.directory_size:,} known callers")


class MissingRows(Exception):
    """A row whose reference is other rows' figures, run without them."""


def per_call_limit(bench: Bench) -> float:
    """One recorded call at the best each block does: its row read by the client, its audio
    encoded by the better encoder, its MP3 posted raw, one durable commit and file write."""
    sizes = bench.sizes
    encodes = [(abs(float(k.split("_")[1]) - sizes.talk), v) for k, v in bench.best.items()
               if k.startswith("encode_")]
    uploads = [v for k, v in bench.best.items() if k.startswith("upload_")]
    if not encodes or not uploads:
        raise MissingRows("compares with rows 2, 2b, 3 and 5: run those too")
    encode, upload = min(encodes)[1], min(uploads)
    mp3_mb = sizes.talk * 32_000 / 8 / 2**20
    return (bench.best.get("row_s", 0.0) + encode * sizes.talk + upload * mp3_mb
            + bench.best.get("commit_s", 0.0))


def catch_up(bench: Bench) -> None:
    """Row 7: 2 hours of a 300-calls-an-hour centre waiting for the target; the runs that
    follow are real (the same calls, recordings and easla server), their clock simulated:
    each run is given `now` = the minute (cron) or poll (follow) it would start at, and the
    next starts at the next minute (a cron run that finds the lock held exits) or an interval
    after it ends."""
    if "e2e_call_s" not in bench.best:
        raise MissingRows("compares with row 6: run it too")
    for mode, interval in (("cron", 60.0), ("follow", 15.0)):
        minutes, runs, calls = _simulate(bench, mode, interval)
        ideal = calls * bench.best["e2e_call_s"] / 60
        bench.add("7", f"catch-up, {bench.sizes.catchup} calls waiting, {mode}",
                  _minutes(minutes), f"{_minutes(ideal)} of work", None, "report", None,
                  f"{runs} runs; {calls} calls delivered meanwhile")


def _simulate(bench: Bench, mode: str, interval: float) -> tuple[float, int, int]:
    from workload import make_config

    from poller.ledger.store import Ledger
    from poller.model import Stage
    from poller.run.options import RunOptions
    from poller.run.pipeline import run_once

    sizes = bench.sizes
    folder = bench.folder(f"catchup-{mode}")
    back_at = bench.now.replace(microsecond=0) - dt.timedelta(hours=30)
    local_back = back_at.astimezone(_zone()).replace(tzinfo=None)
    spacing = 12.0  # 300 calls an hour
    # the calls waiting are those that ended, and settled, while the target was down
    last = local_back - dt.timedelta(seconds=sizes.talk + 3 + 60)
    waiting = list(recorded_calls(sizes.catchup, last - dt.timedelta(
        seconds=spacing * (sizes.catchup - 1)), spacing, sizes.talk))
    later = list(recorded_calls(sizes.catchup * 4, last + dt.timedelta(seconds=spacing),
                                spacing, sizes.talk, offset=sizes.catchup))
    table = f"cdr_catchup_{mode}"
    recorded_table(bench, table, waiting, folder / "monitor")
    place_recordings(later, folder / "monitor", bench.work / f"talk-{sizes.talk}.wav")
    config = make_config(easla_data(bench, folder, table=table, start=str(
        waiting[0][0]["calldate"] - dt.timedelta(minutes=1))))
    keys = {rows[0]["linkedid"] for rows in waiting}
    clock, runs, delivered, inserted = back_at, 0, 0, 0
    done: set[str] = set()
    while len(done & keys) < len(keys) and runs < 500:
        # rows are written when a call ends: insert those that ended by now
        ready = [rows for rows in later[inserted:]
                 if rows[0]["calldate"] + dt.timedelta(seconds=rows[0]["duration"])
                 <= clock.astimezone(_zone()).replace(tzinfo=None)]
        if ready:
            bench.db.load(iter(ready), bench.work, table)
            inserted += len(ready)
        started = time.perf_counter()
        report = run_once(config, RunOptions(now=clock))
        took = time.perf_counter() - started
        runs += 1
        delivered += report.delivered_count
        clock += dt.timedelta(seconds=took)
        ledger = Ledger(config.state.database_url, create=False)
        done = {e.key for e in ledger.entries([Stage.DONE], limit=10**6)}
        ledger.close()
        if mode == "cron":
            clock = (clock + dt.timedelta(minutes=1)).replace(second=0)
        else:
            clock += dt.timedelta(seconds=interval)
    return (clock - back_at).total_seconds() / 60, runs, delivered


def _zone() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(ZONE)


def backfill_year(bench: Bench) -> None:
    """Row 8: a measured backfill of recorded calls at 300 a day, projected to a year."""
    sizes = bench.sizes
    folder = bench.folder("year")
    days = max(1, -(-sizes.backfill // 300))
    first = (bench.local_now - dt.timedelta(days=days + 2)).replace(hour=8, minute=0, second=0)
    calls = list(recorded_calls(sizes.backfill, first, 86400 / 300, sizes.talk,
                                offset=10_000_000))
    recorded_table(bench, "cdr_year", calls, folder / "monitor")
    data = easla_data(bench, folder, table="cdr_year")
    since = first.replace(hour=0)
    cost = child("run", config=data, since=since.isoformat(),
                 until=(since + dt.timedelta(days=days + 1)).isoformat(),
                 now=bench.now.isoformat())
    delivered = (cost.extra or {}).get("delivered", 0)
    year = 365 * 300
    hours = cost.wall / max(1, delivered) * year / 3600
    limit = per_call_limit(bench) * year / 3600
    bench.add("8", f"backfill a year of 300 calls/day ({_length(sizes.talk)} recordings)",
              f"{hours:.1f} h", f"{limit:.1f} h limit", limit / hours, ">= 0.8x",
              limit / hours >= 0.8,
              f"projected from {delivered} calls in {cost.wall:.0f} s")


# -- the table

def _length(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _minutes(minutes: float) -> str:
    return f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _call_json() -> dict[str, Any]:
    return {"key": "1795675107.0", "start": "2026-11-26T09:38:27+03:00",
            "end": "2026-11-26T09:41:36+03:00", "number": "+79161002301", "name": "",
            "did": "74951230001", "duration": 189, "talk_time": 180, "wait_time": 3,
            "status": "answered", "answered_by": "201", "incoming": True, "recordings": [],
            "expects_recording": True, "first_calldate": "2026-11-26T09:38:27",
            "last_calldate": "2026-11-26T09:38:27"}


# -- row 9: a directory of a million subscribers

def big_directory(bench: Bench) -> None:
    from directory import make_csv, numbers

    from poller.callers import readers

    sizes = bench.sizes
    limit = readers.MAX_CSV_ROWS if sizes is FULL else sizes.directory_read
    for rows in (sizes.directory_big, sizes.directory_read):
        folder = bench.folder("directory")
        path = folder / "callers.csv"
        make_csv(path, rows)
        wanted = [e164 for _, e164 in numbers(rows)[:: max(1, rows // 100)]][:100]
        work = {"csv": str(path), "state": str(folder / "state"), "numbers": wanted,
                "now": bench.now.isoformat()}
        for minutes, what in ((0, "first run"), (11, "run after refresh")):
            cost = child("directory", **work, minutes=minutes)
            extra = cost.extra or {}
            refused = extra.get("refused")
            within = cost.wall < 20 and cost.rss_kb / 1024 < 300
            ours = ("refused" if refused else f"{cost.wall:.1f} s, {cost.rss_kb / 1024:.0f} MB")
            bench.add("9", f"directory CSV of {rows:,} rows, {what}", ours,
                      "20 s, 300 MiB", None,
                      "< 20 s, < 300 MiB, or refused naming :numbers",
                      (":numbers" in refused) if refused else within,
                      (f"refused in {cost.wall:.2f} s ({cost.rss_kb / 1024:.0f} MB): "
                       f"{refused.split(': ', 2)[-1][:90]}..." if refused else
                       f"{extra.get('found')} of {len(wanted)} numbers found; the limit "
                       f"{limit:,} rows"))
            if refused:
                break


# -- row 10: an archive day of 50,000 calls

def write_day(root: Path, day: dt.date, count: int, first: int = 0) -> list[Path]:
    """`count` call records spread over `day` in the archive's shape: every status, names,
    no recordings."""
    from zoneinfo import ZoneInfo

    statuses = ("answered",) * 6 + ("unanswered", "unanswered", "busy", "impossible")
    opening = dt.datetime.combine(day, dt.time(0, 0, 30), ZoneInfo(ZONE))
    folder = root / f"{day:%Y/%m/%d}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(first, first + count):
        status = statuses[i % len(statuses)]
        start = opening + dt.timedelta(seconds=i * 86_000 / max(count, 1))
        key = f"{1795600000 + i}.{i}"
        data = {"key": key, "start": start.isoformat(), "number": f"+7916{1000000 + i:07d}",
                "name": f"Client {i}" if i % 3 == 0 else "", "did": "74951230001",
                "duration": 20 + i % 300, "talk_time": 10 + i % 250 if status == "answered"
                else 0, "wait_time": 10, "status": status,
                "answered_by": str(201 + i % 5) if status == "answered" else "",
                "recording": None, "recording_problem": None if status == "answered"
                else "empty"}
        path = folder / f"{key}.json"
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
        paths.append(path)
    return paths


def day_page(bench: Bench) -> None:
    count = bench.sizes.day_calls
    day = dt.date(2026, 11, 26)
    costs = {}
    for calls in (count, 1000):
        root = bench.folder("day")
        write_day(root, day, calls)
        work = {"root": str(root), "day": day.isoformat()}
        built = child("site", **work, mode="build")
        folder = root / f"{day:%Y/%m/%d}"
        appended = []
        for n in range(max(3, bench.sizes.pairs)):  # one new call at the end of the day
            (record,) = write_day(root, day, 1, first=calls + n)
            # the new record sorts last: its start is moved past the day's last call
            data = json.loads(record.read_text())
            data["start"] = f"{day}T23:59:{n:02d}+03:00"
            record.write_text(json.dumps(data))
            appended.append(child("site", **work, mode="append", record=str(record)))
        costs[calls] = (built, median(appended), folder)
    built, appended, folder = costs[count]
    page = (folder / "index.html").stat().st_size
    parts = sum(path.stat().st_size for path in folder.glob("calls-*.js"))
    bench.add("10", f"day page of {count:,} calls, size", f"{page / 2**20:.2f} MB",
              "2 MB", page / 2**20 / 2, "< 2 MB", page < 2 * 2**20,
              f"{len(list(folder.glob('calls-*.js')))} parts beside it, {parts / 2**20:.1f} MB; "
              f"the whole day written in {built.wall:.1f} s (peak RSS "
              f"{built.rss_kb / 1024:.0f} MB)")
    try:
        opened = child("open", url=(folder / "index.html").as_uri(), times=3)
    except Exception as exc:  # no Chromium or Playwright here: the row says so
        print(f"row 10: the page was not opened: {exc}", file=sys.stderr)
    else:
        bench.add("10", f"day page of {count:,} calls, opened in Chromium", f"{opened.wall:.2f} s",
                  "2 s", opened.wall / 2, "< 2 s", opened.wall < 2,
                  f"{(opened.extra or {}).get('rows')} rows on screen; median of 3 fresh tabs")
    small = costs[1000][1]
    bench.add("10", f"one new call: day of {count:,} vs 1,000 calls", f"{appended.wall:.3f} s",
              f"{small.wall:.3f} s", appended.wall / small.wall, "<= 1.5x",
              appended.wall / small.wall <= 1.5,
              f"CPU {appended.cpu:.3f} s vs {small.cpu:.3f} s; peak RSS "
              f"{appended.rss_kb / 1024:.0f} vs {small.rss_kb / 1024:.0f} MB")


def table(rows: list[Row]) -> str:
    header = ("#", "measure", "poller", "reference (same run)", "ratio", "goal", "met")
    lines = [[r.number, r.what, r.ours, r.reference,
              "" if r.ratio is None else f"{r.ratio:.2f}x", r.goal,
              {True: "yes", False: "NO", None: "-"}[r.met]] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
            for line in lines]
    notes = [f"{r.number} {r.what}: {r.note}" for r in rows if r.note]
    return "\n".join(out + [""] + notes)


STEPS = (("1", idle), ("2", reading), ("2b", delivery), ("2c", master_csv), ("3", transcoding),
         ("4", contention), ("5", upload), ("5b", webhook_upload), ("6", callers_cost),
         ("6", end_to_end), ("7", catch_up), ("8", backfill_year), ("9", big_directory),
         ("10", day_page))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="every size shrunk (CI)")
    parser.add_argument("--mysql", default=os.environ.get(
        "POLLER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"))
    parser.add_argument("--only", help="comma-separated rows to run (e.g. 1,2b); the rows "
                        "6-8 need 2, 3 and 5 for their limits")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from cases import main as run_case

        run_case(*args.child)
        return 0
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    wanted = set(args.only.split(",")) if args.only else {name for name, _ in STEPS}
    with tempfile.TemporaryDirectory(prefix="poller-bench-") as work:
        db = Database.create(args.mysql)
        server = subprocess.Popen([sys.executable, "-c", SERVER % str(ROOT / "tests")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            bench = Bench(sizes, db, Path(work), url=server.stdout.readline().strip())
            for name, step in STEPS:
                if name in wanted:
                    print(f"row {name} ...", file=sys.stderr, flush=True)
                    try:
                        step(bench)
                    except MissingRows as exc:
                        print(f"row {name} left out: it {exc}", file=sys.stderr, flush=True)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)
            db.drop()
    print(f"# {'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s; "
          f"{machine(client_login(args.mysql))}")
    print(f"# speech: {speech_origin()}; medians of interleaved runs")
    print(table(bench.rows))
    print(json.dumps({"rows": len(bench.rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
