"""One run, and the one place that builds its collaborators.

A run has two phases that meet only in the ledger: reading records every call it builds
(incoming ones as pending, the rest as skipped) and moves the watermark; delivery works from the
ledger alone, so a call that failed in an earlier run is retried without reading the cdr table
again. `run_once` builds the lock, ledger, source, target, encoder and clock, and hands each
phase only what it uses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from poller.config.schema import Config
from poller.databases import database_error
from poller.errors import ConfigError, LedgerUnavailable, ServiceUnavailable, TargetUnavailable
from poller.ledger.journal import Journal
from poller.ledger.schema import utcnow
from poller.ledger.store import Ledger
from poller.model import PENDING
from poller.recordings.transcode import Encoded, EncoderProcess
from poller.run.delivery import Courier, deliver_due
from poller.run.enrich import Enricher
from poller.run.history import UnreadHistory, after_backfill
from poller.run.ledgerlock import ledger_lock
from poller.run.lock import RunLock
from poller.run.marks import (
    Moment,
    backfill_end,
    backfill_slice,
    backfill_slices,
    forget_before,
    lowest,
)
from poller.run.options import Progress, RunOptions
from poller.run.owner import claim, owner_of
from poller.run.read import Builder, ReadLedger, ReadPhase
from poller.run.report import RunReport, plural
from poller.run.schedule import due_before
from poller.source.interface import Source
from poller.source.kinds import open_source, reconcile_source
from poller.targets.interface import GuardedTarget, LazyTarget, Target
from poller.targets.kinds import open_target, upkeep
from poller.templates import recording_fields

if TYPE_CHECKING:
    from poller.run.metrics import LedgerFigures

__all__ = ["Progress", "RunOptions", "RunReport", "run_once"]

log = logging.getLogger("poller")


def run_once(config: Config, options: RunOptions | None = None,
             target_factory: Callable[[Config], Target] | None = None) -> RunReport:
    """One batch under the run lock (a backfill: one per day of its range, the lock released
    in between). A cron run that finds the lock held raises LockHeld."""
    options = options or RunOptions()
    moment = _moment(config, options)
    if options.dry_run:
        started = time.monotonic()
        report = RunReport()
        _dry_run(config, options, moment, report)
        report.seconds = time.monotonic() - started
        return report
    # one encoder child for the whole run (started by the first recording, if any)
    with EncoderProcess(config.transcode) as encoder:
        if options.backfill:
            report = _backfill(config, options, moment, target_factory, encoder)
            # a reconcile reads only Master.csv's calls the table lacks: the table's rows
            # before the origin are as unread as before
            if options.since is not None and not options.reconcile and \
                    not report.unavailable and not options.should_stop():
                _backfilled(config, options.since, options.until)
            return report
        return _batch(config, options, moment, target_factory, encoder)


def _backfilled(config: Config, since: dt.datetime, until: dt.datetime | None) -> None:
    """A backfill that read the rows a fresh ledger left unread takes them off its note."""
    ledger = Ledger.open_existing(config.state.database_url, source=config.source.name)
    if ledger is None:
        return
    try:
        history = UnreadHistory.from_setting(ledger.unread_history())
        if history is not None:
            left = after_backfill(history, since, until)
            if left != history:
                ledger.set_unread_history(left.to_setting() if left is not None else None)
    finally:
        ledger.close()


def _moment(config: Config, options: RunOptions) -> Moment:
    return Moment((options.now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC),
                  ZoneInfo(config.source.timezone))


def _backfill(config: Config, options: RunOptions, moment: Moment,
              target_factory: Callable[[Config], Target] | None,
              encoder: EncoderProcess) -> RunReport:
    """A backfill a day at a time, each under the lock on its own: a long one never keeps the
    cron runs (and live calls) waiting for its end. A day with calls logs one short line, an
    empty one nothing (one line at -v); the summary is the caller's."""
    if options.since is None or config.source.kind == "csv" or options.reconcile:
        # from the ledger's origin, or over Master.csv and its copies (a day's slice would
        # read every file again): one batch
        return _batch(config, options, moment, target_factory, encoder)
    since, until = options.since, options.until
    end = backfill_end(until, moment)
    log.info("backfill: %s to %s, %s, a day at a time: the lock is free between days, for "
             "cron runs to deliver live calls", since.date().isoformat(),
             end.date().isoformat(), plural(len(backfill_slices(since, until, moment)), "day"))
    started = time.monotonic()
    total = RunReport()
    show = _Overall(options.progress, since, end, total)
    probe = _NextRow(config)
    try:
        start: dt.datetime | None = since
        while start is not None and not options.should_stop():
            # the days before the next row hold no call: read and delivered with its day
            start, stop = backfill_slice(start, until, probe.at_or_after(start), moment)
            # a limit reached still reads the remaining days into the ledger, as one batch would
            limit = None if options.limit is None else max(
                options.limit - total.delivered_count, 0)
            part = dataclasses.replace(options, since=start, until=stop, limit=limit,
                                       progress=show.day if options.progress else None)
            report = _batch(config, part, _moment(config, options), target_factory, encoder,
                            so_far=total)
            total.add(report)
            show.reached(stop or end)
            days = _days(start, stop or end)
            if report.new_calls or report.delivered_count or report.failures:
                log.info("backfill %s: %s", days, report.brief())
            else:
                log.debug("backfill %s: no calls (%s read)", days, plural(report.rows, "row"))
            start = None if stop == until else stop
    finally:
        probe.close()
    total.seconds = time.monotonic() - started
    return total


