"""The configured target, by kind.

Each kind's module is imported inside the function that needs it: a run loads only its own
target's libraries (suds for easla, jinja2 for the archive's pages), and only once it has a call
to deliver or an archive to prune — the idle minutely run loads none of them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from poller.config.schema import Config
from poller.errors import ConfigError
from poller.targets.interface import Target


def open_target(config: Config) -> Target:
    """The configured target; imports only the module that kind needs."""
    if config.target.kind == "archive":
        from poller.targets.archive.target import ArchiveTarget

        return ArchiveTarget(config.target.archive, config.source.timezone)
    if config.target.kind == "easla":
        from poller.targets.easla.target import EaslaTarget

        return EaslaTarget(config.target.easla, config.state.dir, config.incidents)
    if config.target.kind == "webhook":
        from poller.targets.webhook.target import WebhookTarget

        return WebhookTarget(config.target.webhook)
    raise ConfigError(f"target.kind = {config.target.kind!r} is not known")


def upkeep(config: Config, today: dt.date) -> None:
    """The target's own housekeeping after a run, without opening it (no connection)."""
    keep = config.target.archive.keep_days
    if config.target.kind == "archive" and keep > 0:
        from poller.targets.archive.files import prune_archive

        root = Path(config.target.archive.dir)
        if prune_archive(root, today - dt.timedelta(days=keep)):
            from poller.targets.archive.site import ArchiveSite

            # the index must not link the days just removed
            ArchiveSite(root, config.target.archive.locale, config.source.timezone).update(())
