"""The configured source, by kind: only the module that kind needs is imported."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from poller.config.schema import CsvConfig, SourceConfig
from poller.errors import ConfigError
from poller.source.interface import Source


def open_source(config: SourceConfig, needed: Iterable[str] = (), backfill: bool = False,
                checkpoint: str = "csv") -> Source:
    """The configured source: the cdr table, or Master.csv (`backfill`: with its rotated
    copies; `checkpoint`: the name its mark is kept under)."""
    if config.kind == "table":
        from poller.source.table import CdrSource

        return CdrSource(config, needed=needed)
    if config.kind == "csv":
        from poller.source.mastercsv import CsvSource

        return CsvSource(config, backfill=backfill, checkpoint=checkpoint)
    raise ConfigError(f"source.kind = {config.kind!r} is not known")


def reconcile_source(config: SourceConfig, backfill: bool = False) -> Source:
    """The Master.csv written beside the table (`[source.reconcile]`), with a checkpoint of
    its own."""
    csv = CsvConfig(path=config.reconcile.csv, columns=config.csv.columns)
    source = open_source(dataclasses.replace(config, kind="csv", csv=csv), backfill=backfill,
                         checkpoint="reconcile")
    source.warnings[:] = [] if config.incoming.channels or config.incoming.contexts else [
        "source.reconcile: a call taken from Master.csv has no did, and no "
        "source.incoming.channels or .contexts rule would find it incoming: list the trunk "
        "channels (e.g. \"PJSIP/provider-*\")"]
    return source
