"""Prometheus metrics for node_exporter's textfile collector, written atomically after a run."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from .config import STATUSES, Config
from .ledger import FAILED, STAGES, Ledger

if TYPE_CHECKING:
    from .pipeline import RunReport

log = logging.getLogger("poller")


def write_metrics(config: Config, report: RunReport, path: str | None = None) -> None:
    """Write the metrics file; a failure to write is logged, never fatal to the run."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    target = path or config.metrics.file
    registry = CollectorRegistry()

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"poller_{name}", text, labels, registry=registry)

    delivered = gauge("last_run_calls_delivered", "Calls delivered by the last run", ("status",))
    for status in STATUSES:
        delivered.labels(status).set(report.delivered.get(status, 0))
    gauge("last_run_calls_new", "Calls newly read by the last run").set(report.new_calls)
    gauge("last_run_calls_skipped", "Outgoing and internal calls skipped by the last run").set(
        report.skipped)
    gauge("last_run_recordings_uploaded", "Recordings uploaded by the last run").set(
        report.recordings)
    gauge("last_run_recording_bytes_uploaded", "MP3 bytes uploaded by the last run").set(
        report.recording_bytes)
    gauge("last_run_failures", "Failed delivery attempts in the last run").set(report.failures)
    gauge("last_run_rows_read", "cdr rows read by the last run").set(report.rows)
    gauge("last_run_duration_seconds", "Wall time of the last run").set(report.seconds)
    gauge("last_run_service_unavailable", "1 when a database or the target was unreachable").set(
        1 if report.unavailable else 0)
    gauge("last_run_timestamp_seconds", "When the last run finished").set(
        dt.datetime.now(dt.UTC).timestamp())
    try:
        _ledger_metrics(config, report, gauge)
    except Exception as exc:  # metrics never fail a run
        log.warning("metrics: could not read the ledger: %s", exc)
    try:
        write_to_textfile(target, registry)  # writes a temporary file, then renames it
    except OSError as exc:
        log.warning("metrics: could not write %s: %s", target, exc)


def _ledger_metrics(config: Config, report: RunReport, gauge: Any) -> None:
    ledger = Ledger.open_existing(config.state.database_url)
    if ledger is not None:
        try:
            # kept in the ledger: a failing run must not drop the series an alert watches
            if report.exit_code == 0:
                ledger.put("last_success", repr(dt.datetime.now(dt.UTC).timestamp()))
            last_success = ledger.get("last_success")
            if last_success:
                gauge("last_success_timestamp_seconds",
                      "When a run last finished without failures").set(float(last_success))
            counts = ledger.counts()
            calls = gauge("ledger_calls", "Calls in the ledger by stage", ("stage",))
            for stage in STAGES:
                calls.labels(stage).set(counts.get(stage, 0))
            gauge("calls_parked", "Calls parked as failed (see poller status)").set(
                counts.get(FAILED, 0))
            mark = ledger.watermark()
        finally:
            ledger.close()
        lag: float | None = None
        if mark is not None and report.newest_row:
            newest = dt.datetime.fromisoformat(report.newest_row)
            lag = max((newest - mark).total_seconds(), 0.0)
        elif report.source_read and mark is not None:
            lag = 0.0  # nothing in the lookback: nothing newer than the watermark either
        if lag is not None:  # left out when the cdr table could not be read: 0 would hide it
            gauge("watermark_lag_seconds",
                  "How far the watermark is behind the newest cdr row the run read").set(lag)
