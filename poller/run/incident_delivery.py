"""Phase two, after the calls: each due incident made in the target, under its opening call's
object, and committed as soon as the target confirms it.

An incident is its own stage: it waits for its opening call's object id (the parent), a
failure is charged to the incident alone (back-off, then parked), and a run killed after the
call's object was made makes the incident on the next run, once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping

import sqlalchemy as sa

from poller.errors import (
    ConfigError,
    LedgerUnavailable,
    PollerError,
    RecordingsUnavailable,
    ServiceUnavailable,
    TargetUnavailable,
)
from poller.ledger.incidents import IncidentEntry
from poller.model import IncidentStage
from poller.run.delivery import PAGE, Courier
from poller.run.options import RunOptions
from poller.run.schedule import due_before
from poller.templates import render_attributes

log = logging.getLogger("poller")


def deliver_incidents(courier: Courier, templates: Mapping[str, str],
                      options: RunOptions) -> None:
    """Make or bring up to date every due incident whose opening call has its object."""
    for item in _due(courier, options):
        if options.should_stop():
            log.info("stopping: the remaining incidents wait for the next run")
            return
        IncidentDelivery(courier, templates, item).execute()


def _due(courier: Courier, options: RunOptions) -> Iterator[IncidentEntry]:
    now = due_before(options, courier.moment.utc)
    since, until = (options.since, options.until) if options.backfill else (None, None)
    after: str | None = None
    while True:
        batch = courier.ledger.due_incidents(now, since, until, limit=PAGE, after=after)
        if not batch:
            return
        yield from batch
        after = batch[-1].key


class IncidentDelivery:
    """Moves one incident forward: created under its call's object, then told of every call
    that joined it."""

    def __init__(self, courier: Courier, templates: Mapping[str, str], item: IncidentEntry):
        self.courier = courier
        self.templates = templates
        self.item = item

    def execute(self) -> None:
        try:
            self._advance()
        except (ConfigError, RecordingsUnavailable, LedgerUnavailable):
            raise  # not this incident's fault: nothing counted
        except TargetUnavailable as exc:
            if not exc.in_transit or not self.courier.target.answers():
                raise
            self.fail(f"{exc} (the target answers otherwise)")
        except ServiceUnavailable:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerUnavailable(f"state database: {type(exc).__name__}: "
                                    f"{getattr(exc, 'orig', exc)}") from None
        except PollerError as exc:
            self.fail(str(exc))
        except OSError as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # unforeseen: count it, so the incident is parked, not stuck
            log.exception("incident %s: unexpected failure", self.item.key)
            self.fail(f"{type(exc).__name__}: {exc}")

    def _advance(self) -> None:
        item, courier = self.item, self.courier
        opener = item.opener
        assert opener.object_id is not None  # due_incidents gives only calls with objects
        # the opening call's record as it was sent: its fields, frozen in the ledger
        record = opener.call.record(opener.recording, opener.recording_problem)
        attributes = render_attributes(self.templates, record)
        target = courier.target()
        joined = list(item.joined)
        if item.stage == IncidentStage.PENDING:
            object_id = target.create_incident(opener.call, opener.object_id, attributes, joined)
            courier.journal.confirm_incident(courier.ledger, item.key, IncidentStage.DONE,
                                             object_id=object_id, last_error=None,
                                             next_attempt_at=None)
            courier.report.incidents_created += 1
            log.info("incident %s made (%s), under call object %s%s", item.key, object_id,
                     opener.object_id, f", {len(joined)} calls joined" if joined else "")
            return
        assert item.object_id is not None
        target.update_incident(item.object_id, opener.call, attributes, joined)
        courier.journal.confirm_incident(courier.ledger, item.key, IncidentStage.DONE,
                                         last_error=None, next_attempt_at=None)
        log.info("incident %s: now %d calls joined", item.key, len(joined))

    def fail(self, error: str) -> None:
        item, retry, report = self.item, self.courier.retry, self.courier.report
        report.failures += 1
        attempts = item.attempts + 1
        ledger = self.courier.ledger
        if attempts >= retry.max_attempts:
            log.error("incident %s: %s; parked after %d attempts (its call is not affected; "
                      "see poller status)", item.key, error, attempts)
            report.parked += 1
            ledger.record_incident_failure(item.key, attempts, error, None)
            return
        delay = min(retry.backoff * 2 ** min(attempts - 1, 40), retry.max_backoff)
        next_at = self.courier.moment.utc + dt.timedelta(seconds=delay)
        log.warning("incident %s: %s; attempt %d of %d, next at %s UTC (its call is not "
                    "affected)", item.key, error, attempts, retry.max_attempts,
                    next_at.isoformat(timespec="seconds"))
        ledger.record_incident_failure(item.key, attempts, error, next_at)
