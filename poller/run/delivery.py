"""One pending call through its remaining stages, each committed as soon as it is confirmed.

seen → (recording settled, MP3 made) → created → attached → done. A crash between two stages
resumes at the later one: the ledger holds the target's object id, so an object is never
created twice for one call. A stage is committed on its own only when another side effect
follows it: a call whose object holds everything goes from `seen` to `done` in one commit, and
`attached` is recorded apart from `done` only when the WAVs are deleted in between.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from poller.config.schema import RecordingsConfig, RetryConfig
from poller.errors import (
    ConfigError,
    DeliveryError,
    LedgerUnavailable,
    PollerError,
    RecordingsUnavailable,
    ServiceUnavailable,
    StorageUnavailable,
    TargetUnavailable,
)
from poller.ledger.journal import Journal
from poller.ledger.schema import Entry
from poller.ledger.store import Ledger
from poller.localfiles import make_folders, reason
from poller.model import Stage
from poller.recordings.files import Plan, Wait, plan_recording
from poller.recordings.transcode import Encoded, Unreadable
from poller.run.marks import Moment
from poller.run.options import RunOptions
from poller.run.report import RunReport
from poller.run.schedule import due_before, next_attempt
from poller.targets.interface import LazyTarget, safe_name

log = logging.getLogger("poller")

# encodes the files, joined in order, into the MP3 at the path; the call's duration in
# seconds bounds each file's length
Encoder = Callable[[list[Path], Path, int], Encoded]
PAGE = 100  # due calls read from the ledger at a time


@dataclass
class Courier:
    """What delivering calls needs: the ledger and its journal, the target (opened on first
    use), the encoder, the settings, the run's clock and report."""

    ledger: Ledger
    journal: Journal
    target: LazyTarget
    encode: Encoder
    recordings: RecordingsConfig
    retry: RetryConfig
    workdir: Path  # temporary MP3s
    moment: Moment
    report: RunReport


def deliver_due(courier: Courier, options: RunOptions) -> None:
    """Move every due call as far as it goes, oldest first, within --limit."""
    delivered = 0
    # a backfill delivers thousands: a line per page of them, the calls themselves under -v
    quiet = options.backfill
    for entry in _due(courier, options):
        if options.limit is not None and delivered >= options.limit:
            break
        if options.should_stop():
            log.info("stopping: the remaining calls wait for the next run")
            break
        try:
            if Delivery(courier, entry, quiet).execute():
                delivered += 1
                if quiet and delivered % PAGE == 0:
                    log.info("backfill: %d calls delivered so far, up to %s", delivered,
                             entry.call.start.isoformat(sep=" ", timespec="seconds"))
        except RecordingsUnavailable as exc:
            # only calls with recordings wait for the folder; the others go on
            if str(exc) not in courier.report.unavailable:
                log.log(options.outage_level, "%s", exc)
                courier.report.unavailable.append(str(exc))


def _due(courier: Courier, options: RunOptions) -> Iterator[Entry]:
    since, until, ledger = options.since, options.until, courier.ledger
    if options.backfill:
        requeued = ledger.requeue_failed(since=since, until=until)
        if requeued:
            log.info("backfill: %d parked calls in the range put back in line", requeued)
    last: Entry | None = None
    now = due_before(options, courier.moment.utc)
    while True:
        batch = ledger.due(now, since, until, limit=PAGE, after=last)
        if not batch:
            return
        yield from batch
        last = batch[-1]


