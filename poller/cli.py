"""The command line: a thin click layer over the library; errors become exit codes here only."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from .errors import ConfigError, ExitCode, LockHeld, PollerError

log = logging.getLogger("poller")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # suds logs whole SOAP envelopes (the login one carries the password) at debug level
    logging.getLogger("suds").setLevel(logging.WARNING)


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
    except Exception as exc:  # a bug or an unforeseen failure: say what, keep the trace for -v
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        code = ExitCode.PARTIAL
    _exit(code)


class LocalDateTime(click.ParamType):
    """A date or date-time in the source time zone."""

    name = "DATETIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        from .clock import parse_local

        try:
            return parse_local(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="POLLER_CONFIG",
              help="TOML configuration file [env POLLER_CONFIG; default /etc/poller/poller.toml].")
@click.option("-v", "--verbose", count=True, help="Log debug detail.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.version_option(package_name="asterisk-cdr-poller")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Deliver incoming calls from Asterisk's cdr table, with their recordings, to a target.

    Run `poller run` every minute from cron or a systemd timer; try `poller demo` first.
    Exit codes: 0 done (also nothing new, or another run busy), 1 some calls failed or a
    service was unreachable (retried next run), 2 bad usage or configuration.
    """
    _setup_logging(verbose, quiet)
    ctx.obj = config_path


def _load(ctx: click.Context) -> Any:
    from .config import load

    return load(ctx.obj)


@main.command()
@click.option("--since", type=LocalDateTime(),
              help="Backfill calls starting at or after this date[-time] (source time zone).")
@click.option("--until", type=LocalDateTime(),
              help="Backfill calls starting before this date[-time] (source time zone).")
@click.option("--dry-run", is_flag=True, help="Print what would be delivered; write nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Deliver at most N calls this run.")
@click.pass_context
def run(ctx: click.Context, since: dt.datetime | None, until: dt.datetime | None,
        dry_run: bool, limit: int | None) -> None:
    """Read new cdr rows and deliver the calls that are due (one batch).

    With --since/--until it backfills that range: the watermark does not move, calls already
    delivered are not delivered again, and parked calls in the range are retried.
    """

    def work() -> ExitCode:
        from .pipeline import RunOptions, run_once

        if since and until and until <= since:
            raise ConfigError("--until must be later than --since")
        config = _load(ctx)
        report = run_once(config, RunOptions(since=since, until=until, dry_run=dry_run,
                                             limit=limit))
        if dry_run:
            _print_planned(report.planned)
        log.info("run: %s", report.summary())
        return report.exit_code

    guarded(work)


def _print_planned(calls: list[Any]) -> None:
    click.echo(f"{len(calls)} calls would be delivered")
    for call in calls:
        click.echo(f"{call.start:%Y-%m-%d %H:%M:%S}  {call.key:<24} {call.status:<11} "
                   f"{call.number or '-':<16} {call.duration:>5}s  "
                   f"{len(call.recordings)} recording(s)")


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show the watermark and lag, waiting and failed calls, and the last run."""

    def work() -> ExitCode:
        from .status import collect, render

        click.echo(render(collect(_load(ctx))))
        return ExitCode.OK

    guarded(work)


@main.command()
@click.argument("directory", default="poller-demo", type=click.Path(file_okay=False))
@click.pass_context
def demo(ctx: click.Context, directory: str) -> None:
    """Build a sample cdr database with recordings in DIRECTORY and deliver it to an archive.

    The sample holds a dozen calls shaped like real Asterisk output (answered, unanswered,
    busy, impossible, a ring group, a queue, an outgoing call that is skipped); the real
    pipeline delivers them into DIRECTORY/archive. DIRECTORY/poller.toml is the config used.
    """

    def work() -> ExitCode:
        from .demo import run_demo

        report, lines = run_demo(directory)
        for line in lines:
            click.echo(line)
        return report.exit_code

    guarded(work)


if __name__ == "__main__":  # pragma: no cover
    main()
