"""A database that lost five calls which Master.csv has (cdr_adaptive_odbc drops a CDR while
its database is away; cdr_csv beside it keeps the line): `[source.reconcile]` delivers them
from Master.csv, once, whichever of the two sources saw a call first."""

from __future__ import annotations

import datetime as dt

from support import SAMPLES, archived, make_config, msk, run_cli, write_config

from poller.ops.status import collect, to_json
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

PATTERN = "{calldate:%Y/%m/%d}/*-{uniqueid}.wav"
INCOMING = {"did_set": True, "channels": ["Local/*@from-pstn-*"]}


def _lost(sample_rows):
    """The rows of five incoming calls, by linkedid: the ones the database never got."""
    keys = sorted({row["linkedid"] for row in sample_rows if row["did"]})[3:8]
    return set(keys)


def test_a_database_that_lost_five_calls_gets_them_from_master_csv(tmp_path, cdr_db,
                                                                  sample_rows, recordings_dir):
    lost = _lost(sample_rows)
    cdr_db.insert([row for row in sample_rows if row["linkedid"] not in lost])
    master = tmp_path / "Master.csv"
    master.write_bytes((SAMPLES / "Master.csv").read_bytes())
    metrics = tmp_path / "poller.prom"
    sections = {"source": {"incoming": INCOMING, "reconcile": {"csv": str(master)}},
                "recordings": {"name": PATTERN}, "metrics": {"file": str(metrics)}}
    config = make_config(tmp_path, cdr_db.url, **sections)

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    assert report.reconciled == 5 and "5 from Master.csv, missing in the cdr table" in \
        report.summary()
    records = archived(tmp_path)
    assert len(records) == 23  # every incoming call, once
    assert {key for key, r in records.items() if not r["did"]} == lost  # those from the CSV
    assert all(r["did"] for key, r in records.items() if key not in lost)  # the table's
    assert sum(1 for r in records.values() if r["recording"]) == 14
    assert "poller_calls_reconciled_total 5.0" in metrics.read_text()
    shown = to_json(collect(config, now=msk("2026-11-26 10:01")))
    assert shown["reconciled_total"] == 5 and shown["last_run"]["reconciled"] == 5

    # the database comes back with its rows restored: nothing is delivered a second time
    cdr_db.insert([row for row in sample_rows if row["linkedid"] in lost])
    again = run_once(config, RunOptions(now=msk("2026-11-26 10:05")))
    assert again.delivered_count == 0 and again.new_calls == 0, again.summary()
    backfill = run_once(config, RunOptions(now=msk("2026-11-26 10:06"),
                                           since=dt.datetime(2026, 11, 26)))
    assert backfill.delivered_count == 0 and backfill.reconciled == 0, backfill.summary()
    assert archived(tmp_path) == records


def test_reconcile_command_takes_a_range_of_history(tmp_path, cdr_db, sample_rows,
                                                    recordings_dir):
    """`poller reconcile --since` reads the range (the rotated copies too) and delivers only
    the lost calls; the table's own calls are left to `run`."""
    lost = _lost(sample_rows)
    cdr_db.insert([row for row in sample_rows if row["linkedid"] not in lost])
    master = tmp_path / "Master.csv"
    master.with_name("Master.csv.1").write_bytes((SAMPLES / "Master.csv").read_bytes())
    master.write_bytes(b"")
    path = write_config(tmp_path, cdr_db.url, source={
        "incoming": INCOMING, "reconcile": {"csv": str(master)}}, recordings={"name": PATTERN})
    result = run_cli("--config", str(path), "reconcile", "--since", "2026-11-26")
    assert result.exit_code == 0, result.output
    assert set(archived(tmp_path)) == lost
    assert "5 from Master.csv" in result.output
    result = run_cli("--config", str(path), "reconcile", "--since", "2026-11-26")
    assert result.exit_code == 0 and "delivered 0 calls" in result.output, result.output


def test_reconcile_needs_a_recording_name_without_did_or_recordingfile(tmp_path):
    path = write_config(tmp_path, "sqlite:///x.db", source={"reconcile": {"csv": "/x.csv"}})
    result = run_cli("--config", str(path), "check")
    assert result.exit_code == 2
    assert "recordings.name: a call taken from Master.csv (source.reconcile) has no " \
        "recordingfile" in result.output