def _days(start: dt.datetime, stop: dt.datetime) -> str:
    """`2026-11-22`, or `2026-01-01 to 2026-11-22` for empty days joined to one with rows."""
    last = max((stop - dt.timedelta(microseconds=1)).date(), start.date())
    return start.date().isoformat() + ("" if last == start.date() else f" to {last}")


class _NextRow:
    """Where the next cdr row of a backfill lies: one probe of the calldate index, so that
    days without rows cost no batch (no lock, no ledger writes) of their own. A source that
    cannot be asked is asked no more: every day then gets its batch, which says why."""

    def __init__(self, config: Config):
        self.config = config
        self.source: Source | None = None
        self.failed = False

    def at_or_after(self, start: dt.datetime) -> dt.datetime | None:
        if self.failed:
            return start
        try:
            if self.source is None:
                self.source = open_source(self.config.source, backfill=True)
            found: dt.datetime | None = self.source.next_position(start, "calldate")
            return found
        except Exception as exc:  # noqa: BLE001 - the day's own batch reports the source
            log.debug("backfill: where the next row lies could not be asked: %s", exc)
            self.failed = True
            return start

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


@dataclass
class _Overall:
    """A day's progress shown as the whole backfill's: over its whole range, with the counts
    of the days done added, and moved to each day's end even when the day held nothing."""

    progress: Callable[[Progress], None] | None
    since: dt.datetime
    end: dt.datetime
    done: RunReport

    def day(self, day: Progress) -> None:
        if self.progress is not None:
            self.progress(dataclasses.replace(day, start=self.since, stop=self.end,
                                              rows=self.done.rows + day.rows,
                                              new_calls=self.done.new_calls + day.new_calls))

    def reached(self, position: dt.datetime) -> None:
        if self.progress is not None:
            self.progress(Progress(min(position, self.end), self.since, self.end,
                                   self.done.rows, self.done.new_calls))


def _batch(config: Config, options: RunOptions, moment: Moment,
           target_factory: Callable[[Config], Target] | None, encoder: EncoderProcess,
           so_far: RunReport | None = None) -> RunReport:
    """One batch under the lock; `so_far` is what the earlier days of a backfill did, so that
    `status` shows the whole backfill as the last run, not its last day."""
    started = time.monotonic()
    report = RunReport()
    figures: LedgerFigures | None = None
    metrics_file = options.metrics_file or config.metrics.file
    # a backfill waits for the lock; the minutely run gives way at once. A server ledger
    # has its own lock besides: the standby host's state.dir is not this one's.
    url, source = config.state.database_url, config.source.name
    with RunLock(config.state.dir, wait=options.backfill), \
            ledger_lock(url, source, options.backfill) as held:
        # before anything in state.dir is touched: another config's journal and files
        claim(config.state.dir, owner_of(url, source))
        _clear_leftovers(config.state.dir)
        ledger = Ledger(url, source=source)
        try:
            held.announce(ledger)
            journal = Journal(config.state.dir)
        except BaseException:
            ledger.close()
            raise
        target = LazyTarget(functools.partial(_open_target, config, target_factory or open_target,
                                              held.alive))
        try:
            journal.open(ledger)  # steps a killed or refused run could not record, first
            enrich = Enricher.build(config.callers, config.incidents, config.state.dir,
                                    moment.zone, moment.now, report, quiet=options.backfill)
            oldest_read = _read(config, options, moment, ledger, report, enrich)
            if report.reconciled:
                ledger.add_reconciled(report.reconciled)
            _deliver(config, options, moment, ledger, journal, target, report, encoder)
            if not options.backfill:
                _held_back(ledger, report)
                _upkeep(config, moment, ledger, oldest_read)
        except ConfigError as exc:  # found at run time (credentials, a column): not clean
            report.config_error = str(exc)
            raise
        except ServiceUnavailable as exc:  # a local outage before delivery (the journal)
            report.unavailable.append(str(exc))
            raise
        except Exception as exc:  # for `status`: a run that stops on it is never clean
            damage = _damage(ledger)
            if damage:  # not a bug: say what the ledger holds that the run cannot use
                report.error = damage
                raise LedgerUnavailable(damage) from exc
            report.error = f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            journal.close()
            target.close()
            report.seconds = time.monotonic() - started
            report.finished_at = utcnow().isoformat(timespec="seconds") + "Z"
            _save_last_run(ledger, report if so_far is None else so_far.plus(report))
            if metrics_file:
                figures = _figures(ledger, report)
            ledger.close()
    if metrics_file:
        from poller.run.metrics import write_metrics  # only with metrics on

        write_metrics(metrics_file, report, figures, config.source.name)
    return report


