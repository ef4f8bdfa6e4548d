"""The TOML configuration: defaults, environment overrides, and errors that name their key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from poller.cli.main import main
from poller.config.load import from_mapping, load
from poller.config.schema import Secret, parse_duration
from poller.databases import redact_url
from poller.errors import ConfigError, ExitCode

URL = "mysql+pymysql://poller:s3cr3t-pw@127.0.0.1/asteriskcdrdb"
PASSWORD = "s3cr3t-pw"
ENV_VARS = ("POLLER_CONFIG", "POLLER_SOURCE_URL", "POLLER_STATE_URL", "POLLER_EASLA_PASSWORD")


def minimal(**source: Any) -> dict[str, Any]:
    return {"source": {"url": URL, **source}}


def problem(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(data, env=env or {})
    return str(info.value)


# --- defaults --------------------------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults():
    """A file with only source.url runs with the documented defaults."""
    cfg = from_mapping(minimal(), env={})
    source = cfg.source
    assert source.url == URL
    assert (source.table, source.cursor, source.legacy_encoding) == ("cdr", "calldate", "cp1251")
    assert source.lookback == 14400
    assert source.settle == 60
    assert source.batch_size == 1000
    assert source.start == ""
    assert source.incoming.did_set is True
    assert source.incoming.channels == ()
    assert source.incoming.contexts == ("from-trunk", "from-pstn")
    assert cfg.state.dir == "/var/lib/poller"
    assert (cfg.retry.max_attempts, cfg.retry.backoff, cfg.retry.max_backoff) == (
        20, 60, 6 * 3600)
    rec = cfg.recordings
    assert (rec.dir, rec.name) == ("/var/spool/asterisk/monitor",
                                   "{calldate:%Y/%m/%d}/{recordingfile}")
    assert (rec.wait, rec.min_bytes, rec.after_upload) == (600, 1024, "keep")
    tc = cfg.transcode
    assert (tc.ffmpeg, tc.bitrate, tc.nice, tc.timeout) == ("ffmpeg", "32k", 19, 600)
    assert cfg.metrics.file == ""
    assert cfg.target.kind == "archive"
    easla = cfg.target.easla
    assert easla.url == "https://easla.com/user/soap"
    assert (easla.timeout, easla.verify_tls, easla.objectdef_version) == (60, True, 0)
    assert dict(easla.attributes) == {"key": "incoming_call_key",
                                      "number": "incoming_call_number",
                                      "duration": "incoming_call_time", "status": "status"}
    assert dict(easla.statuses) == {"answered": "incoming_call_answered",
                                    "unanswered": "incoming_call_unanswered",
                                    "busy": "incoming_call_busy",
                                    "impossible": "incoming_call_congestion"}


def test_durations_are_read_in_their_units():
    """"90s", "10m", "4h", "1d" become seconds."""
    cfg = from_mapping(minimal(lookback="1d", settle="90s"), env={})
    assert (cfg.source.lookback, cfg.source.settle) == (86400, 90)
    assert parse_duration("10m") == 600
    assert parse_duration("250ms") == 0.25


def test_load_reads_a_file(tmp_path):
    """A TOML file on disk loads through load(path)."""
    path = tmp_path / "poller.toml"
    path.write_text(f'[source]\nurl = "{URL}"\nbatch_size = 200\n'
                    '[source.incoming]\nchannels = ["PJSIP/provider-*"]\n')
    cfg = load(path, env={})
    assert cfg.source.batch_size == 200
    assert cfg.source.incoming.channels == ("PJSIP/provider-*",)


def test_load_uses_poller_config_variable(tmp_path):
    """Without --config, $POLLER_CONFIG names the file."""
    path = tmp_path / "elsewhere.toml"
    path.write_text(f'[source]\nurl = "{URL}"\nsettle = "2m"\n')
    assert load(None, env={"POLLER_CONFIG": str(path)}).source.settle == 120


# --- environment overrides -------------------------------------------------------------------


def test_environment_source_url_wins_over_the_file():
    """POLLER_SOURCE_URL (a secret kept out of the file) overrides source.url."""
    env_url = "mysql+pymysql://poller:from-env@db/asteriskcdrdb"
    cfg = from_mapping(minimal(), env={"POLLER_SOURCE_URL": env_url})
    assert cfg.source.url == env_url


def test_environment_supplies_missing_secrets():
    """All three secrets may come from the environment alone."""
    cfg = from_mapping({}, env={"POLLER_SOURCE_URL": URL,
                                       "POLLER_STATE_URL": "sqlite:////tmp/state.db",
                                       "POLLER_EASLA_PASSWORD": "easla-pw"})
    assert cfg.source.url == URL
    assert cfg.state.url == "sqlite:////tmp/state.db"
    assert cfg.target.easla.password == "easla-pw"


def test_empty_environment_variable_does_not_override():
    """An exported but empty POLLER_SOURCE_URL leaves the file's value."""
    assert from_mapping(minimal(), env={"POLLER_SOURCE_URL": ""}).source.url == URL


