"""What every target is: the small interface a run delivers through, the target opened on first
use, and the one file name a call key may give."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from poller.model import Call

_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_LONGEST = 200  # bytes of a name before its suffix: file systems allow 255
_INCIDENT = ".incident"  # <name>.incident.json is the incident a call opened (archive)


def safe_name(key: str) -> str:
    """A call key as a file name, one to one: two keys never share a name.

    Keys come from the cdr table (never trust them): every byte outside letters, digits, `.`
    and `-` — `_` included, so that an escape cannot be mistaken for a key's own text — is
    written `_XX`, and so is a leading dot, and the dot of a key ending in `.incident`: the
    archive names the incident a call opens `<name>.incident.json`, and no call's record may
    take that name. A name too long for a file system keeps its head and a digest of the whole
    key.
    """
    out = []
    for position, char in enumerate(key):
        if char in _KEPT and not (position == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"_{byte:02X}" for byte in char.encode())
    name = "".join(out) or "_"
    if name.lower().endswith(_INCIDENT):
        name = f"{name[:-len(_INCIDENT)]}_2E{name[-len(_INCIDENT) + 1:]}"
    if len(name) > _LONGEST:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        name = f"{name[:_LONGEST - 33]}~{digest}"
    return name


class Target(Protocol):
    """Creates one object per call, then attaches the call's MP3 to it."""

    # True when `create` sends the MP3 in the call's own request (the webhook): `created`
    # then means the recording is there too, `attach` is never asked, and a call resumed
    # after its create needs no MP3 made again
    sends_recording_with_call: bool

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        """Create the call's object from its record (`mp3`: the call's recording, for a
        target that sends it with the call); returns the object's id."""

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        """Attach the recording to the object `create` made."""

    def create_incident(self, call: Call, parent: str, attributes: dict[str, str],
                        joined: list[str]) -> str:
        """Create the incident `call` opened, under the call's object `parent`, with its
        rendered attributes and the keys of the calls joined so far; returns its id."""

    def update_incident(self, object_id: str, call: Call, attributes: dict[str, str],
                        joined: list[str]) -> None:
        """Tell the incident `create_incident` made of the calls that joined it since."""

    def ensure(self, object_id: str, call: Call, record: dict[str, Any]) -> None:
        """Before a call is marked attached: make sure the object `create` made is all there,
        making its record again if it was lost (a replaced file system)."""

    def answers(self) -> bool:
        """A cheap probe: does the target answer at all? Asked after one call's request failed
        in transit, to tell an outage (nobody's fault) from a failure of that call."""

    def finish(self) -> None:
        """The run's deliveries are over: work that covers several calls (e.g. pages)."""

    def close(self) -> None:
        """Release connections."""


class LazyTarget:
    """The run's target, opened on first use: a run with nothing to deliver never connects."""

    def __init__(self, factory: Callable[[], Target]):
        self.factory = factory
        self.opened: Target | None = None

    def __call__(self) -> Target:
        if self.opened is None:
            self.opened = self.factory()
        return self.opened

    def answers(self) -> bool:
        """The probe of a target that was opened; one never opened has not answered yet."""
        return self.opened is not None and self.opened.answers()

    def close(self) -> None:
        if self.opened is not None:
            try:
                self.opened.finish()
            finally:
                self.opened.close()


class GuardedTarget:
    """A target that asks `check` before every side effect (it raises to stop the run): a run
    that lost the ledger's lock must not create what another host's run is creating."""

    def __init__(self, target: Target, check: Callable[[], None]):
        self.target = target
        self.check = check
        self.sends_recording_with_call = target.sends_recording_with_call

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        self.check()
        return self.target.create(call, record, mp3)

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        self.check()
        self.target.attach(object_id, call, mp3)

    def create_incident(self, call: Call, parent: str, attributes: dict[str, str],
                        joined: list[str]) -> str:
        self.check()
        return self.target.create_incident(call, parent, attributes, joined)

    def update_incident(self, object_id: str, call: Call, attributes: dict[str, str],
                        joined: list[str]) -> None:
        self.check()
        self.target.update_incident(object_id, call, attributes, joined)

    def ensure(self, object_id: str, call: Call, record: dict[str, Any]) -> None:
        self.check()
        self.target.ensure(object_id, call, record)

    def answers(self) -> bool:
        return self.target.answers()

    def finish(self) -> None:
        self.target.finish()

    def close(self) -> None:
        self.target.close()
