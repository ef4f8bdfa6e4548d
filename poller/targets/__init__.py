"""Where calls go: one module per target behind one small interface."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..config import Config
from ..errors import ConfigError
from ..model import Call

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(key: str) -> str:
    """A call key fit for a file name (keys come from the cdr table: never trust them)."""
    name = _UNSAFE.sub("_", key).lstrip(".")
    return name or "_"


class Target(Protocol):
    """Creates one object per call, then attaches the call's MP3 to it."""

    def create(self, call: Call, record: dict[str, Any]) -> str:
        """Create the call's object from its record; returns the object's id."""

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        """Attach the recording to the object `create` made."""

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


def open_target(config: Config) -> Target:
    """The configured target; imports only the module that kind needs."""
    if config.target.kind == "archive":
        from .archive import ArchiveTarget

        return ArchiveTarget(config.target.archive, config.source.timezone)
    if config.target.kind == "easla":
        from .easla import EaslaTarget

        return EaslaTarget(config.target.easla, config.state.dir)
    raise ConfigError(f"target.kind = {config.target.kind!r} is not known")


def upkeep(config: Config, today: dt.date) -> None:
    """The target's own housekeeping after a run, without opening it (no connection)."""
    keep = config.target.archive.keep_days
    if config.target.kind == "archive" and keep > 0:
        from .archive import prune_archive

        prune_archive(Path(config.target.archive.dir), today - dt.timedelta(days=keep))
