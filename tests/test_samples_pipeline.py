"""The 27 real sample calls, from a MariaDB cdr table to the archive, as calls.csv says."""

from __future__ import annotations

import json
from pathlib import Path

from support import make_config, msk

from poller.run.options import RunOptions
from poller.run.pipeline import run_once


def _archived(tmp_path: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["number"] + "@" + json.loads(p.read_text())["start"][:19]:
            json.loads(p.read_text()) for p in (tmp_path / "archive").rglob("*.json")}


def test_sample_calls_delivered_as_calls_csv_says(tmp_path, cdr_db, sample_rows, sample_calls,
                                                  recordings_dir):
    cdr_db.insert(sample_rows)
    config = make_config(tmp_path, cdr_db.url)
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()

    records = {r["key"]: r for r in (json.loads(p.read_text())
                                     for p in (tmp_path / "archive").rglob("*.json"))}
    incoming = [c for c in sample_calls if c["direction"] == "incoming"]
    assert len(records) == len(incoming) == 23
    assert report.skipped == 4  # 2 outgoing + 2 internal
    by_start = {(r["number"], r["start"][:19]): r for r in records.values()}
    for expected in incoming:
        placed = expected["placed_at_msk"][:19].replace(" ", "T")
        record = by_start[(expected["caller_number"], placed)]
        assert record["status"] == expected["expected_outcome"], expected["call_id"]
        assert record["answered_by"] == expected["answered_by"], expected["call_id"]
        assert record["name"] == expected["caller_name"], expected["call_id"]
        assert record["did"] == expected["did"], expected["call_id"]
        assert record["start"].endswith("+03:00")
        rec = expected["recording_expected"]
        if rec.startswith("yes"):
            assert record["recording"] == f"{record['key']}.mp3", expected["call_id"]
            assert record["recording_problem"] is None
        elif rec == "header-only":
            assert record["recording"] is None
            assert record["recording_problem"] == "empty", expected["call_id"]
        else:
            assert record["recording"] is None and record["recording_problem"] is None
