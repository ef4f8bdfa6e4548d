"""The manual page `poller.1`: written from the commands, installed by the package."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest
from support import ROOT

from poller.cli.main import main
from poller.cli.manpage import render

PAGE = ROOT / "man" / "poller.1"


def test_the_shipped_page_is_the_one_the_commands_make():
    """Regenerate with `python -m poller.manpage > man/poller.1` after changing a command."""
    assert PAGE.read_text(encoding="utf-8") == render(main)


def test_the_page_lists_every_command_and_option():
    text = PAGE.read_text(encoding="utf-8").replace("\\-", "-")
    groups = [("", main)] + [(f"{name} ", cmd) for name, cmd in main.commands.items()
                             if hasattr(cmd, "commands")]
    for prefix, group in groups:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                continue
            assert f".SS poller {prefix}{name}" in text, name
            for param in command.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith("-"):
                        assert opt in text, f"{name} {opt}"
    for param in main.params:
        for opt in param.opts:
            assert opt in text, opt


def test_the_package_installs_the_page():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["options.data_files"]["share/man/man1"].strip() == "man/poller.1"


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) is not installed")
def test_man_renders_the_page_without_complaint():
    out = subprocess.run(["man", "--warnings", "-l", str(PAGE)], capture_output=True,
                         text=True, timeout=60, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "poller run" in out.stdout and "EXIT STATUS" in out.stdout