# --- errors name their key -------------------------------------------------------------------


@pytest.mark.parametrize(("data", "key"), [
    ({**minimal(), "sourc": {}}, "sourc"),
    (minimal(lookbak="4h"), "source.lookbak"),
    ({**minimal(), "target": {"easla": {"pasword": "x"}}}, "target.easla.pasword"),
    (minimal(batch_size="10"), "source.batch_size"),
    (minimal(batch_size=True), "source.batch_size"),
    ({"source": {"table": "cdr"}}, "source.url"),
    (minimal(lookback="4 hours"), "source.lookback"),
    (minimal(settle=60), "source.settle"),
    (minimal(timezone="Mars/Olympus_Mons"), "source.timezone"),
    (minimal(cursor="calldate; DROP TABLE cdr"), "source.cursor"),
    (minimal(table="cdr; DROP TABLE cdr"), "source.table"),
    (minimal(legacy_encoding="klingon"), "source.legacy_encoding"),
    (minimal(start="yesterday"), "source.start"),
    (minimal(incoming={"channels": "PJSIP/provider-*"}), "source.incoming.channels"),
    ({**minimal(), "target": {"easla": {"attributes": {"caller": "incoming_call_caller"}}}},
     "target.easla.attributes.caller"),
    ({**minimal(), "target": {"easla": {"statuses": {"missed": "x"}}}},
     "target.easla.statuses.missed"),
    ({**minimal(), "target": {"kind": "jira"}}, "target.kind"),
    ({**minimal(), "recordings": {"name": "{calldate:%Y/%m/%d/{recordingfile}"}},
     "recordings.name"),
    ({**minimal(), "recordings": {"name": "{channel}.wav"}}, "recordings.name"),
    ({**minimal(), "recordings": {"after_upload": "shred"}}, "recordings.after_upload"),
    ({**minimal(), "retry": {"max_attempts": 0}}, "retry.max_attempts"),
    ({**minimal(), "retry": {"max_attempts": 5000}}, "retry.max_attempts"),
    ({**minimal(), "transcode": {"timeout": "0s"}}, "transcode.timeout"),
    ({**minimal(), "target": {"easla": {"timeout": "0s"}}}, "target.easla.timeout"),
    ({**minimal(), "retry": "often"}, "retry"),
])
def test_bad_value_names_its_key(data, key):
    """Each mistake an administrator makes in the file is reported with the key to fix."""
    assert key in problem(data)


def test_all_problems_reported_together():
    """Several unknown keys and wrong types come out in one message, not one per run."""
    message = problem({**minimal(lookbak="4h", batch_size="10"), "sourc": {}})
    for key in ("sourc", "source.lookbak", "source.batch_size"):
        assert key in message


def test_env_override_still_validated():
    """POLLER_SOURCE_URL fills a missing url: then the file's other mistakes are still found."""
    message = problem({"source": {"lookback": "4 hours"}}, env={"POLLER_SOURCE_URL": URL})
    assert "source.lookback" in message
    assert "source.url" not in message


# --- secrets ---------------------------------------------------------------------------------


def test_repr_of_config_hides_passwords():
    """A config printed in a log or a traceback shows no database or easla password."""
    cfg = from_mapping({**minimal(), "target": {"easla": {"password": "easla-pw"}}},
                              env={})
    text = repr(cfg)
    assert PASSWORD not in text
    assert "easla-pw" not in text
    assert "Secret('***')" in text
    assert isinstance(cfg.source.url, Secret)


@pytest.mark.parametrize("data", [
    minimal(timezone="Mars/Olympus_Mons"),
    minimal(batch_size="10", lookbak="1h"),
    {**minimal(), "target": {"easla": {"attributes": {"caller": "x"}}}},
])
def test_errors_do_not_show_the_source_password(data):
    """Whatever else is wrong, the error message never shows the database password."""
    message = problem(data)
    assert PASSWORD not in message
    assert "source.url" not in message  # nothing was wrong with it


def test_wrongly_typed_password_is_not_echoed():
    """An unquoted numeric password (`password = 987654321`) is reported without its value."""
    message = problem({**minimal(), "target": {"easla": {"password": 987654321}}})
    assert "target.easla.password" in message
    assert "987654321" not in message


