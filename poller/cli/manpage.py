"""`poller.1`, the manual page, written from the click commands themselves so that it cannot
drift from them: `python -m poller.cli.manpage > man/poller.1` (a test compares the two)."""

from __future__ import annotations

import sys

import click

from poller import __version__
from poller.cli.common import GlobalOption

SEE_ALSO = ("The README of asterisk-cdr-poller: installing on a PBX, daily operation, "
            "troubleshooting.")
COMPLETION = (
    "Completion of commands and options comes from poller itself. For bash: "
    "_POLLER_COMPLETE=bash_source poller > /etc/bash_completion.d/poller (zsh: zsh_source into "
    "a file on $fpath; fish: fish_source > ~/.config/fish/completions/poller.fish).")
FILES = (
    ("/etc/poller/poller.toml", "the configuration (poller.toml(5)); it holds passwords: mode "
                                "0640, owner root, group poller"),
    ("/var/lib/poller", "state.dir: the lock, the SQLite ledger state.db, temporary files"),
    ("/var/lib/poller/archive", "the archive target's JSON and MP3 files and HTML pages"),
)
ENVIRONMENT = (
    ("POLLER_CONFIG", "the configuration file, when --config is not given"),
    ("POLLER_SOURCE_URL", "source.url (a password in it percent-encoded)"),
    ("POLLER_STATE_URL", "state.url"),
    ("POLLER_EASLA_PASSWORD", "target.easla.password"),
    ("POLLER_CALLERS_URL", "callers.url"),
)
EXIT_STATUS = (
    ("0", "done; also nothing new, or another run holds the lock"),
    ("1", "the run finished but some calls failed or a service was unreachable; the next run "
          "retries them"),
    ("2", "bad usage or configuration, including what only shows at run time"),
)


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes doubled, a leading dot or quote guarded."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append((f"{prefix}{name}", command))
    return found


def _options(command: click.Command, shown_once: bool = True) -> list[str]:
    ctx = click.Context(command, info_name=command.name, help_option_names=["-h", "--help"])
    lines = []
    for param in command.get_params(ctx):
        if shown_once and isinstance(param, GlobalOption):
            continue  # under OPTIONS once, not under every command
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, help_text = record
        lines += [".TP", f"\\fB{roff(name)}\\fR", roff(help_text or "")]
    return lines


def render(main: click.Group) -> str:
    """The whole page, in man(7) macros."""
    ctx = click.Context(main, info_name="poller", help_option_names=["-h", "--help"])
    summary = (main.help or "").strip().split("\n\n")
    lines = [f'.TH POLLER 1 "" "asterisk-cdr-poller {__version__}" "User Commands"',
             ".SH NAME", "poller \\- " + roff(summary[0].rstrip(".")),
             ".SH SYNOPSIS", "\\fBpoller\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
             ".SH DESCRIPTION"]
    for paragraph in summary[1:]:
        lines += [".PP", roff(" ".join(paragraph.split()))]
    lines += [".SH OPTIONS", *_options(main, shown_once=False)]
    lines.append(".SH COMMANDS")
    for name, command in _commands(main):
        usage = " ".join(command.collect_usage_pieces(ctx))
        lines += [".SS " + roff(f"poller {name} {usage}".strip())]
        for paragraph in (command.help or "").strip().split("\n\n"):
            lines += [".PP", roff(" ".join(paragraph.split()))]
        lines += _options(command)
    for title, rows in (("EXIT STATUS", EXIT_STATUS), ("ENVIRONMENT", ENVIRONMENT),
                        ("FILES", FILES)):
        lines.append(f".SH {title}")
        for term, text in rows:
            lines += [".TP", f"\\fB{roff(term)}\\fR", roff(text)]
    lines += [".SH SHELL COMPLETION", ".PP", roff(COMPLETION)]
    lines += [".SH SEE ALSO", "\\fBpoller.toml\\fR(5)", ".PP", roff(SEE_ALSO)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from poller.cli.main import main as poller_main

    sys.stdout.write(render(poller_main))
