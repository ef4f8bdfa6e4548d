"""A long backfill runs in the memory of a short one: rows are read in bounded windows."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from support import ROOT

# a child process backfills 16,500 rows twice
pytestmark = pytest.mark.slow

CHILD = """
import json, re, sys, datetime as dt
from poller.config.load import from_mapping
from poller.run.pipeline import run_once
from poller.run.options import RunOptions
cfg = from_mapping(json.loads(sys.argv[1]), env={})
report = run_once(cfg, RunOptions(since=dt.datetime(2026, 1, 1), until=dt.datetime(2026, 3, 1),
                                  limit=1, now=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)))
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
peak = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"rss_kb": peak,
                  "rows": report.rows, "new": report.new_calls}))
"""


def _calls(count: int) -> list[dict]:
    start = dt.datetime(2026, 1, 2, 8, 0)
    rows = []
    for n in range(count):
        calldate = start + dt.timedelta(minutes=3 * n)
        uid = f"{int(calldate.replace(tzinfo=dt.UTC).timestamp())}.{n}"
        rows.append({
            "calldate": calldate, "clid": f'"Caller {n}" <+7916{n:07d}>', "src": f"+7916{n:07d}",
            "dst": "201", "dcontext": "from-did-direct", "channel": f"PJSIP/provider-{n:08x}",
            "dstchannel": f"PJSIP/201-{n:08x}", "lastapp": "Dial", "lastdata": "PJSIP/201,15",
            "duration": 60, "billsec": 50, "disposition": "ANSWERED", "amaflags": 3,
            "uniqueid": uid, "did": "74951230001", "cnum": f"+7916{n:07d}", "linkedid": uid,
            "sequence": n,
        })
    return rows


def _backfill(tmp_path, url: str) -> dict:
    settings = {
        "source": {"url": url, "timezone": "UTC", "batch_size": 500},
        "state": {"dir": str(tmp_path / "state")},
        "recordings": {"dir": str(tmp_path / "monitor")},
        "target": {"kind": "archive", "archive": {"dir": str(tmp_path / "archive")}},
    }
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(settings)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_backfill_memory_does_not_grow_with_the_range(tmp_path, cdr_db, empty_db):
    """Ten times the rows (a month of calls against three days) costs no more memory."""
    cdr_db.insert(_calls(1_500))
    empty_db.execute((ROOT / "sql" / "cdr-freepbx.sql").read_text())
    empty_db.insert(_calls(15_000))
    small = _backfill(tmp_path / "small", cdr_db.url)
    large = _backfill(tmp_path / "large", empty_db.url)
    # every call taken; a backfill works a day at a time, and each day reads a lookback into
    # the next for the later legs of its last calls, so rows near midnight are read twice
    assert (small["new"], large["new"]) == (1_500, 15_000)
    assert small["rows"] >= 1_500 and large["rows"] >= 15_000
    growth_mb = (large["rss_kb"] - small["rss_kb"]) / 1024
    print(f"peak RSS {small['rss_kb'] // 1024} MB for 1,500 rows, "
          f"{large['rss_kb'] // 1024} MB for 15,000")
    assert growth_mb < 8, f"peak RSS grew by {growth_mb:.1f} MB for 10x the rows"