def _open_target(config: Config, factory: Callable[[Config], Target],
                 check: Callable[[], None]) -> Target:
    return GuardedTarget(factory(config), check)


def _read(config: Config, options: RunOptions, moment: Moment, ledger: ReadLedger,
          report: RunReport, enrich: Enricher | None = None) -> dt.datetime | None:
    """Phase one (and, with [source.reconcile], Master.csv beside the table); returns the
    earliest calldate read. An unreachable source stops only this phase: calls already in the
    ledger are still delivered. A dry run reads without `enrich`: the directory's copy in
    state.dir would be written."""
    builder = Builder(config.source.incoming, moment.zone, config.recordings.name, moment.now,
                      float(config.source.max_call_length), float(config.source.lookback))
    oldest: dt.datetime | None = None
    try:
        source = open_source(config.source, needed=recording_fields(config.recordings.name),
                             backfill=options.backfill)
        try:
            if not options.reconcile:
                oldest = ReadPhase(source, ledger, config.source, builder, report,
                                   enrich).execute(options)
            if config.source.reconcile.enabled:
                from poller.run.reconcile import reconcile  # only with [source.reconcile]

                lost = reconcile_source(config.source, backfill=options.backfill)
                try:
                    oldest = lowest(oldest, reconcile(lost, source, ledger, config.source,
                                                      builder, report, options, enrich))
                finally:
                    lost.close()
        except sa.exc.OperationalError as exc:
            # the sources say their own: what is left is the ledger refusing (full, read-only)
            raise database_error(exc, config.state.database_url, "state") from None
        finally:
            source.close()
    except ServiceUnavailable as exc:
        log.log(options.outage_level, "%s", exc)
        report.unavailable.append(str(exc))
    return oldest


def _deliver(config: Config, options: RunOptions, moment: Moment, ledger: Ledger,
             journal: Journal, target: LazyTarget, report: RunReport,
             encoder: EncoderProcess) -> None:
    """Phase two. An outage of the target stops it without charging any call; the ledger
    keeps since when the target is down, for `status` and the metrics."""
    courier = Courier(
        ledger, journal, target, functools.partial(_encode, encoder=encoder),
        config.recordings, config.retry, Path(config.state.dir) / "tmp", moment, report)
    down = ledger.target_down()
    if down is not None and down.until is not None and moment.utc < down.until:
        # the target said when to come back (Retry-After): no request before then
        text = (f"the target asked for no request before "
                f"{down.until.isoformat(sep=' ', timespec='seconds')} UTC ({down.error})")
        log.log(options.outage_level, "%s; no call is charged, a run after then tries again",
                text)
        report.unavailable.append(text)
        report.target_down_since = down.since.isoformat(timespec="seconds") + "Z"
        return
    try:
        deliver_due(courier, options)
        if config.incidents.enabled:
            from poller.run.incident_delivery import deliver_incidents  # only with incidents

            deliver_incidents(courier, config.incidents.attributes, options)
    except TargetUnavailable as exc:
        since = down.since if down is not None else moment.utc
        until = (None if exc.retry_after is None
                 else moment.utc + dt.timedelta(seconds=exc.retry_after))
        log.log(options.outage_level, "%s; target down since %s UTC: no call is charged, %s",
                exc, since.isoformat(sep=" ", timespec="seconds"),
                "the next run tries again" if until is None else
                f"no run tries again before {until.isoformat(sep=' ', timespec='seconds')} UTC")
        report.unavailable.append(str(exc))
        report.target_down_since = since.isoformat(timespec="seconds") + "Z"
        try:
            ledger.set_target_down(since, str(exc), until)
        except Exception as failure:  # the state database may be what is failing too
            log.warning("could not record the target's outage: %s", failure)
        return
    except ServiceUnavailable as exc:
        log.log(options.outage_level, "%s; the remaining calls wait for the next run", exc)
        report.unavailable.append(str(exc))
        return
    if down is not None and target.opened is not None:
        log.log(logging.DEBUG if options.follow else logging.INFO,
                "the target answers again (down since %s UTC: %s)",
                 down.since.isoformat(sep=" ", timespec="seconds"), down.error)
        ledger.clear_target_down()