def test_redact_url_hides_password():
    """Database URLs in messages have their password replaced."""
    assert redact_url(URL) == "mysql+pymysql://poller:***@127.0.0.1/asteriskcdrdb"
    # a password holding "@" (unescaped, as people type them) is hidden whole
    assert redact_url("mysql+pymysql://poller:p@ss@w0rd@db.example/cdr") == (
        "mysql+pymysql://poller:***@db.example/cdr")
    assert redact_url("mysql+pymysql://poller:S3cr/etPW@db.example:3306/cdr") == (
        "mysql+pymysql://poller:***@db.example:3306/cdr")
    assert redact_url("mysql+pymysql://db.example/cdr?user=poller&password=Pw1&x=1") == (
        "mysql+pymysql://db.example/cdr?user=poller&password=***&x=1")


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch) -> Iterator[CliRunner]:
    """A click runner with no POLLER_* variables; the root logger is restored afterwards."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield CliRunner()
    root.handlers[:] = handlers
    root.setLevel(level)


def stderr_of(result: Result) -> str:
    """What the command wrote to stderr (click 8.1 mixes it into output)."""
    try:
        return result.stderr
    except ValueError:
        return result.output


def run_with(cli: CliRunner, path: Path, env: dict[str, str] | None = None) -> Result:
    return cli.invoke(main, ["--config", str(path), "run"], env=env)


@pytest.mark.parametrize(("toml", "key"), [
    ('[source]\nurl = "URL"\n[sourc]\n', "sourc"),
    ('[source]\nurl = "URL"\nlookbak = "4h"\n', "source.lookbak"),
    ('[source]\nurl = "URL"\nbatch_size = "10"\n', "source.batch_size"),
    ('[source]\ntable = "cdr"\n', "source.url"),
    ('[source]\nurl = "URL"\nlookback = "4 hours"\n', "source.lookback"),
    ('[source]\nurl = "URL"\ntimezone = "Mars/Olympus_Mons"\n', "source.timezone"),
    ('[source]\nurl = "URL"\ncursor = "calldate; DROP TABLE cdr"\n', "source.cursor"),
    ('[source]\nurl = "URL"\n[target.easla.attributes]\ncaller = "incoming_call_caller"\n',
     "target.easla.attributes.caller"),
    ('[source]\nurl = "URL"\nbatch_size = \n', "not valid TOML"),
], ids=["unknown-top", "unknown-nested", "wrong-type", "missing-url", "bad-duration",
        "bad-timezone", "bad-cursor", "bad-attribute", "invalid-toml"])
def test_cli_config_error_exits_2_naming_the_key(cli, tmp_path, toml, key):
    """`poller --config FILE run` with a bad file: exit code 2, the key on stderr, no password."""
    path = tmp_path / "poller.toml"
    path.write_text(toml.replace("URL", URL))
    result = run_with(cli, path)
    assert result.exit_code == ExitCode.CONFIG == 2
    message = stderr_of(result)
    assert key in message
    assert PASSWORD not in result.output + message


def test_cli_missing_config_file_exits_2(cli, tmp_path):
    """A --config path that does not exist: exit code 2 and the path in the message."""
    path = tmp_path / "nowhere" / "poller.toml"
    result = run_with(cli, path)
    assert result.exit_code == 2
    assert str(path) in stderr_of(result)
    assert "not found" in stderr_of(result)


def test_cli_env_url_does_not_leak_on_error(cli, tmp_path):
    """POLLER_SOURCE_URL's password stays out of the message when the file is wrong."""
    path = tmp_path / "poller.toml"
    path.write_text('[source]\ntimezone = "Mars/Olympus_Mons"\n')
    result = run_with(cli, path, env={"POLLER_SOURCE_URL": URL})
    assert result.exit_code == 2
    assert "source.timezone" in stderr_of(result)
    assert "source.url" not in stderr_of(result)
    assert PASSWORD not in result.output + stderr_of(result)


def test_the_example_config_holds_the_defaults():
    """contrib/poller.toml.example "holds every key with its default": loaded, it equals a
    config that sets nothing but the source URL."""
    import dataclasses
    import tomllib

    from support import ROOT

    example = ROOT / "contrib" / "poller.toml.example"
    with open(example, "rb") as handle:
        url = tomllib.load(handle)["source"]["url"]
    loaded = load(str(example))
    assert dataclasses.asdict(loaded) == dataclasses.asdict(
        from_mapping({"source": {"url": url}}, env={}))
