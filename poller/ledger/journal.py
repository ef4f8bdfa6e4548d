"""Steps the target confirmed that the ledger could not take yet: never lost to a local failure.

After `createObjectref` answered with an object id, losing that id means a second object for
the call on the next run. So a confirmed step is written to the ledger with a few retries (a
lock held by another process passes) and, failing that, appended to a journal file in
state.dir that the next run applies before anything else. The journal is opened when the run
starts, so an already open file still takes the record if the folder turns read-only mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa

from poller.errors import LedgerUnavailable
from poller.model import PENDING, IncidentStage, Stage

log = logging.getLogger("poller")

RETRIES = (0.5, 1.0, 2.0)  # seconds between the tries of a confirmed step
ORDER = {stage: number for number, stage in enumerate(
    (Stage.SEEN, Stage.CREATED, Stage.ATTACHED, Stage.DONE))}
RECORDED = ("object_id", "recording", "recording_problem", "note", "last_error",
            "next_attempt_at")
INCIDENT_ORDER = {stage: number for number, stage in enumerate(
    (IncidentStage.PENDING, IncidentStage.CREATED, IncidentStage.DONE))}


class StepLedger(Protocol):
    def advance(self, key: str, stage: Stage, **values: Any) -> None: ...

    def known(self, keys: list[str]) -> dict[str, Stage]: ...

    def advance_incident(self, key: str, stage: IncidentStage, **values: Any) -> None: ...

    def incident_stages(self, keys: list[str]) -> dict[str, IncidentStage]: ...


@dataclass(frozen=True)
class Step:
    """A confirmed step of one call (or of one incident): its new stage and what the step
    produced."""

    key: str
    stage: str
    values: dict[str, Any]
    incident: bool = False

    def to_line(self) -> bytes:
        data: dict[str, Any] = {"key": self.key, "stage": self.stage, "values": self.values}
        if self.incident:
            data["incident"] = True
        return json.dumps(data, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Step:
        data = json.loads(line)
        if data.get("incident"):
            return cls(data["key"], IncidentStage(data["stage"]), dict(data["values"]), True)
        return cls(data["key"], Stage(data["stage"]), dict(data["values"]))


class Journal:
    """The fallback for confirmed steps, in `state.dir/journal`."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "journal"
        self.handle: IO[bytes] | None = None

    def open(self, ledger: StepLedger) -> None:
        """Apply what an earlier run could not record, then keep the file open for this run."""
        self.handle = open(self.path, "a+b")  # noqa: SIM115 - held for the whole run
        os.chmod(self.path, 0o600)
        self.handle.seek(0)
        lines = [line for line in self.handle.read().splitlines() if line.strip()]
        if not lines:
            return
        steps = [Step.from_line(line) for line in lines]
        known = ledger.known([step.key for step in steps if not step.incident])
        incidents = ledger.incident_stages([step.key for step in steps if step.incident])
        for step in steps:
            if step.incident:
                self._replay_incident(ledger, step, incidents)
                continue
            current = known.get(step.key)
            # only forward: a step the ledger already holds (or went past) is not replayed
            if current in PENDING and ORDER[Stage(step.stage)] > ORDER[Stage(current)]:
                ledger.advance(step.key, Stage(step.stage), **step.values)
                known[step.key] = Stage(step.stage)
                log.info("call %s: %s, as the target had confirmed (from the journal)",
                         step.key, step.stage)
        self.handle.truncate(0)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    @staticmethod
    def _replay_incident(ledger: StepLedger, step: Step,
                         stages: dict[str, IncidentStage]) -> None:
        current = stages.get(step.key)
        stage = IncidentStage(step.stage)
        if current in INCIDENT_ORDER and INCIDENT_ORDER[stage] > INCIDENT_ORDER[current]:
            ledger.advance_incident(step.key, stage, **step.values)
            stages[step.key] = stage
            log.info("incident %s: %s, as the target had confirmed (from the journal)",
                     step.key, stage)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def confirm(self, ledger: StepLedger, key: str, stage: Stage, **values: Any) -> None:
        """Record a step the target confirmed; raise LedgerUnavailable only once it is kept in
        the journal (or, if even that fails, logged with everything needed to recover it)."""
        self._confirm(lambda: ledger.advance(key, stage, **values),
                      Step(key, stage, {n: values.get(n) for n in RECORDED if n in values}))

    def confirm_incident(self, ledger: StepLedger, key: str, stage: IncidentStage,
                         **values: Any) -> None:
        """Record a step of an incident the target confirmed, as `confirm` does for calls."""
        self._confirm(lambda: ledger.advance_incident(key, stage, **values),
                      Step(key, stage, {n: values.get(n) for n in RECORDED if n in values},
                           incident=True))

    def _confirm(self, record: Any, step: Step) -> None:
        key, stage = step.key, step.stage
        error: Exception | None = None
        for delay in (0.0, *RETRIES):
            if delay:  # sleep(0) still gives the core away: on a busy PBX, for a while
                time.sleep(delay)
            try:
                record()
                return
            except sa.exc.SQLAlchemyError as exc:
                error = exc
                log.debug("call %s: recording %s failed: %s", key, stage, exc)
        reason = f"{type(error).__name__}: {getattr(error, 'orig', error)}"
        try:
            self._append(step)
        except OSError as exc:
            log.error("call %s: the target confirmed %s (%s) but neither the state database "
                      "(%s) nor the journal %s (%s) could record it", key, stage,
                      json.dumps(step.values), reason, self.path, exc)
            raise LedgerUnavailable(f"state database: cannot record call {key}: {reason}") \
                from None
        raise LedgerUnavailable(f"state database: cannot record call {key} ({reason}); kept in "
                                f"{self.path}, applied by the next run") from None

    def _append(self, step: Step) -> None:
        if self.handle is None:
            raise OSError("the journal is not open")
        self.handle.seek(0, os.SEEK_END)
        self.handle.write(step.to_line())
        self.handle.flush()
        os.fsync(self.handle.fileno())