class Delivery:
    """Moves one ledger entry forward as far as it can go in this run."""

    def __init__(self, courier: Courier, entry: Entry, quiet: bool = False):
        self.courier = courier
        self.level = logging.DEBUG if quiet else logging.INFO
        self.entry = entry
        self.call = entry.call
        self.ledger = courier.ledger
        self.report = courier.report

    def execute(self) -> bool:
        """True when the call reached `done` in this attempt."""
        try:
            return self._advance()
        except (ConfigError, RecordingsUnavailable, LedgerUnavailable):
            raise  # not this call's fault: no attempt counted
        except TargetUnavailable as exc:
            # in the middle of this call's request: a probe tells an outage (nobody's fault,
            # the run stops) from a request the target failed on (this call's)
            if not exc.in_transit or not self.courier.target.answers():
                raise
            self.fail(f"{exc} (the target answers otherwise)")
        except ServiceUnavailable:
            raise
        except sa.exc.SQLAlchemyError as exc:
            # the state database, not the call: stop, charge nobody
            raise LedgerUnavailable(f"state database: {type(exc).__name__}: "
                                    f"{getattr(exc, 'orig', exc)}") from None
        except PollerError as exc:
            self.fail(str(exc))
        except OSError as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # unforeseen: count it, so the call is parked, not stuck first
            log.exception("call %s: unexpected failure", self.entry.key)
            self.fail(f"{type(exc).__name__}: {exc}")
        return False

    def _advance(self) -> bool:
        entry, call, ledger = self.entry, self.call, self.ledger
        recordings, now = self.courier.recordings, self.courier.moment.now
        stage, object_id, recording = entry.stage, entry.object_id, entry.recording
        if stage == Stage.ATTACHED:
            # uploaded and confirmed: only the clean-up and `done` are left, and nothing here
            # may fail the call (a retry would upload it again)
            try:
                plan: Plan | Wait = plan_recording(call, recordings, now)
            except (OSError, PollerError) as exc:
                log.warning("call %s: recordings not looked at again (%s): none deleted",
                            call.key, exc)
                plan = Plan()
            return self._finish(recording, plan)
        # an object made without a recording only needs `done`: no folder to look at
        plan = (Plan() if stage == Stage.CREATED and not recording
                else plan_recording(call, recordings, now))
        if isinstance(plan, Wait):
            if stage != Stage.SEEN:
                raise DeliveryError(f"recording vanished after the object was made: {plan.note}")
            ledger.defer(call.key, plan.until.astimezone(dt.UTC).replace(tzinfo=None), plan.note)
            self.report.waiting += 1
            log.info("call %s: %s", call.key, plan.note)
            return False
        # know that the target answers before spending CPU on the recording
        target = self.courier.target()
        recording_problem = entry.recording_problem
        with_call = target.sends_recording_with_call
        # a call created without a recording, or with one its target took in the call's own
        # request, needs no encoding to be finished
        needs_mp3 = stage == Stage.SEEN or (bool(recording) and not with_call)
        with self._mp3(plan if needs_mp3 else Plan()) as (mp3, problem):
            if stage == Stage.SEEN:
                recording = f"{safe_name(call.key)}.mp3" if mp3 else None
                recording_problem = problem
                object_id = target.create(call, call.record(recording, problem), mp3)
                created = {"object_id": object_id, "recording": recording,
                           "recording_problem": problem, "note": None}
                if with_call:
                    self._count_recording(mp3)
                if (not recording or with_call) and not self._deletes(recording, plan):
                    # the object holds all of the call and no step is left before `done`:
                    # one commit records both (a crash before it leaves the call `seen`, as
                    # a crash before a `created` commit of its own would)
                    return self._finish(recording, plan, created)
                self.confirm(Stage.CREATED, **created)
                stage = Stage.CREATED
            if stage == Stage.CREATED:
                if recording and not with_call:
                    if mp3 is None:
                        raise DeliveryError(f"recording {recording} can no longer be made: "
                                            f"{problem}")
                    assert object_id is not None
                    target.attach(object_id, call, mp3)
                    self._count_recording(mp3)
                # attached means all there: a record lost since it was made is made again
                assert object_id is not None
                target.ensure(object_id, call, call.record(recording, recording_problem))
                if self._deletes(recording, plan):
                    # the WAVs go only once the upload is on record
                    self.confirm(Stage.ATTACHED)
        return self._finish(recording, plan)

    def _deletes(self, recording: str | None, plan: Plan | Wait) -> bool:
        """Whether finishing the call deletes its WAVs: a step that needs the upload recorded
        first, on a commit of its own."""
        return bool(recording) and self.courier.recordings.after_upload == "delete" and \
            isinstance(plan, Plan)

    def _finish(self, recording: str | None, plan: Plan | Wait,
                created: Mapping[str, object] | None = None) -> bool:
        """After a confirmed upload: delete the WAVs if asked, and mark the call done (with
        what its creation produced, when that is recorded in the same commit)."""
        call = self.call
        if self._deletes(recording, plan):
            assert isinstance(plan, Plan)
            _delete(plan.files)
        self.confirm(Stage.DONE, last_error=None, next_attempt_at=None, **(created or {}))
        self.report.delivered[call.status] += 1
        log.log(self.level, "call %s delivered: %s from %s, %ss%s", call.key, call.status,
                 call.number or "unknown", call.duration,
                 f", recording {recording}" if recording else "")
        return True

    def _count_recording(self, mp3: Path | None) -> None:
        if mp3 is not None:
            self.report.recordings += 1
            self.report.recording_bytes += mp3.stat().st_size

    def confirm(self, stage: Stage, **values: object) -> None:
        """A step the target confirmed: recorded, or kept in the journal for the next run."""
        self.courier.journal.confirm(self.ledger, self.call.key, stage, **values)

    @contextlib.contextmanager
    def _mp3(self, plan: Plan) -> Iterator[tuple[Path | None, str | None]]:
        """The call's MP3 in state.dir (removed on every path), or None with the problem."""
        if not plan.files:
            yield None, plan.problem
            return
        workdir = self.courier.workdir
        try:
            make_folders(workdir)
            fd, name = tempfile.mkstemp(prefix=f"{safe_name(self.call.key)}.", suffix=".mp3",
                                        dir=workdir)
        except OSError as exc:  # state.dir's, not the call's: stop, charge nobody
            raise StorageUnavailable(f"state.dir: cannot write in {workdir}: {reason(exc)}"
                                     ) from None
        os.close(fd)
        path = Path(name)
        try:
            try:
                encoded = self.courier.encode(list(plan.files), path, self.call.duration)
            except Unreadable as exc:
                log.warning("call %s: recording %s unreadable: %s", self.call.key,
                            ", ".join(str(f) for f in plan.files), exc)
                yield None, "unreadable"
                return
            log.debug("call %s: %.1f s of audio encoded (encoder peak %d KiB)", self.call.key,
                      encoded.seconds, encoded.peak_rss_kb)
            yield path, None
        finally:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                # never in place of the run's own outcome (state.dir gone read-only after a
                # step the ledger refused would pass for this call's failure); the next run
                # clears tmp
                log.warning("could not remove %s: %s", path, exc)

    def fail(self, error: str) -> None:
        entry, retry, report = self.entry, self.courier.retry, self.report
        report.failures += 1
        attempts = entry.attempts + 1
        next_at = next_attempt(attempts, retry, self.courier.moment.utc)
        if next_at is None:
            log.error("call %s: %s; parked after %d attempts (see poller status)",
                      entry.key, error, attempts)
            report.parked += 1
            self.ledger.record_failure(entry, error, None)
            return
        log.warning("call %s: %s; attempt %d of %d, next at %s UTC", entry.key, error, attempts,
                    retry.max_attempts, next_at.isoformat(timespec="seconds"))
        self.ledger.record_failure(entry, error, next_at)


def _delete(files: tuple[Path, ...]) -> None:
    for path in files:
        try:
            path.unlink()
        except OSError as exc:
            log.warning("after upload: could not delete %s: %s", path, exc)
