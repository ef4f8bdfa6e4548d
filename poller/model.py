"""The typed values that flow through a run: cdr legs in, call records out."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How a call ended (design §3); UNBUILT marks the stand-in of a call whose legs could not
    be built, which is never delivered."""

    ANSWERED = "answered"
    UNANSWERED = "unanswered"
    BUSY = "busy"
    IMPOSSIBLE = "impossible"
    UNBUILT = "unbuilt"


# the outcomes a target is told about (and the keys of target.easla.statuses)
STATUSES = (Status.ANSWERED, Status.UNANSWERED, Status.BUSY, Status.IMPOSSIBLE)
UNBUILT = Status.UNBUILT


class Stage(StrEnum):
    """Where a call is on its way through the ledger: seen → created → attached → done, or
    stopped at failed (parked) or skipped (not incoming)."""

    SEEN = "seen"
    CREATED = "created"
    ATTACHED = "attached"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


PENDING = (Stage.SEEN, Stage.CREATED, Stage.ATTACHED)


class IncidentStage(StrEnum):
    """Where an incident is: pending (its opening call has no object yet, or the incident's
    own create failed) → created (the target holds it, not yet with every call that joined)
    → done; or failed (parked after retry.max_attempts)."""

    PENDING = "pending"
    CREATED = "created"
    DONE = "done"
    FAILED = "failed"


KEY_LENGTH = 96  # what every ledger back-end holds (a MySQL VARCHAR(96) primary key)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fit_key(raw: str) -> str:
    """A call key as the ledger keeps it: a longer one keeps its head and a digest of all."""
    if len(raw) <= KEY_LENGTH:
        return raw
    return f"{raw[:KEY_LENGTH - 17]}~{_digest(raw)[:16]}"


def source_key(pbx: str, raw: str) -> str:
    """A call key as the ledger keeps it for source `pbx` (source.name): `<pbx>:<id>` when
    named, since two PBXs write the same uniqueids; the id alone when not, as ledgers made
    before names existed hold it."""
    return fit_key(f"{pbx}:{raw}" if pbx else raw)


def source_id(pbx: str, key: str) -> str:
    """The id a call key was made of, as the PBX wrote it (`source_key` undone)."""
    return key.removeprefix(f"{pbx}:") if pbx else key


def reused_key(key: str, first_calldate: dt.datetime) -> str:
    """The key of a call that met a key the ledger holds for a call long before it (a PBX
    restarted with a reset counter, a cloned systemname): the same key, told apart by when."""
    return fit_key(f"{key}@{first_calldate:%Y%m%dT%H%M%S}")


