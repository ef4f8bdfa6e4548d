"""The work each measurement runs in a fresh interpreter of its own (`run.py --child CASE`), so
its CPU, its peak memory and its imports are its own. Each prints one JSON line: wall and CPU
of the work alone (imports excluded unless they are the point), peak RSS, and what it counted."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from measure import peak_rss_kb, rss_kb
from workload import make_config

NOW_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _now(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _local(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _measure(work: Any) -> dict[str, Any]:
    from measure import children_cpu

    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
    extra = work() or {}
    return {"wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu + children_cpu() - kids,
            "rss_kb": peak_rss_kb(), **extra}


def run(work: dict[str, Any]) -> dict[str, Any]:
    """One `run_once` (a backfill when since/until are given)."""
    from poller.run.options import RunOptions
    from poller.run.pipeline import run_once

    config = make_config(work["config"])
    options = RunOptions(since=_local(work.get("since")), until=_local(work.get("until")),
                         now=_now(work.get("now")), limit=work.get("limit"))
    if work.get("warm_directory"):  # the copy in state.dir that every run but the first finds
        from poller.callers import directory

        state = Path(config.state.dir)
        state.mkdir(parents=True, exist_ok=True)
        directory.load(config.callers, directory.Cache(state / directory.CACHE_NAME,
                                                       directory.fingerprint(config.callers)),
                       _now(work.get("now")) or dt.datetime.now(dt.UTC))
    for warm in work.get("before", []):  # runs that set the scene, not measured
        run_once(config, RunOptions(now=_now(warm), limit=work.get("before_limit")))

    def once() -> dict[str, Any]:
        report = run_once(config, options)
        return {"rows": report.rows, "new_calls": report.new_calls,
                "incidents": report.incidents_created,
                "joined": report.incidents_joined,
                "delivered": report.delivered_count, "skipped": report.skipped,
                "exit": int(report.exit_code), "unavailable": report.unavailable}

    return _measure(once)


def follow(work: dict[str, Any]) -> dict[str, Any]:
    """CPU per idle poll of `run --follow` at its 15 s interval, against a warm loop (one
    engine, pooled connection) running the same indexed query, in alternating blocks; medians.
    The loop's clock moves 15 s a poll, so a block has the full polls (one a minute) and the
    quiet polls between them that a day of idle polling has."""
    import statistics
    import threading

    import sqlalchemy as sa

    import poller.run.follow as following

    config = make_config(work["config"])
    following.run_once(config)  # the first poll sets the watermark: later ones are idle
    real = following.run_once
    clock, full = [0.0], [0]

    class Polls(threading.Event):
        """Ends the loop after `block` polls; each wait is 15 s on the loop's clock."""

        def __init__(self, block: int):
            super().__init__()
            self.block, self.count = block, 0

        def wait(self, timeout: float | None = None) -> bool:
            self.count += 1
            clock[0] += 15.0
            if self.count >= self.block:
                self.set()
            return self.is_set()

    full_cpu = [0.0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        full[0] += 1
        started = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            full_cpu[0] += time.process_time() - started

    # the name the loop calls (it imports run_once at the top of its module)
    following.run_once = counted  # type: ignore[assignment]
    engine = sa.create_engine(config.source.url, connect_args={"ssl_disabled": True})
    query = sa.text(work["query"])

    def warm() -> None:
        with engine.connect() as conn:
            conn.execute(query).fetchall()

    block = int(work["polls"])
    ours: list[float] = []
    theirs: list[float] = []
    fulls = 0
    rss_start = rss_kb()
    for _ in range(int(work["blocks"])):
        full[0] = 0
        started = time.process_time()
        following.follow(config, 0.0, stop=Polls(block), clock=lambda: clock[0])
        ours.append((time.process_time() - started) / block)
        fulls += full[0]
        started = time.process_time()
        for _ in range(block):
            warm()
        theirs.append((time.process_time() - started) / block)
    return {"wall": 0.0, "cpu": statistics.median(ours), "reference_cpu": statistics.median(theirs),
            "rss_kb": peak_rss_kb(), "rss_growth_kb": rss_kb() - rss_start,
            "full_polls": fulls, "polls": block * int(work["blocks"]),
            "full_ms": full_cpu[0] / max(fulls, 1) * 1e3,
            "quiet_ms": (sum(ours) * block - full_cpu[0]) / max(
                block * int(work["blocks"]) - fulls, 1) * 1e3}


def delivery_floor(work: dict[str, Any]) -> dict[str, Any]:
    """The floor of delivering a call: one ledger commit (the ledger's SQLite settings, one
    connection kept open) and one durable file write (temporary name, fsync, rename, fsync of
    the folder), per call."""
    folder = Path(work["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(folder / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, stage TEXT, payload TEXT)")
    count = int(work["calls"])
    record = json.dumps({"key": "x" * 14, "number": "+79161002301", "status": "answered",
                         "start": "2026-11-26T09:38:27+03:00"}, indent=2).encode()
    db.executemany("INSERT INTO calls VALUES (?, 'seen', ?)",
                   [(str(n), record.decode()) for n in range(count)])

    def work_all() -> None:
        day = os.open(folder, os.O_RDONLY)
        for n in range(count):
            temporary, final = folder / f".{n}.json.part", folder / f"{n}.json"
            with open(temporary, "wb") as handle:
                handle.write(record)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            os.fsync(day)
            db.execute("BEGIN")
            db.execute("UPDATE calls SET stage = 'done' WHERE key = ?", (str(n),))
            db.execute("COMMIT")
        os.close(day)

    return {**_measure(work_all), "calls": count}


def upload(work: dict[str, Any]) -> dict[str, Any]:
    """addFile of each MP3 (smallest first) through the poller's client, or as a raw
    standard-library POST of the same envelope built in memory: CPU and the peak RSS each
    adds to the process."""
    import base64
    import http.client
    from urllib.parse import urlsplit

    from poller.config.schema import EaslaConfig, Secret
    from poller.model import Call
    from poller.targets.easla.target import PLACEHOLDER, EaslaTarget

    config = EaslaConfig(url=work["url"], login="poller", password=Secret("secret"),
                         timeout=60.0)  # type: ignore[arg-type]
    target = EaslaTarget(config, work["state"])
    call = Call.from_json(work["call"])
    record = call.record(None, None)
    results = {}
    for path in work["files"]:
        mp3 = Path(path)
        object_id = target.create(call, record)
        before = rss_kb()
        if work["how"] == "poller":
            cpu = time.process_time()
            target.attach(object_id, call, mp3)
            cpu = time.process_time() - cpu
        else:
            target.client.options.nosend = True
            context = target.client.service.addFile(
                objectref=int(object_id), attribute="incoming_call_file",
                file={"item": [{"key": "srcname", "value": mp3.name},
                               {"key": "content", "value": PLACEHOLDER}]})
            target.client.options.nosend = False
            prefix, _, suffix = context.envelope.partition(PLACEHOLDER.encode())
            cookie = "; ".join(f"{k}={v}" for k, v in target.transport.cookies.items())
            action = target.client.service.addFile.method.soap.action
            parts = urlsplit(work["url"])
            cpu = time.process_time()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            conn.request("POST", parts.path,
                         body=prefix + base64.b64encode(mp3.read_bytes()) + suffix,
                         headers={"Content-Type": "text/xml; charset=utf-8",
                                  "SOAPAction": action, "Cookie": cookie})
            reply = conn.getresponse()
            reply.read()
            conn.close()
            cpu = time.process_time() - cpu
            assert reply.status == 200, reply.status
        results[mp3.name] = {"cpu": cpu, "rss_growth_kb": max(0, peak_rss_kb() - before)}
    target.close()
    return {"wall": 0.0, "cpu": 0.0, "files": results}


def webhook_upload(work: dict[str, Any]) -> dict[str, Any]:
    """Each MP3 (smallest first) with its call to the webhook receiver: through the poller's
    target (signed in a first pass, streamed from disk), or as a raw standard-library POST of
    the same body built and signed in memory. CPU and the peak RSS each adds."""
    import hashlib
    import hmac
    import http.client
    from urllib.parse import urlsplit

    from poller.config.schema import Secret, WebhookConfig, signing_key
    from poller.model import Call
    from poller.targets.webhook.body import multipart_body
    from poller.targets.webhook.signing import message_id

    config = WebhookConfig(url=Secret(work["url"]), secret=Secret(work["secret"]),
                           timeout=60.0)  # type: ignore[arg-type]
    call = Call.from_json(work["call"])
    record = call.record(f"{call.key}.mp3", None)
    results = {}
    target = None
    if work["how"] == "poller":
        from poller.targets.webhook.target import WebhookTarget

        target = WebhookTarget(config)
    for path in work["files"]:
        mp3 = Path(path)
        before = rss_kb()
        cpu = time.process_time()
        if target is not None:
            target.create(call, record, mp3)
        else:
            body = multipart_body({"type": "call.received", "call": record}, mp3, mp3.name)
            data = b"".join(body.parts())
            webhook_id, stamp = message_id("call.received", call.key), str(int(time.time()))
            mac = hmac.new(signing_key(config.secret), f"{webhook_id}.{stamp}.".encode() + data,
                           hashlib.sha256).digest()
            parts = urlsplit(work["url"])
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            conn.request("POST", parts.path, body=data, headers={
                "Content-Type": body.content_type, "webhook-id": webhook_id,
                "webhook-timestamp": stamp,
                "webhook-signature": "v1," + base64.b64encode(mac).decode()})
            reply = conn.getresponse()
            reply.read()
            conn.close()
            assert reply.status == 200, reply.status
        cpu = time.process_time() - cpu
        results[mp3.name] = {"cpu": cpu, "rss_growth_kb": max(0, peak_rss_kb() - before)}
    if target is not None:
        target.close()
    return {"wall": 0.0, "cpu": 0.0, "files": results}


def encode(work: dict[str, Any]) -> dict[str, Any]:
    """The poller's transcode of one file (its encoder child, at its priority settings)."""
    from poller.config.schema import Seconds, TranscodeConfig
    from poller.recordings.transcode import to_mp3

    config = TranscodeConfig(timeout=Seconds(7200), nice=int(work.get("nice", 10)))
    box: dict[str, Any] = {}

    def once() -> None:
        encoded = to_mp3([Path(work["source"])], Path(work["target"]), config)
        box["encoder_rss_kb"] = encoded.peak_rss_kb

    result = _measure(once)
    result.update(box)
    return result


def directory_load(work: dict[str, Any]) -> dict[str, Any]:
    """One run's lookup in a CSV directory (its copy in state.dir made by a first run, read
    again `minutes` later): its time and peak RSS, or the refusal."""
    from poller.callers.directory import lookup
    from poller.config.schema import CallersConfig, Seconds
    from poller.errors import ConfigError

    config = CallersConfig(country="RU", csv=work["csv"], fields=(), refresh=Seconds(600))
    now = dt.datetime.fromisoformat(work["now"])
    box: dict[str, Any] = {}

    def once() -> dict[str, Any]:
        try:
            found = lookup(config, work["state"], work["numbers"],
                           now + dt.timedelta(minutes=work["minutes"]))
        except ConfigError as exc:
            return {"refused": str(exc)}
        return {"found": len(found.matches)}

    box.update(_measure(once))
    return box


def site_update(work: dict[str, Any]) -> dict[str, Any]:
    """The archive pages of one day: built whole, written again whole, or one new record
    appended."""
    from poller.targets.archive.site import ArchiveSite

    root, day = Path(work["root"]), dt.date.fromisoformat(work["day"])
    site = ArchiveSite(root, "en", "Europe/Moscow")

    def once() -> dict[str, Any]:
        if work["mode"] == "append":
            report = site.update({day}, {day: {Path(work["record"])}})
        else:
            report = site.update({day})
        return {"calls": report.calls, "failed": len(report.failed)}

    return _measure(once)


def page_open(work: dict[str, Any]) -> dict[str, Any]:
    """Seconds until Chromium has opened a page (its load event: every script run), the
    median of a few fresh tabs; the browser's start is not counted."""
    import statistics

    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        for _ in range(int(work["times"])):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(work["url"])
            times.append(time.perf_counter() - started)
            rows = page.eval_on_selector_all("#calls tbody tr", "rows => rows.length")
            context.close()
        browser.close()
    return {"wall": statistics.median(times), "cpu": 0.0, "rows": rows}


CASES = {"run": run, "directory": directory_load, "site": site_update, "open": page_open,
         "follow": follow, "floor": delivery_floor, "upload": upload,
         "webhook_upload": webhook_upload, "encode": encode}


def main(case: str, text: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(CASES[case](json.loads(text)), default=str))
