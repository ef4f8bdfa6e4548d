"""The manual page `poller.1`: written from the commands, installed by the package."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest
from support import ROOT

from poller.cli.main import main
from poller.cli.manpage import render
from poller.cli.tomlpage import keys, meanings
from poller.cli.tomlpage import render as render_toml

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


# -- poller.toml(5)

TOML_PAGE = ROOT / "man" / "poller.toml.5"
README_TEXT = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_shipped_config_page_is_the_one_the_schema_makes():
    """Regenerate with `python -m poller.cli.tomlpage > man/poller.toml.5` after changing a key
    or its line in the README."""
    assert TOML_PAGE.read_text(encoding="utf-8") == render_toml(README_TEXT)


def test_the_config_page_gives_every_key_its_type_default_and_meaning():
    told = meanings(README_TEXT)
    text = TOML_PAGE.read_text(encoding="utf-8").replace("\\-", "-")
    every = list(keys())
    assert len(every) > 60 and "source.lookback" in {k.path for k in every}
    for key in every:
        assert told.get(key.path), f"{key.path}: no meaning in the README's key table"
        section, _, name = key.path.rpartition(".")
        assert f".SS [{section}]" in text and f"\\fB{name}\\fR = " in text, key.path
    assert '\\fBlookback\\fR = "4h"' in text and "Duration." in text
    assert "mode 0640, owner root, group poller" in text


def test_the_package_installs_the_config_page_and_poller_1_points_at_it():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["options.data_files"]["share/man/man5"].strip() == "man/poller.toml.5"
    assert "\\fBpoller.toml\\fR(5)" in PAGE.read_text(encoding="utf-8").split(".SH SEE ALSO")[1]
    assert "/opt/poller/share/man/man5/poller.toml.5" in README_TEXT  # the install links it


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) is not installed")
def test_man_renders_the_config_page_without_complaint():
    out = subprocess.run(["man", "--warnings", "-l", str(TOML_PAGE)], capture_output=True,
                         text=True, timeout=60, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    assert "retention" in out.stdout


def test_one_rule_for_the_config_files_mode():
    """The README, the SQL scripts, the example and both pages say the same: 0640 root:poller
    (root changes it, the service reads it), never 0600 for the config file."""
    texts = {name: (ROOT / name).read_text(encoding="utf-8") for name in (
        "README.md", "sql/grant-readonly.sql", "sql/grant-readonly-postgresql.sql",
        "contrib/poller.toml.example", "man/poller.1", "man/poller.toml.5")}
    for name, text in texts.items():
        flat = " ".join(text.replace("-- ", "").replace("# ", "").split())
        assert not re.search(r"poller\.toml[^.]{0,40}\b0600", flat), name
        assert re.search(r"0640", flat), name
