"""The one place where the library's errors become messages and exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from poller.cli.common import Globals
from poller.config.load import load
from poller.errors import ConfigError, ExitCode, LockHeld, PollerError
from poller.ops.privileges import refuse_root_on_foreign_state

log = logging.getLogger("poller")


def load_config(ctx: click.Context, writes: bool = True, warn_exposed: bool = True) -> Any:
    """The configuration the command line names (`--config`, else the environment's). A
    command that `writes` (or checks what the runs write) refuses root on the poller's
    state.dir."""

    given = ctx.find_object(Globals)
    config = load(given.config_path if given is not None else None, warn_exposed=warn_exposed)
    if writes:
        refuse_root_on_foreign_state(config.state.dir)
    return config


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _exit(code: ExitCode) -> NoReturn:
    sys.exit(int(code))


def guarded(work: Callable[[], ExitCode]) -> NoReturn:
    """Run a command; the one place that turns the library's errors into messages and codes."""
    # SIGTERM (systemd, kill) unwinds like Ctrl-C, so temporary files and the encoder child
    # are cleaned up and the ledger keeps only confirmed stages
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = work()
    except LockHeld as exc:
        log.info("%s; nothing to do", exc)
        code = ExitCode.OK
    except ConfigError as exc:
        log.error("%s", exc)
        code = ExitCode.CONFIG
    except PollerError as exc:
        log.error("%s", exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        code = ExitCode.PARTIAL
    except BrokenPipeError as exc:
        if not _stdout_closed():
            log.error("unexpected error: %s: %s", type(exc).__name__, exc)
            log.debug("traceback", exc_info=True)
            _exit(ExitCode.PARTIAL)
        # `poller run --dry-run | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout for the rest of exit
        code = ExitCode.OK
    except Exception as exc:  # a bug or an unforeseen failure: say what, keep the trace for -v
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        code = ExitCode.PARTIAL
    _exit(code)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader went away."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))
