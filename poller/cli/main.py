"""The command line: a thin click layer over the library (its errors become exit codes in
guard.py).

Each command imports the modules of its own work inside its function: the minutely `run`
loads neither status, check nor retry, and `status` does not load the pipeline."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import click

from poller.cli.common import Globals, PollerGroup, global_params
from poller.cli.extras import archive, demo
from poller.cli.guard import guarded, load_config
from poller.cli.progress import progress_bar
from poller.clock import parse_local
from poller.config.schema import parse_duration
from poller.errors import ConfigError, ExitCode, PollerError
from poller.logs import escape_controls
from poller.recordings.files import RecordingDenied, Wait, plan_recording
from poller.run.options import RunOptions
from poller.run.report import plural

log = logging.getLogger("poller")


class LocalDateTime(click.ParamType):
    """A date or date-time in the source time zone."""

    name = "DATETIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value

        try:
            return parse_local(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(cls=PollerGroup, context_settings={"help_option_names": ["-h", "--help"]},
             params=global_params(envvar=True))
@click.version_option(None, "-V", "--version", package_name="asterisk-cdr-poller",
                      prog_name="poller")
def main() -> None:
    """Deliver incoming calls from Asterisk's cdr table, with their recordings, to a target.

    Run `poller run` every minute from cron or a systemd timer; try `poller demo` first.
    The global options may also follow the command (`poller run -q`).
    Exit codes: 0 done (also nothing new, or another run busy), 1 some calls failed or a
    service was unreachable (retried next run), 2 bad usage or configuration.
    """


@main.command()
@click.option("--since", type=LocalDateTime(),
              help="Backfill calls starting at or after this date[-time] (source time zone).")
@click.option("--until", type=LocalDateTime(),
              help="Backfill calls starting before this date[-time] (source time zone).")
@click.option("--dry-run", is_flag=True, help="Print what would be delivered; write nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Deliver at most N calls this run.")
@click.option("--force", is_flag=True,
              help="Backfill even before the point where the ledger forgot delivered calls "
                   "(state.retention): those are delivered again.")
@click.option("--metrics-file", metavar="PATH",
              help="Write Prometheus metrics here after each run (else [metrics] file).")
@click.option("--follow", is_flag=True,
              help="Keep running: poll every --interval (for a systemd service).")
@click.option("--interval", metavar="DURATION",
              help="Time between polls in --follow mode [default: 15s].")
@click.pass_context
def run(ctx: click.Context, since: dt.datetime | None, until: dt.datetime | None,
        dry_run: bool, force: bool, limit: int | None, metrics_file: str | None, follow: bool,
        interval: str | None) -> None:
    """Read new cdr rows and deliver the calls that are due (one batch).

    With --since/--until it backfills that range: the watermark does not move, calls already
    delivered are not delivered again, and failed calls in the range (parked or backing off)
    are retried at once.

    With --follow it polls every --interval in one long-running process, holding the lock only
    while it works a batch; SIGTERM stops it after the call in hand.
    """

    def work() -> ExitCode:
        from poller.run.pipeline import run_once

        if since and until and until <= since:
            raise ConfigError("--until must be later than --since")
        if until and not since:
            raise ConfigError("--until needs --since (a backfill is a range)")
        if force and not since:
            raise ConfigError("--force only applies to a backfill (--since)")
        if interval is not None and not follow:
            raise ConfigError("--interval only applies to --follow")
        if follow and (since or until or dry_run or limit):
            raise ConfigError("--follow cannot be combined with --since, --until, --dry-run "
                              "or --limit")
        config = load_config(ctx)
        if follow:
            from poller.run.follow import follow as follow_loop

            try:
                seconds = parse_duration(interval or "15s")
            except ValueError as exc:
                raise ConfigError(f"--interval: {exc}") from None
            if seconds < 1:
                raise ConfigError("--interval must be at least 1s")
            return follow_loop(config, seconds, metrics_file)
        progress = progress_bar() if (since or until) and not dry_run else None
        try:
            report = run_once(config, RunOptions(since=since, until=until, dry_run=dry_run,
                                                 force=force, limit=limit,
                                                 metrics_file=metrics_file, progress=progress))
        finally:
            if progress is not None:
                progress.finish()
        if dry_run:
            _print_planned(report.planned, config)
            log.info("dry run, nothing written: %s", report.summary())
        else:
            log.info("%s: %s", "backfill done" if since or until else "run", report.summary())
        return report.exit_code

    guarded(work)


def _print_planned(calls: list[Any], config: Any) -> None:
    click.echo(f"{plural(len(calls), 'call')} would be delivered")
    for call in calls:
        click.echo(escape_controls(
            f"{call.start:%Y-%m-%d %H:%M:%S}  {call.key:<24} {call.status:<11} "
            f"{call.number or '-':<16} {call.duration:>5}s  {_recording_note(call, config)}"))


def _recording_note(call: Any, config: Any) -> str:
    """What a real run would attach now: files with audio, not MixMonitor's bare headers."""
    if not call.recordings:
        return "no recording"
    try:
        plan = plan_recording(call, config.recordings, dt.datetime.now(dt.UTC))
    except RecordingDenied as exc:
        return f"would fail: {exc}"
    except PollerError:
        return "recordings.dir missing: would wait"
    if isinstance(plan, Wait):
        return f"would wait: {plan.note}"
    if plan.files:
        return plural(len(plan.files), "recording")
    return f"no recording ({plan.problem})"


