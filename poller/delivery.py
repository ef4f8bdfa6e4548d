"""One pending call through its remaining stages, each committed as soon as it is confirmed.

seen → (recording settled, MP3 made) → created → attached → done. A crash between two stages
resumes at the later one: the ledger holds the target's object id, so an object is never
created twice for one call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    ConfigError,
    DeliveryError,
    PollerError,
    RecordingsUnavailable,
    ServiceUnavailable,
)
from .ledger import ATTACHED, CREATED, DONE, SEEN, Entry
from .recordings import Plan, Wait, plan_recording
from .targets import safe_name

if TYPE_CHECKING:
    from .pipeline import Run

log = logging.getLogger("poller")


class Delivery:
    """Moves one ledger entry forward as far as it can go in this run."""

    def __init__(self, run: Run, entry: Entry):
        self.run = run
        self.entry = entry
        self.call = entry.call
        self.config = run.config

    def execute(self) -> bool:
        """True when the call reached `done` in this attempt."""
        try:
            return self._advance()
        except (ConfigError, RecordingsUnavailable):
            raise  # not this call's fault: no attempt counted
        except ServiceUnavailable as exc:
            # the target is down: count this call's attempt, leave the others for the next run
            self.fail(str(exc))
            raise
        except PollerError as exc:
            self.fail(str(exc))
        except OSError as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # unforeseen: count it, so the call is parked, not stuck first
            log.exception("call %s: unexpected failure", self.entry.key)
            self.fail(f"{type(exc).__name__}: {exc}")
        return False

    def _advance(self) -> bool:
        entry, call, ledger = self.entry, self.call, self.run.ledger
        stage, object_id, recording = entry.stage, entry.object_id, entry.recording
        if stage == ATTACHED:
            # uploaded and confirmed: only the clean-up and `done` are left, and nothing here
            # may fail the call (a retry would upload it again)
            try:
                plan: Plan | Wait = plan_recording(call, self.config.recordings, self.run.now)
            except (OSError, PollerError) as exc:
                log.warning("call %s: recordings not looked at again (%s): none deleted",
                            call.key, exc)
                plan = Plan()
            return self._finish(recording, plan)
        # an object made without a recording only needs `done`: no folder to look at
        plan = (Plan() if stage == CREATED and not recording
                else plan_recording(call, self.config.recordings, self.run.now))
        if isinstance(plan, Wait):
            if stage != SEEN:
                raise DeliveryError(f"recording vanished after the object was made: {plan.note}")
            ledger.defer(call.key, plan.until.astimezone(dt.UTC).replace(tzinfo=None), plan.note)
            self.run.report.waiting += 1
            log.info("call %s: %s", call.key, plan.note)
            return False
        # a call created without a recording needs no encoding to be finished
        with self._mp3(plan if stage == SEEN or recording else Plan()) as (mp3, problem):
            if stage == SEEN:
                recording = f"{safe_name(call.key)}.mp3" if mp3 else None
                record = call.record(recording, problem)
                object_id = self.run.target().create(call, record)
                ledger.advance(call.key, CREATED, object_id=object_id, recording=recording,
                               recording_problem=problem, note=None)
                stage = CREATED
            if stage == CREATED:
                if recording:
                    if mp3 is None:
                        raise DeliveryError(f"recording {recording} can no longer be made: "
                                            f"{problem}")
                    assert object_id is not None
                    self.run.target().attach(object_id, call, mp3)
                    self.run.report.recordings += 1
                    self.run.report.recording_bytes += mp3.stat().st_size
                ledger.advance(call.key, ATTACHED)
        return self._finish(recording, plan)

    def _finish(self, recording: str | None, plan: Plan | Wait) -> bool:
        """After a confirmed upload: delete the WAVs if asked, and mark the call done."""
        call = self.call
        if recording and self.config.recordings.after_upload == "delete" and \
                isinstance(plan, Plan):
            _delete(plan.files)
        self.run.ledger.advance(call.key, DONE, last_error=None, next_attempt_at=None)
        self.run.report.delivered[call.status] += 1
        log.info("call %s delivered: %s from %s, %ss%s", call.key, call.status,
                 call.number or "unknown", call.duration,
                 f", recording {recording}" if recording else "")
        return True

    @contextlib.contextmanager
    def _mp3(self, plan: Plan) -> Iterator[tuple[Path | None, str | None]]:
        """The call's MP3 in state.dir (removed on every path), or None with the problem."""
        if not plan.files:
            yield None, plan.problem
            return
        from .transcode import Unreadable, to_mp3

        workdir = Path(self.config.state.dir) / "tmp"
        workdir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{safe_name(self.call.key)}.", suffix=".mp3",
                                    dir=workdir)
        os.close(fd)
        path = Path(name)
        try:
            try:
                encoded = to_mp3(list(plan.files), path, self.config.transcode)
            except Unreadable as exc:
                log.warning("call %s: recording %s unreadable: %s", self.call.key,
                            ", ".join(str(f) for f in plan.files), exc)
                yield None, "unreadable"
                return
            log.debug("call %s: %.1f s of audio encoded (encoder peak %d KiB)", self.call.key,
                      encoded.seconds, encoded.peak_rss_kb)
            yield path, None
        finally:
            path.unlink(missing_ok=True)

    def fail(self, error: str) -> None:
        entry, retry = self.entry, self.config.retry
        report = self.run.report
        report.failures += 1
        attempts = entry.attempts + 1
        if attempts >= retry.max_attempts:
            log.error("call %s: %s; parked after %d attempts (see poller status)",
                      entry.key, error, attempts)
            report.parked += 1
            self.run.ledger.record_failure(entry, error, None)
            return
        # the exponent is capped: max_backoff is reached long before, and floats overflow
        delay = min(retry.backoff * 2 ** min(attempts - 1, 40), retry.max_backoff)
        next_at = self.run.now.replace(tzinfo=None) + dt.timedelta(seconds=delay)
        log.warning("call %s: %s; attempt %d of %d, next at %s UTC", entry.key, error, attempts,
                    retry.max_attempts, next_at.isoformat(timespec="seconds"))
        self.run.ledger.record_failure(entry, error, next_at)


def _delete(files: tuple[Path, ...]) -> None:
    for path in files:
        try:
            path.unlink()
        except OSError as exc:
            log.warning("after upload: could not delete %s: %s", path, exc)
