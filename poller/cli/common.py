"""The options every command takes, before the command or after it.

`poller -q run` and `poller run -q` mean the same (cron lines and habits differ), and so do
`poller --config X status` and `poller status --config X`. The options are declared on the
group and again on each command; wherever they were given, they gather in one `Globals` on the
context, and logging is set up only once the command's own options are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from poller.logs import setup_logging

CONFIG_HELP = "TOML configuration file [env POLLER_CONFIG; default /etc/poller/poller.toml]."


@dataclass
class Globals:
    """The global options as given, wherever on the command line."""

    config_path: str | None = None
    verbose: int = 0
    quiet: bool = False
    syslog: bool = False


class GlobalOption(click.Option):
    """An option of the whole program, also accepted after the command (the man page lists it
    once, under OPTIONS)."""


def _gather(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    source = ctx.get_parameter_source(param.name or "")
    if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) or not value:
        return  # a default says nothing: the other place may have the option
    given = ctx.ensure_object(Globals)
    if param.name == "verbose":
        given.verbose += value
    elif param.name == "config_path":
        given.config_path = value
    else:
        setattr(given, param.name or "", True)


def global_params(envvar: bool) -> list[click.Parameter]:
    """A fresh set of the options (click's objects belong to one command each); `envvar`: the
    group reads POLLER_CONFIG, once."""
    return [
        GlobalOption(["--config", "config_path"], metavar="PATH", help=CONFIG_HELP,
                     envvar="POLLER_CONFIG" if envvar else None, callback=_gather,
                     expose_value=False),
        GlobalOption(["-v", "--verbose"], count=True, help="Log debug detail.",
                     callback=_gather, expose_value=False),
        GlobalOption(["-q", "--quiet"], is_flag=True, help="Log warnings and errors only.",
                     callback=_gather, expose_value=False),
        GlobalOption(["--syslog"], is_flag=True, help="Also log to syslog (facility daemon).",
                     callback=_gather, expose_value=False),
    ]


def _first_paragraph(command: click.Command) -> str:
    """What `poller --help` lists beside a command: its help's first paragraph, whole (click
    would cut it at the first sentence's 45th character or so)."""
    if command.short_help:
        return command.short_help
    return " ".join((command.help or "").strip().split("\n\n")[0].split())


class PollerCommand(click.Command):
    """A command taking the global options too; logging starts once all of them are read."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_paragraph(self)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_params(envvar=False))

    def invoke(self, ctx: click.Context) -> Any:
        given = ctx.ensure_object(Globals)
        if given.verbose and given.quiet:
            raise click.UsageError("-v and -q contradict each other: give one")
        setup_logging(given.verbose, given.quiet, given.syslog)
        return super().invoke(ctx)


class PollerGroup(click.Group):
    """A group whose commands (and sub-groups' commands) take the global options; a sub-group
    takes them too (`poller archive -q build`)."""

    command_class = PollerCommand
    group_class = type  # sub-groups are PollerGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(isinstance(param, GlobalOption) for param in self.params):
            self.params.extend(global_params(envvar=False))

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_paragraph(self)
