"""The commands beside the batch job: the demo and the archive's pages (each imports its own
work inside it, as in main.py: the minutely run loads neither)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from poller.cli.common import PollerCommand, PollerGroup
from poller.cli.guard import guarded, load_config
from poller.errors import ExitCode
from poller.ops.privileges import invoked_as, refuse_root_on_foreign_state


@click.command(cls=PollerCommand)
@click.argument("directory", default="poller-demo", type=click.Path(file_okay=False))
@click.option("--webhook", metavar="URL", default="",
              help="Also deliver the sample to this webhook receiver (its secret from "
                   "POLLER_WEBHOOK_SECRET).")
@click.option("--source", "kind", type=click.Choice(["table", "csv"]), default="table",
              show_default=True,
              help="Where the sample PBX writes its CDRs: a SQLite cdr table, or Master.csv as "
                   "Asterisk's cdr_csv writes it.")
@click.pass_context
def demo(ctx: click.Context, directory: str, webhook: str, kind: str) -> None:
    """Build a sample cdr database with recordings in DIRECTORY and deliver it to an archive.

    The sample holds a dozen calls shaped like real Asterisk output (answered, unanswered,
    busy, impossible, a ring group, a queue, an outgoing call that is skipped); the real
    pipeline delivers them into DIRECTORY/archive. DIRECTORY/poller.toml is the config used.
    With --webhook the same calls go to that receiver as well (DIRECTORY/poller-webhook.toml).
    With --source csv the sample PBX writes DIRECTORY/cdr-csv/Master.csv instead.
    """

    def work() -> ExitCode:
        from poller.ops.demo import run_demo

        report, lines = run_demo(directory, invoked_as(sys.argv), webhook,
                                 os.environ.get("POLLER_WEBHOOK_SECRET", ""), kind)
        for line in lines:
            click.echo(line)
        return report.exit_code

    guarded(work)


@click.group(cls=PollerGroup)
def archive() -> None:
    """Work on the local archive target's folder."""


@archive.command("build")
@click.option("--dir", "directory", metavar="PATH", type=click.Path(file_okay=False),
              help="The archive folder [default: target.archive.dir].")
@click.pass_context
def archive_build(ctx: click.Context, directory: str | None) -> None:
    """Write the HTML pages of the whole archive: index.html and one page per day.

    Runs write the pages of the days they change; this rebuilds every day, e.g. after an
    upgrade, a change of target.archive.locale, or records copied in by hand.
    Exit 1 when some page could not be written.
    """

    def work() -> ExitCode:
        from poller.targets.archive.site import build_site

        config = load_config(ctx, writes=False)
        root = Path(directory or config.target.archive.dir)
        # only the archive is written: its owner is the one to run as
        refuse_root_on_foreign_state(str(root), label="the archive")
        report = build_site(root, config.target.archive.locale, config.source.timezone)
        click.echo(f"{root / 'index.html'}: {report.summary()}")
        return ExitCode.PARTIAL if report.failed else ExitCode.OK

    guarded(work)