@main.command()
@click.option("--since", type=LocalDateTime(), required=True,
              help="Calls starting at or after this date[-time] (source time zone).")
@click.option("--until", type=LocalDateTime(),
              help="Calls starting before this date[-time] (source time zone).")
@click.option("--dry-run", is_flag=True, help="Print what would be delivered; write nothing.")
@click.pass_context
def reconcile(ctx: click.Context, since: dt.datetime, until: dt.datetime | None,
              dry_run: bool) -> None:
    """Deliver the calls of a range that Master.csv holds and the cdr table lost.

    Reads [source.reconcile] csv and its rotated copies; a call whose rows the table lacks
    (cdr_adaptive_odbc drops a CDR while its database is away) is delivered from its
    Master.csv lines. A call in both is the table's, and none is delivered twice.
    """

    def work() -> ExitCode:
        from poller.run.pipeline import run_once

        if until and until <= since:
            raise ConfigError("--until must be later than --since")
        config = load_config(ctx)
        if not config.source.reconcile.enabled:
            raise ConfigError("poller reconcile needs [source.reconcile] csv = the Master.csv "
                              "written beside the cdr table")
        report = run_once(config, RunOptions(since=since, until=until, dry_run=dry_run,
                                             reconcile=True))
        if dry_run:
            _print_planned(report.planned, config)
        log.info("reconcile: %s", report.summary())
        return report.exit_code

    guarded(work)


SOURCE_OPTION = click.option(
    "--source", "source_name", metavar="NAME",
    help="Another source's part of a shared ledger (its source.name; \"\" for the unnamed).")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in the README).")
@SOURCE_OPTION
@click.pass_context
def status(ctx: click.Context, as_json: bool, source_name: str | None) -> None:
    """Show the watermark and lag, waiting and failed calls, and the last run."""

    def work() -> ExitCode:
        from poller.config.checks import with_source
        from poller.ops.status import collect, render, to_json

        config = load_config(ctx, writes=False)
        current = collect(with_source(config, source_name),
                          own_source=source_name in (None, config.source.name))
        if as_json:
            click.echo(json.dumps(to_json(current), indent=2, ensure_ascii=False))
        else:
            click.echo(render(current))
        return ExitCode.PARTIAL if current.failing else ExitCode.OK

    guarded(work)


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the config, databases, target, encoder and recordings, one line each.

    Exit 0 when all pass, 1 when some fail, 2 when the config itself is invalid.
    Nothing is written to the cdr table and nothing is delivered.
    """

    def work() -> ExitCode:
        from poller.config.load import exposure
        from poller.logs import escape_controls
        from poller.ops.check import FAIL, WARN, Result, run_checks
        from poller.ops.privileges import refuse_root_on_foreign_state

        try:
            config = load_config(ctx, writes=False, warn_exposed=False)
        except ConfigError as exc:
            # said once, in the table: not again on standard error
            click.echo(escape_controls(f"{FAIL:<4}  {'config':<15} {exc}"))
            return ExitCode.CONFIG
        # root on the service user's state.dir: refused with the runuser line, on stderr
        refuse_root_on_foreign_state(config.state.dir)
        results = run_checks(config)
        given = ctx.find_object(Globals)
        exposed = exposure(given.config_path if given is not None else None)
        if exposed:
            results.insert(1, Result("config", WARN, exposed))
        for result in results:
            # a value from a file (a directory's header) must not forge a line of the table
            click.echo(escape_controls(f"{result.outcome:<4}  {result.name:<15} "
                                       f"{result.detail}"))
        return ExitCode.PARTIAL if any(r.outcome == FAIL for r in results) else ExitCode.OK

    guarded(work)


@main.command()
@click.argument("keys", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Requeue every parked call.")
@SOURCE_OPTION
@click.pass_context
def retry(ctx: click.Context, keys: tuple[str, ...], all_failed: bool,
          source_name: str | None) -> None:
    """Put parked (failed) calls back in line for the next run.

    Name the calls by KEY (as `poller status` lists them) or give --failed for all parked
    calls. A call named by KEY that waits (backing off after a failed attempt, or for its
    recording) is brought forward to the next run, its attempts forgotten.
    Only the ledger is written, so this works while a follow-mode service runs.
    """

    def work() -> ExitCode:
        from poller.config.checks import with_source
        from poller.model import PENDING
        from poller.ops.retry import requeue

        if bool(keys) == all_failed:
            raise ConfigError("name the parked calls by KEY (as `poller status` lists them), "
                              "or give --failed for all of them" if not keys else
                              "name calls by KEY or give --failed, not both")
        done = requeue(with_source(load_config(ctx), source_name), keys or None)
        for key, why in done.brought_forward.items():
            log.info("call %s was waiting (%s): due at the next run", key, why)
        for key, stage in done.not_parked.items():
            log.warning("call %s is %s: left as it is", key,
                        "already due at the next run" if stage in PENDING else
                        f"not waiting nor parked (stage {stage})")
        for key, day in done.unbuilt.items():
            log.warning("call %s could not be built from its cdr rows: once the poller is "
                        "fixed, a run that reads them again (`poller run --since %s`) builds "
                        "and delivers it", key, day.isoformat())
        click.echo(f"{plural(done.count, 'call')} put back in line for the next run")
        return ExitCode.OK

    guarded(work)


main.add_command(demo)
main.add_command(archive)


if __name__ == "__main__":  # pragma: no cover
    main()
