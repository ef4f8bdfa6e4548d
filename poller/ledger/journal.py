"""Steps the target confirmed that the ledger could not take yet: never lost to a local failure.

After `createObjectref` answered with an object id, losing that id means a second object for
the call on the next run. So a confirmed step is written to the ledger with a few retries (a
lock held by another process passes) and, failing that, appended to a journal file in
state.dir that the next run applies before anything else. The journal is opened when the run
starts, so an already open file still takes the record if the folder turns read-only mid-run.

A line that cannot be read (torn by a kill mid-append, damaged) never stops the runs: it is set
aside in `journal.bad` with a warning and the other lines are applied; `poller check` fails
while anything is set aside, for someone to look at what it held.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa

from poller.errors import LedgerUnavailable, StorageUnavailable
from poller.localfiles import reason
from poller.model import PENDING, IncidentStage, Stage

log = logging.getLogger("poller")

RETRIES = (0.5, 1.0, 2.0)  # seconds between the tries of a confirmed step
ORDER = {stage: number for number, stage in enumerate(
    (Stage.SEEN, Stage.CREATED, Stage.ATTACHED, Stage.DONE))}
RECORDED = ("object_id", "recording", "recording_problem", "note", "last_error",
            "next_attempt_at")
INCIDENT_ORDER = {stage: number for number, stage in enumerate(
    (IncidentStage.PENDING, IncidentStage.CREATED, IncidentStage.DONE))}
SET_ASIDE = "journal.bad"  # lines the runs could not read, kept for someone to look at


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
        """The step a journal line holds; ValueError saying why it holds none."""
        try:
            data = json.loads(line)
        except UnicodeDecodeError:
            raise ValueError("not UTF-8") from None
        except ValueError:
            raise ValueError("not JSON (a line torn by a kill, or damaged)") from None
        if not isinstance(data, dict):
            raise ValueError("not a step (a JSON object)")
        key, values, incident = data.get("key"), data.get("values"), data.get("incident", False)
        if not isinstance(key, str) or not key:
            raise ValueError("no call key")
        if not isinstance(values, dict):
            raise ValueError("its values are not a table")
        unknown = set(values) - set(RECORDED)
        if unknown:
            raise ValueError(f"unknown values {sorted(unknown)}")
        if any(value is not None and not isinstance(value, str) for value in values.values()):
            raise ValueError("a value is not text")
        order: dict[Any, int] = INCIDENT_ORDER if incident is True else ORDER
        stage = next((s for s in order if s == data.get("stage")), None)
        if stage is None or not isinstance(incident, bool):
            raise ValueError(f"not a stage the journal records: {data.get('stage')!r}")
        return cls(key, stage, dict(values), incident)


@dataclass(frozen=True)
class Unreadable:
    """A journal line that holds no step, and why."""

    number: int
    text: bytes
    why: str


def parse_lines(data: bytes) -> tuple[list[Step], list[Unreadable]]:
    """The steps of a journal's content, and the lines that hold none (numbered from 1)."""
    steps: list[Step] = []
    unreadable: list[Unreadable] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            steps.append(Step.from_line(line))
        except ValueError as exc:
            unreadable.append(Unreadable(number, line, str(exc)))
    return steps, unreadable


def problems(state_dir: str | Path) -> list[str]:
    """What `poller check` reports of the journal: lines the next run would set aside, a
    journal that is not a file, and what earlier runs set aside."""
    path = Path(state_dir) / "journal"
    found = []
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            found.append(f"{path} is not a file: the next run sets it aside")
        else:
            _, unreadable = parse_lines(path.read_bytes())
            found += [f"{path} line {bad.number} holds no step ({bad.why}): the next run sets "
                      f"it aside" for bad in unreadable]
    except FileNotFoundError:
        pass
    for aside in sorted(Path(state_dir).glob(f"{SET_ASIDE}*")):
        found.append(f"{aside} holds what the runs could not read from the journal (steps the "
                     "target had confirmed: an object made again is a duplicate): look at it, "
                     "then remove it")
    return found


class Journal:
    """The fallback for confirmed steps, in `state.dir/journal`."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "journal"
        self.handle: IO[bytes] | None = None

    def open(self, ledger: StepLedger) -> None:
        """Apply what an earlier run could not record, then keep the file open for this run.

        A line that holds no step is set aside; a journal that cannot be opened is a local
        outage (StorageUnavailable), a ledger that refuses the steps LedgerUnavailable: the
        journal is then kept as it is for the next run."""
        self._set_aside_if_not_a_file()
        try:
            self.handle = open(self.path, "a+b")  # noqa: SIM115 - held for the whole run
            os.chmod(self.path, 0o600)
            self.handle.seek(0)
            data = self.handle.read()
        except OSError as exc:
            self.close()
            raise StorageUnavailable(f"state.dir: cannot open the journal {self.path}: "
                                     f"{reason(exc)}") from None
        steps, unreadable = parse_lines(data)
        if unreadable:
            self._set_aside(unreadable)
        if steps:
            try:
                self._replay(ledger, steps)
            except sa.exc.SQLAlchemyError as exc:
                raise LedgerUnavailable(f"state database: cannot apply the journal {self.path}: "
                                        f"{type(exc).__name__}: {getattr(exc, 'orig', exc)}"
                                        ) from None
        if steps or unreadable:
            self.handle.truncate(0)
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def _replay(self, ledger: StepLedger, steps: list[Step]) -> None:
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

    def _set_aside_if_not_a_file(self) -> None:
        """Something other than a file where the journal goes (a directory): moved aside."""
        try:
            if stat.S_ISREG(self.path.lstat().st_mode):
                return
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageUnavailable(f"state.dir: cannot look at the journal {self.path}: "
                                     f"{reason(exc)}") from None
        aside = next(self.path.with_name(f"{SET_ASIDE}.{n}") for n in range(1, 10_000)
                     if not self.path.with_name(f"{SET_ASIDE}.{n}").exists())
        try:
            os.rename(self.path, aside)
        except OSError as exc:
            raise StorageUnavailable(f"state.dir: {self.path} is not a file and cannot be set "
                                     f"aside: {reason(exc)}") from None
        log.warning("%s was not a file: set aside as %s (look at it, then remove it; "
                    "`poller check` fails while it is there)", self.path, aside)

    def _set_aside(self, unreadable: list[Unreadable]) -> None:
        """Lines holding no step go to journal.bad, each said; if even that cannot be
        written, the log keeps them whole."""
        aside = self.path.with_name(SET_ASIDE)
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as handle:
                handle.write(b"".join(bad.text + b"\n" for bad in unreadable))
                handle.flush()
                os.fsync(handle.fileno())
            kept = f"set aside in {aside}"
        except OSError as exc:
            kept = f"not kept ({aside}: {reason(exc)}): it read {{text}}"
        for bad in unreadable:
            log.warning("journal %s line %d holds no step (%s): %s; the step it held, if any, "
                        "was not applied (look at it, then remove %s; `poller check` fails "
                        "while it is there)", self.path, bad.number, bad.why,
                        kept.format(text=repr(bad.text)), SET_ASIDE)

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
