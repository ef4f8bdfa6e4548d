"""Prometheus metrics for node_exporter's textfile collector, written atomically after a run."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poller.ledger.settings import TargetOutage
from poller.localfiles import SHARED, write_whole
from poller.model import STATUSES, Stage
from poller.run.report import RunReport

log = logging.getLogger("poller")


@dataclass(frozen=True)
class LedgerFigures:
    """What the metrics show of the ledger, read by the run while it holds the ledger open."""

    counts: dict[Stage, int]
    watermark: dt.datetime | None
    last_success: float | None  # kept in the ledger: a failing run must not drop the series
    target_down: TargetOutage | None = None
    reconciled_total: int = 0  # calls taken from Master.csv, over all runs


def write_metrics(path: str, report: RunReport, ledger: LedgerFigures | None,
                  pbx: str = "") -> None:
    """Write the metrics file; a failure to write is logged, never fatal to the run. A named
    source (`pbx`) labels every series with it: the pollers of several PBXs write theirs
    side by side for one node_exporter."""
    # only where [metrics] file is set: a run without metrics never loads the client
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge | _Labelled:
        if not pbx:
            return Gauge(f"poller_{name}", text, labels, registry=registry)
        return _Labelled(Gauge(f"poller_{name}", text, ("pbx", *labels), registry=registry),
                         pbx)

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
    gauge("last_run_calls_reconciled", "Calls the last run took from Master.csv because the "
          "cdr table lacked them").set(report.reconciled)
    if ledger is not None:
        _ledger_metrics(ledger, report, gauge)
        registry.register(_Reconciled(ledger.reconciled_total, pbx))
    try:
        # 0640, renamed into place: node_exporter reads it through the folder's group
        text = generate_latest(registry)
        write_whole(Path(path), lambda handle: handle.write(text), SHARED, durable=False)
    except OSError as exc:
        log.warning("metrics: could not write %s: %s", path, exc)


class _Labelled:
    """A gauge whose first label is the source's name, given once."""

    def __init__(self, gauge: Any, pbx: str):
        self.gauge, self.pbx = gauge, pbx

    def set(self, value: float) -> None:
        self.gauge.labels(self.pbx).set(value)

    def labels(self, *values: str) -> Any:
        return self.gauge.labels(self.pbx, *values)


class _Reconciled:
    """poller_calls_reconciled_total: a counter (it only grows; the ledger keeps it), so
    rate() shows how often the database loses calls."""

    def __init__(self, total: int, pbx: str = ""):
        self.total, self.pbx = total, pbx

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        text = "Calls taken from Master.csv because the cdr table lacked them (source.reconcile)"
        if not self.pbx:
            yield CounterMetricFamily("poller_calls_reconciled", text, value=self.total)
            return
        family = CounterMetricFamily("poller_calls_reconciled", text, labels=["pbx"])
        family.add_metric([self.pbx], self.total)
        yield family


def _ledger_metrics(ledger: LedgerFigures, report: RunReport, gauge: Any) -> None:
    if ledger.last_success is not None:
        gauge("last_success_timestamp_seconds",
              "When a run last finished without failures").set(ledger.last_success)
    calls = gauge("ledger_calls", "Calls in the ledger by stage", ("stage",))
    for stage in Stage:
        calls.labels(stage).set(ledger.counts.get(stage, 0))
    gauge("calls_parked", "Calls parked as failed (see poller status)").set(
        ledger.counts.get(Stage.FAILED, 0))
    down = ledger.target_down
    gauge("target_up", "0 while the target does not answer (no call is charged for it)").set(
        0 if down is not None else 1)
    gauge("target_down_seconds", "How long the target has not answered (0 while it does)").set(
        (dt.datetime.now(dt.UTC).replace(tzinfo=None) - down.since).total_seconds()
        if down is not None else 0)
    mark = ledger.watermark
    lag: float | None = None
    if mark is not None and report.newest_row:
        newest = dt.datetime.fromisoformat(report.newest_row)
        lag = max((newest - mark).total_seconds(), 0.0)
    elif report.source_read and mark is not None:
        lag = 0.0  # nothing in the lookback: nothing newer than the watermark either
    if lag is not None:  # left out when the cdr table could not be read: 0 would hide it
        gauge("watermark_lag_seconds",
              "How far the watermark is behind the newest cdr row the run read").set(lag)
