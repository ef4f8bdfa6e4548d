"""Values that pass the types and would then break or mislead are refused at load (exit 2,
naming the key) or warned about."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from support import run_cli, write_config

from poller.config.load import from_mapping
from poller.config.schema import Config
from poller.errors import ConfigError, ExitCode

URL = "mysql+pymysql://poller:secret@127.0.0.1/asteriskcdrdb"


def load(**sections: dict) -> Config:
    data: dict = {"source": {"url": URL}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return from_mapping(data, env={})


@pytest.mark.parametrize(("sections", "named"), [
    ({"source": {"lookback": "999999999d"}}, "source.lookback"),
    ({"retry": {"max_backoff": "99999d"}}, "retry.max_backoff"),
    ({"source": {"legacy_encoding": "cp1251\x00"}}, "source.legacy_encoding"),
    ({"recordings": {"name": "{uniqueid:>999999999}.wav"}}, "recordings.name"),
    ({"recordings": {"name": "{uniqueid:.999999999}.wav"}}, "recordings.name"),
    ({"transcode": {"bitrate": "0k"}}, "transcode.bitrate"),
    ({"transcode": {"bitrate": "99999999k"}}, "transcode.bitrate"),
    ({"transcode": {"bitrate": "33k"}}, "transcode.bitrate"),
    ({"recordings": {"quiet": "0s"}}, "recordings.quiet"),
    ({"source": {"start": "2999-01-01"}}, "source.start"),
    # each of these passed the check and failed every run (or every call) at run time
    ({"target": {"archive": {"keep_days": 999999999}}}, "target.archive.keep_days"),
    ({"recordings": {"name": "{uniqueid:d}.wav"}}, "recordings.name"),
    ({"recordings": {"name": "{src:,}.wav"}}, "recordings.name"),
    ({"recordings": {"name": "{calldate:%Y}/{uniqueid!x}.wav"}}, "recordings.name"),
    ({"recordings": {"name": "{uniqueid:{width}}.wav"}}, "recordings.name"),
    ({"source": {"start": "0001-01-01"}}, "source.start"),
    ({"target": {"easla": {"objectdef_version": 2**40}}}, "target.easla.objectdef_version"),
    ({"target": {"easla": {"objectdef_version": -1}}}, "target.easla.objectdef_version"),
    ({"incidents": {"objectdef_version": 2**40}}, "incidents.objectdef_version"),
])
def test_values_that_would_break_later_are_refused_naming_the_key(sections, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(**sections)


def test_a_refused_value_is_exit_2_on_the_command_line(tmp_path):
    """Before: `unexpected error: OverflowError`, exit 1, retried forever."""
    path = write_config(tmp_path, URL, source={"lookback": "999999999d"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == ExitCode.CONFIG
    assert "source.lookback" in result.output and "unexpected error" not in result.output


@pytest.mark.parametrize("name", [
    "{calldate:%Y/%m/%d}/{recordingfile}", "{uniqueid}.wav", "{calldate:%Y%m%d}-{src:>12}.wav",
    "{uniqueid!s}.wav", "{did:.20}-{uniqueid}.wav",
])
def test_every_recording_name_that_loads_renders(name):
    """What the check lets through is what the run renders, over a leg of each column's type."""
    from poller.templates import render_recording_name, sample_leg

    assert load(recordings={"name": name}).recordings.name == name
    assert render_recording_name(name, sample_leg())


def test_the_longest_keep_days_works_at_run_time(tmp_path):
    from poller.targets.archive.files import prune_archive

    config = load(target={"archive": {"keep_days": 36500, "dir": str(tmp_path)}})
    keep = dt.timedelta(days=config.target.archive.keep_days)
    assert prune_archive(tmp_path, dt.date.today() - keep) == 0  # noqa: DTZ011


def test_a_start_in_the_past_and_a_sane_name_format_pass():
    yesterday = (dt.datetime.now() - dt.timedelta(days=1)).strftime("%Y-%m-%d")  # noqa: DTZ005
    loaded = load(source={"start": yesterday, "timezone": "Europe/Moscow"},
                  recordings={"name": "{calldate:%Y/%m/%d}/{uniqueid:>20}.wav", "quiet": "5s"},
                  transcode={"bitrate": "64k"})
    assert loaded.recordings.quiet == 5 and loaded.transcode.bitrate == "64k"


@pytest.mark.parametrize(("archive", "spool"), [
    ("/var/spool/asterisk/monitor", "/var/spool/asterisk/monitor"),
    ("/var/spool/asterisk/monitor/archive", "/var/spool/asterisk/monitor"),
    ("/var/spool/asterisk", "/var/spool/asterisk/monitor"),
    ("/var/spool/asterisk/monitor/../monitor/", "/var/spool/asterisk/monitor"),
])
def test_an_archive_overlapping_the_recordings_is_refused(archive, spool):
    """keep_days prunes day folders of target.archive.dir: over the spool it deleted WAVs."""
    with pytest.raises(ConfigError, match="target.archive.dir .* overlap"):
        load(target={"kind": "archive", "archive": {"dir": archive}},
             recordings={"dir": spool})


def test_an_archive_beside_the_recordings_passes():
    loaded = load(target={"kind": "archive", "archive": {"dir": "/var/lib/poller/archive"}},
                  recordings={"dir": "/var/spool/asterisk/monitor"})
    assert loaded.target.archive.dir == "/var/lib/poller/archive"


def test_a_settle_of_zero_is_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="poller"):
        load(source={"settle": "0s"})
    assert "source.settle" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="poller"):
        load(source={"settle": "60s"})
    assert caplog.text == ""
