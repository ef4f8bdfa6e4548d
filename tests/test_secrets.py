"""No part of a database password appears anywhere: not in log lines, `check`, `status`, the
ledger's last-run record or the metrics, whatever characters it holds."""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path

import pytest
from support import MYSQL_URL, run_cli, write_config

from poller.config.load import from_mapping, load
from poller.databases import redact_url
from poller.errors import ConfigError, ExitCode

# passwords an administrator types: each fragment is distinctive enough never to occur by chance
FRAGMENTS = ("Zq7", "Xw9", "Km4", "Rt5")
RAW_PASSWORDS = ["Zq7@Xw9#Km4", "Zq7@Xw9:Km4", "Zq7@Xw9/Km4", "Zq7:Xw9@Km4#Rt5", "Zq7@Xw9@Km4"]


def leaks(*texts: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS for text in texts if fragment in text]


def every_output(tmp_path: Path, config: Path) -> tuple[dict[str, int], str]:
    """Exit codes and everything `run`, `check` and `status` printed, plus every file the
    state folder holds (the SQLite ledger and the metrics file among them), as one text."""
    codes, texts = {}, []
    for command in (["run", "--metrics-file", str(tmp_path / "state" / "poller.prom")],
                    ["check"], ["status"], ["status", "--json"]):
        result = run_cli("--config", str(config), *command)
        codes[" ".join(command[:2])] = result.exit_code
        texts.append(result.output)
    for folder in (tmp_path / "state",):
        for path in folder.rglob("*") if folder.exists() else ():
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", "replace"))
    return codes, "\n".join(texts)


@pytest.mark.parametrize("password", RAW_PASSWORDS)
def test_a_raw_at_sign_in_the_password_is_a_config_error_naming_the_fix(tmp_path, password):
    """SQLAlchemy splits `user:Ab@Cd@host` at the first "@", making the password's tail the host
    name that connection errors then quote: refused at load (exit 2), naming the key and the
    percent-encoding, with nothing of the secret in any output."""
    url = f"mysql+pymysql://poller:{password}@127.0.0.1:3306/asteriskcdrdb"
    (tmp_path / "monitor").mkdir()
    codes, text = every_output(tmp_path, write_config(tmp_path, url))
    assert codes == {"run --metrics-file": ExitCode.CONFIG, "check": ExitCode.CONFIG,
                     "status": ExitCode.CONFIG, "status --json": ExitCode.CONFIG}, text
    assert "source.url" in text and "%40" in text and "POLLER_SOURCE_URL" in text
    assert leaks(text) == []


def test_raw_colon_slash_and_hash_without_at_sign_are_read_as_written():
    """Only "@" is ambiguous: `:`, `/` and `#` in a password parse as the password."""
    for password in ("Zq7:Xw9", "Zq7/Xw9", "Zq7#Xw9"):
        url = f"mysql+pymysql://poller:{password}@127.0.0.1/asteriskcdrdb"
        loaded = from_mapping({"source": {"url": url}}, env={})
        assert loaded.source.url == url
        assert leaks(redact_url(url)) == []


def test_the_environment_variable_is_held_to_the_same_rule():
    """POLLER_SOURCE_URL overrides the file and is checked like it, naming the variable."""
    env = {"POLLER_SOURCE_URL": "mysql+pymysql://poller:Zq7@Xw9@127.0.0.1/asteriskcdrdb"}
    with pytest.raises(ConfigError) as caught:
        from_mapping({"source": {"url": "sqlite:///x.db"}}, env=env)
    assert "POLLER_SOURCE_URL" in str(caught.value) and leaks(str(caught.value)) == []


@pytest.mark.parametrize("where", ["wrong password", "server down"])
def test_a_percent_encoded_password_never_shows(tmp_path, mysql_server, where):
    """The encoded password works as a password, and when the server refuses it (exit 2) or
    does not answer (exit 1), logs, check, status, ledger and metrics hold none of it."""
    password = urllib.parse.quote("Zq7@Xw9:Km4/Rt5#", safe="")
    server = urllib.parse.urlsplit(MYSQL_URL.replace("mysql+pymysql", "http"))
    port = server.port or 3306 if where == "wrong password" else 1
    url = f"mysql+pymysql://poller_nobody:{password}@{server.hostname}:{port}/asteriskcdrdb"
    (tmp_path / "monitor").mkdir()
    codes, text = every_output(tmp_path, write_config(tmp_path, url))
    expected = ExitCode.CONFIG if where == "wrong password" else ExitCode.PARTIAL
    assert codes["run --metrics-file"] == expected, text
    assert codes["check"] == ExitCode.PARTIAL
    assert "poller_nobody:***@" in text  # the URL is shown, redacted
    if where == "server down":
        assert "last run" in text and (tmp_path / "state" / "poller.prom").is_file()
    assert leaks(text) == [], text


def test_a_password_in_the_query_makes_a_world_readable_file_warned(tmp_path, caplog):
    """`?password=` holds a secret as much as `user:password@` does."""
    path = tmp_path / "poller.toml"
    path.write_text('[source]\nurl = "mysql+pymysql://poller@127.0.0.1/cdr?password=Zq7"\n')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="poller"):
        load(path, env={})
    assert "readable by every user" in caplog.text and leaks(caplog.text) == []


def test_a_driverless_mysql_url_names_the_scheme_to_write():
    """`mysql://` asks SQLAlchemy for MySQLdb, which is not installed: say what to write."""
    with pytest.raises(ConfigError, match=r"source.url: write mysql\+pymysql://"):
        from_mapping({"source": {"url": "mysql://poller:x@127.0.0.1/cdr"}}, env={})