@dataclass(frozen=True)
class Leg:
    """One cdr row, decoded: text is str, calldate is naive local time as the PBX wrote it."""

    calldate: dt.datetime
    uniqueid: str
    linkedid: str
    sequence: int
    clid: str
    src: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    duration: int
    billsec: int
    disposition: str
    did: str = ""
    cnum: str = ""
    cnam: str = ""
    recordingfile: str = ""
    accountcode: str = ""
    userfield: str = ""
    cursor: Any = None  # the value of source.cursor when that is not calldate
    pbx: str = ""  # source.name of the PBX that wrote the row

    @classmethod
    def of_values(cls, values: dict[str, Any]) -> Leg:
        """A leg from a value for every field, made without the frozen __init__ (a backfill
        makes millions of legs, and its 22 object.__setattr__ calls a leg cost more than
        reading the row). `values` must name every field; it becomes the leg's own."""
        leg = object.__new__(cls)
        leg.__dict__.update(values)
        return leg

    @property
    def key(self) -> str:
        """The call this leg belongs to: linkedid, else its own uniqueid; a row with neither
        is a call of its own, named by what it holds (never merged with another such row).
        Prefixed with the PBX's name when it has one (source_key)."""
        raw = self.linkedid.strip() or self.uniqueid.strip()
        if not raw:
            raw = "row-" + _digest(repr(self.identity + (self.src, self.dst)))[:20]
        return source_key(self.pbx, raw)

    @property
    def end(self) -> dt.datetime:
        return self.calldate + dt.timedelta(seconds=max(self.duration, 0))

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes two rows the same leg (two CDR back-ends writing one table)."""
        return (self.uniqueid, self.sequence, self.channel, self.dstchannel, self.calldate,
                self.disposition)


@dataclass(frozen=True)
class Record:
    """The call record a target receives (design §8 and §10): its fields are the names the
    attribute mapping, the incident templates and the archive use, defined here once.

    `caller_extra` is not a field of its own: it holds the directory columns named in
    callers.fields, which the record shows as one `caller_<column>` field each."""

    key: str
    start: str  # ISO 8601 with the source zone's offset
    number: str
    name: str
    did: str
    duration: int
    talk_time: int
    wait_time: int
    status: str
    answered_by: str
    recording: str | None
    recording_problem: str | None
    number_e164: str | None = None  # the caller's number in E.164, when it parses
    caller_id: str | None = None  # the directory's id of a known caller
    caller_name: str | None = None  # the directory's name of a known caller
    caller_extra: tuple[tuple[str, str | None], ...] = ()  # (column, value) per callers.fields
    incident: str | None = None  # the key of the call that opened the call's incident
    pbx: str = ""  # source.name: which PBX the call came through ("" when unnamed)

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in RECORD_FIELDS if name != "incident"}
        data.update((f"caller_{column}", value) for column, value in self.caller_extra)
        data["incident"] = self.incident
        return data


RECORD_FIELDS = tuple(f.name for f in fields(Record) if f.name != "caller_extra")


def record_fields(caller_columns: Sequence[str] = ()) -> tuple[str, ...]:
    """Every field of a record, with one `caller_<column>` per name in callers.fields."""
    fixed = [name for name in RECORD_FIELDS if name != "incident"]
    return (*fixed, *(f"caller_{column}" for column in caller_columns), "incident")


@dataclass(frozen=True)
class Call:
    """A call built from its legs: the call record plus what delivery needs."""

    key: str
    start: dt.datetime  # aware, in the source time zone
    end: dt.datetime  # aware
    number: str
    name: str
    did: str
    duration: int
    talk_time: int
    wait_time: int
    status: Status
    answered_by: str
    incoming: bool
    recordings: tuple[str, ...]  # relative names under recordings.dir, in time order
    expects_recording: bool
    first_calldate: dt.datetime  # naive local, for windows
    last_calldate: dt.datetime  # naive local, for the watermark
    unknown_dispositions: tuple[str, ...] = ()
    legs: int = 0  # distinct cdr rows it was built from
    anomalies: tuple[str, ...] = ()  # what was wrong with its rows, and what was made of it
    # decided once, when the scan records the call, and kept with it: a retry sends the same
    number_e164: str | None = None
    caller: tuple[tuple[str, str | None], ...] = ()  # caller_id, caller_name, caller_<column>
    incident: str | None = None
    # `recordings` are places to look, in order, not files to join: the first that holds a
    # file is the recording, and none holding one means the call has none (recording_search)
    recording_search: bool = False
    pbx: str = ""  # source.name of the PBX it came through

    def starts_within(self, since: dt.datetime | None, until: dt.datetime | None) -> bool:
        """Whether the call's first leg lies in [since, until) (naive local; None: open)."""
        return ((since is None or self.first_calldate >= since)
                and (until is None or self.first_calldate < until))

    def record(self, recording: str | None, problem: str | None) -> dict[str, Any]:
        """The fields of the call record, exactly, as JSON-ready values."""
        caller = dict(self.caller)
        extra = tuple((name.removeprefix("caller_"), value) for name, value in self.caller
                      if name not in ("caller_id", "caller_name"))
        return Record(self.key, self.start.isoformat(), self.number, self.name, self.did,
                      self.duration, self.talk_time, self.wait_time, str(self.status),
                      self.answered_by, recording, problem, self.number_e164,
                      caller.get("caller_id"), caller.get("caller_name"), extra,
                      self.incident, self.pbx).to_json()

    def to_json(self) -> dict[str, Any]:
        # a shallow copy: asdict's deep copy of every value was a quarter of a backfill's
        # time, and the tuples it would copy are turned into lists below anyway
        data = {name: getattr(self, name) for name in _CALL_ATTRIBUTES}
        for name in ("start", "end", "first_calldate", "last_calldate"):
            data[name] = getattr(self, name).isoformat()
        data["recordings"] = list(self.recordings)
        data["unknown_dispositions"] = list(self.unknown_dispositions)
        data["anomalies"] = list(self.anomalies)
        data["caller"] = [list(pair) for pair in self.caller]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Call:
        values = dict(data)
        for name in ("start", "end", "first_calldate", "last_calldate"):
            values[name] = dt.datetime.fromisoformat(values[name])
        values["status"] = Status(values["status"])
        values["recordings"] = tuple(values["recordings"])
        values["unknown_dispositions"] = tuple(values.get("unknown_dispositions", ()))
        values["anomalies"] = tuple(values.get("anomalies", ()))
        values["caller"] = tuple((name, value) for name, value in values.get("caller", ()))
        return cls(**values)


_CALL_ATTRIBUTES = tuple(f.name for f in fields(Call))
