"""The calls the database lost: Master.csv read beside the cdr table (`[source.reconcile]`).

cdr_adaptive_odbc drops a CDR it cannot insert while its database is away; cdr_csv, loaded
beside it, still writes the line. Each run reads the new lines of Master.csv as a `csv` source
would (its own checkpoint, its own calldate mark), and a call whose key the ledger does not
know and the table does not hold is delivered from its lines. A call in both is the table's:
the ledger's key makes sure it is delivered once, whichever of the two saw it first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from poller.config.schema import SourceConfig
from poller.ledger.incidents import IncidentChanges
from poller.model import Call
from poller.run.options import RunOptions
from poller.run.read import Builder, Enrich, ReadLedger, ReadPhase
from poller.run.report import RunReport
from poller.source.interface import Source

log = logging.getLogger("poller")

_SLACK = dt.timedelta(seconds=2)  # the table's calldate and the line's start, whole seconds


class ReconcileLedger:
    """The ledger as the reconciling read sees it: the same calls, but a calldate mark of its
    own (the table's watermark is the table read's)."""

    MARK = "reconcile-watermark"

    def __init__(self, ledger: ReadLedger):
        self.ledger = ledger

    def watermark(self) -> dt.datetime | None:
        saved = self.ledger.checkpoint(self.MARK)
        return dt.datetime.fromisoformat(saved["calldate"]) if saved else None

    def set_watermark(self, mark: dt.datetime) -> None:
        self.ledger.set_checkpoint(self.MARK, {"calldate": mark.isoformat()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)


@dataclasses.dataclass
class Reconciler:
    """An `Enrich` step: of the new incoming calls from Master.csv, only those the table does
    not hold go on (counted), then through the run's own enrichment."""

    table: Source
    report: RunReport
    enrich: Enrich | None = None

    def __call__(self, calls: list[Call], ledger: Any) -> tuple[list[Call], IncidentChanges]:
        held = self.in_table(calls)
        lost = [call for call in calls if call.key not in held]
        for call in lost:
            log.info("call %s (%s, from %s): in Master.csv but not in the cdr table: delivered "
                     "from Master.csv", call.key, call.start.isoformat(sep=" "),
                     call.number or "unknown")
        self.report.reconciled += len(lost)
        if self.enrich is not None and lost:
            return self.enrich(lost, ledger)
        return lost, IncidentChanges()

    def in_table(self, calls: Sequence[Call]) -> set[str]:
        """The keys the table holds a row of (one indexed calldate range for the batch)."""
        if not calls:
            return set()
        lo = min(call.first_calldate for call in calls) - _SLACK
        hi = max(call.last_calldate for call in calls) + _SLACK
        return self.table.keys_before([call.key for call in calls], lo, hi, "calldate")


def reconcile(csv: Source, table: Source, ledger: ReadLedger, config: SourceConfig,
              builder: Builder, report: RunReport, options: RunOptions,
              enrich: Enrich | None) -> dt.datetime | None:
    """Read Master.csv's new lines (or a backfill's range of them) and record the calls the
    table lost; returns the earliest calldate read."""
    return ReadPhase(csv, ReconcileLedger(ledger), config, builder, report,
                     Reconciler(table, report, enrich)).execute(options)