def _held_back(ledger: Ledger, report: RunReport) -> None:
    """The pending calls this run did not try — not due yet (a recording an earlier run put
    off, a back-off), or kept back by an outage — wait all the same, as `status` lists them:
    the run's line counts them (it said `0 waiting` while status listed them). One count on
    the ledger's stage index."""
    try:
        pending = sum(count for stage, count in ledger.counts().items() if stage in PENDING)
    except Exception:  # noqa: BLE001 - the ledger may be the outage: the count is a nicety
        return
    report.held = max(pending - report.waiting - (report.failures - report.parked), 0)


def _encode(files: list[Path], mp3: Path, call_seconds: int,
            encoder: EncoderProcess) -> Encoded:
    return encoder.encode(files, mp3, call_seconds=call_seconds)


def _dry_run(config: Config, options: RunOptions, moment: Moment, report: RunReport) -> None:
    """Read as a real run would and list what it would deliver; no lock, nothing written."""
    existing = Ledger.open_existing(config.state.database_url, source=config.source.name)
    from poller.run.dryrun import DryRunLedger  # a cron run never needs it

    ledger = DryRunLedger(existing)
    try:
        _read(config, options, moment, ledger, report)
        report.planned.extend(ledger.due(due_before(options, moment.utc), options.since,
                                         options.until))
    finally:
        if existing is not None:
            existing.close()


def _upkeep(config: Config, moment: Moment, ledger: Ledger,
            oldest_read: dt.datetime | None) -> None:
    """Forget old delivered calls (never ones the next read may meet); the target's own."""
    retention = dt.timedelta(seconds=config.state.retention)
    before = forget_before(retention, dt.timedelta(seconds=config.source.lookback),
                           ledger.watermark(), oldest_read, _on_calldate(config),
                           moment)
    pruned = ledger.prune(before) if before is not None else 0
    if pruned:
        log.info("ledger: forgot %d delivered calls older than %g days", pruned,
                 retention.total_seconds() / 86400)
    upkeep(config, moment.local.date())


def _on_calldate(config: Config) -> bool:
    """Whether live runs read by calldate (not an insertion-ordered column, nor a file)."""
    return config.source.kind == "table" and config.source.cursor == "calldate"


def _clear_leftovers(state_dir: str) -> None:
    """Temporary files of a run that was killed: under the lock no other run is using them."""
    for path in (Path(state_dir) / "tmp").glob("*"):
        try:
            path.unlink()
        except OSError as exc:
            log.warning("could not remove leftover %s: %s", path, exc)


def _damage(ledger: Ledger) -> str | None:
    """What a damaged ledger holds that stopped the run, or None (then it was something
    else). Looked at only when a run stopped on an error it did not foresee."""
    try:
        from poller.ledger.health import problems  # only after an unforeseen error

        found = problems(ledger)
    except Exception:  # noqa: BLE001 - the run's own error is reported instead
        return None
    if not found:
        return None
    more = f" (and {len(found) - 1} more: see poller check)" if len(found) > 1 else ""
    return f"state database: the ledger is damaged: {found[0]}{more}"


def _save_last_run(ledger: Ledger, report: RunReport) -> None:
    try:
        ledger.set_last_run({**report.to_json(), "config_error": report.config_error,
                             "error": report.error})
    except Exception as exc:  # never mask the run's own outcome
        log.warning("could not record the last run: %s", exc)


def _figures(ledger: Ledger, report: RunReport) -> LedgerFigures | None:
    from poller.run.metrics import LedgerFigures  # only with metrics on

    try:
        if report.exit_code == 0:
            ledger.set_last_success(dt.datetime.now(dt.UTC).timestamp())
        return LedgerFigures(ledger.counts(), ledger.watermark(), ledger.last_success(),
                             ledger.target_down(), ledger.reconciled_total())
    except Exception as exc:  # metrics never fail a run
        log.warning("metrics: could not read the ledger: %s", exc)
        return None
