"""source.name: the PBX's name prefixes its call keys and is the call field `pbx` (design §13).
Two PBXs write the same uniqueids; named, their calls never mix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from support import (
    DIRECT_ANSWERED,
    IVR_NOBODY,
    MSK,
    archived,
    clone_call,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
    open_ledger,
    two_pbx_day,
)

from poller.config.load import from_mapping
from poller.errors import ConfigError, ExitCode
from poller.model import source_id, source_key
from poller.ops import status as status_view
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")


def pbx_rows(sample_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two calls as one PBX writes them: another PBX started at the same second writes the
    same uniqueids (the epoch and a counter)."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    nobody = legs_of(sample_rows, IVR_NOBODY)
    return [*clone_call(direct, local("2026-11-26 10:00"), epoch=1796399787),
            *clone_call(nobody, local("2026-11-26 10:30"), epoch=1796401587)]


def sqlite_cdr(folder: Path, rows: list[dict[str, Any]]) -> str:
    from support import cdr_table

    folder.mkdir(parents=True, exist_ok=True)
    return cdr_table(folder, rows)


@pytest.mark.parametrize("name", ["kiev 1", "a:b", "x" * 17, "-a", "ки"])
def test_a_source_name_is_a_short_identifier(name):
    with pytest.raises(ConfigError, match="source.name"):
        from_mapping({"source": {"name": name, "url": "sqlite:///cdr.db"}}, env={})


@pytest.mark.parametrize("name", ["kiev", "office-2", "PBX_1", "a" * 16])
def test_a_short_name_is_taken(name):
    config = from_mapping({"source": {"name": name, "url": "sqlite:///cdr.db"}}, env={})
    assert config.source.name == name


def test_keys_of_a_named_source_carry_its_name_and_only_then():
    assert source_key("kiev", "1796399787.1") == "kiev:1796399787.1"
    assert source_key("", "1796399787.1") == "1796399787.1"
    assert source_id("kiev", "kiev:1796399787.1") == "1796399787.1"
    assert source_id("", "1796399787.1") == "1796399787.1"
    assert len(source_key("kiev", "9" * 200)) == 96


def test_a_named_source_delivers_prefixed_keys_with_its_pbx(tmp_path, sample_rows):
    rows = pbx_rows(sample_rows)
    url = sqlite_cdr(tmp_path / "pbx", rows)
    config = make_config(tmp_path, url, source={"name": "kiev"},
                         metrics={"file": str(tmp_path / "poller.prom")})
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK, report.summary()
    records = archived(tmp_path)
    wanted = {f"kiev:{key_of(rows[:1])}", f"kiev:{key_of(rows[-1:])}"}
    assert wanted <= set(records), sorted(records)
    assert all(key.startswith("kiev:") for key in records)
    assert {record["pbx"] for record in records.values()} == {"kiev"}
    with open_ledger(config) as ledger:
        assert all(e.key.startswith("kiev:") for e in ledger.entries(list(ledger.counts())))
    # every series carries the name: two pollers' files side by side for one node_exporter
    metrics = (tmp_path / "poller.prom").read_text()
    assert 'poller_last_run_calls_new{pbx="kiev"}' in metrics
    assert 'poller_ledger_calls{pbx="kiev",stage="done"}' in metrics
    shown = status_view.collect(config, now=NOW)
    assert "source:      kiev" in status_view.render(shown)
    assert status_view.to_json(shown)["source"] == "kiev"


def test_an_unnamed_source_keeps_its_keys(tmp_path, sample_rows):
    rows = pbx_rows(sample_rows)
    config = make_config(tmp_path, sqlite_cdr(tmp_path / "pbx", rows),
                         metrics={"file": str(tmp_path / "poller.prom")})
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK, report.summary()
    records = archived(tmp_path)
    assert key_of(rows[:1]) in records
    assert {record["pbx"] for record in records.values()} == {""}
    assert "pbx=" not in (tmp_path / "poller.prom").read_text()


# -- the archive's pages: which PBX, when it holds calls of more than one

def test_a_day_of_two_pbxs_has_a_pbx_column_and_filter_and_the_index_lists_them(tmp_path):
    from poller.targets.archive.site import build_site

    two_pbx_day(tmp_path)
    assert not build_site(tmp_path, "en", "Europe/Moscow").failed
    page = (tmp_path / "2026/11/26" / "index.html").read_text()
    assert '<select id="pbx">' in page
    assert '<option value="kiev">kiev (2)</option>' in page
    assert '<option value="lviv">lviv (1)</option>' in page
    assert '<th scope="col">PBX</th>' in page and "<td>lviv</td>" in page
    index = (tmp_path / "index.html").read_text()
    assert '<p class="meta" id="pbxs">PBX: kiev 2 · lviv 1</p>' in index


def test_a_one_pbx_archive_looks_as_it_did(tmp_path):
    from support import record, write_record

    from poller.targets.archive.site import build_site

    write_record(tmp_path, {**record("kiev:1795640000.1",
                                     dt.datetime(2026, 11, 26, 9, 0, tzinfo=MSK)),
                            "pbx": "kiev"})
    assert not build_site(tmp_path, "en", "Europe/Moscow").failed
    page = (tmp_path / "2026/11/26" / "index.html").read_text()
    assert 'id="pbx"' not in page and ">PBX<" not in page
    assert 'id="pbxs"' not in (tmp_path / "index.html").read_text()
