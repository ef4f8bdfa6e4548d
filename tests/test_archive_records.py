"""The archive loses no record: file names are one to one with call keys, and a call is marked
attached only once its record is really there."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from support import archived, clone_call, entry_of, insert_rows, key_of, legs_of, make_config, msk

from poller.errors import DeliveryError, ExitCode
from poller.model import Stage
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.targets.archive.target import ArchiveTarget
from poller.targets.interface import safe_name

NOW = msk("2026-11-26 12:00")
ANSWERED = "1795675107.1"  # P1-01: answered, recorded
NO_ANSWER = "1795675119.5"  # P1-02: nobody answered


@pytest.mark.parametrize("first, second", [
    ("COL/1", "COL_1"), ("звонок", "привет"), ("a.b", "a_b"), (".x", "_2Ex"), ("", "_"),
    ("a" * 300, "a" * 299 + "b"),
])
def test_file_names_are_one_to_one(first, second):
    assert safe_name(first) != safe_name(second)
    for key in (first, second):
        name = safe_name(key)
        assert "/" not in name and not name.startswith(".") and len(name.encode()) <= 200


@pytest.mark.parametrize("key", ["1795675107.1", "pbx1-1795675107.1", "1795675107.1-a"])
def test_asterisk_keys_keep_their_names(key):
    assert safe_name(key) == key


def archive_names(key: str) -> set[str]:
    """Every file name the archive gives a call key in its day folder: the record, the MP3,
    the incident it opens, and their hidden companions."""
    name = safe_name(key)
    shown = {f"{name}.json", f"{name}.mp3", f"{name}.incident.json"}
    return shown | {f".{shown_name}.pending" for shown_name in shown} \
        | {f".{shown_name}.part" for shown_name in shown}


TRICKY = ["K1", "K1.incident", "K1.incident.json", "K1.json", "K1.mp3", "K1.incident.incident",
          "K1.INCIDENT", "K1.json.pending", ".K1.json", "K1.part", "index", "index.html",
          "K1_2Eincident", "K1.incident.", "incident", ".incident", "a" * 300 + ".incident"]


@pytest.mark.parametrize("key", TRICKY)
def test_no_key_gets_a_name_the_archive_gives_another_key(key):
    """A call keyed `K1` opened an incident (`K1.incident.json`); a call keyed `K1.incident`
    then wrote its record into that same file, marked done, and was on no day page (the
    pages skip `*.incident.json`)."""
    mine = archive_names(key)
    for other in TRICKY:
        if other != key:
            assert not mine & archive_names(other), (key, other, mine & archive_names(other))
    assert not safe_name(key).lower().endswith(".incident")  # never read as an incident


def test_a_key_ending_in_incident_keeps_its_record_and_the_incident_its_file(
        tmp_path, cdr_url, sample_rows):
    """K1 opens an incident; K1.incident is a call of its own: both records and the incident
    file survive, and the day page lists both calls."""
    template = legs_of(sample_rows, NO_ANSWER)
    rows = []
    for minute, key in enumerate(["K1", "K1.incident"]):
        rows += clone_call(template, dt.datetime(2026, 11, 26, 10, minute), linkedid=key,
                           src="+79161234567", cnum="+79161234567")
    insert_rows(cdr_url, rows)
    config = make_config(tmp_path, cdr_url, incidents={
        "statuses": ["unanswered"], "callers": "any", "fold": "0s"})
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK and report.delivered_count == 2, report.summary()
    records = archived(tmp_path)
    assert set(records) == {"K1", "K1.incident"}
    incidents = [json.loads(path.read_text()) for path in
                 (tmp_path / "archive").rglob("*.incident.json")]
    assert sorted(item["incident"] for item in incidents) == ["K1", "K1.incident"]
    page = (tmp_path / "archive" / "2026" / "11" / "26" / "index.html").read_text()
    assert "K1.incident" in page and page.count("K1") >= 2


def test_keys_that_used_to_share_a_file_each_keep_their_record(tmp_path, cdr_db, sample_rows):
    """linkedids `COL/1` and `COL_1` (and two Cyrillic ones) once mapped to one file name, the
    second record overwriting the first while both calls were marked done."""
    template = legs_of(sample_rows, NO_ANSWER)
    keys = ["COL/1", "COL_1", "звонок", "привет"]
    for minute, key in enumerate(keys):
        cdr_db.insert(clone_call(template, dt.datetime(2026, 11, 26, 10, minute),
                                        linkedid=key))
    config = make_config(tmp_path, cdr_db.url)
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK and sum(report.delivered.values()) == 4
    assert sorted(archived(tmp_path)) == sorted(keys)


class DiesOnAttach(ArchiveTarget):
    def attach(self, object_id, call, mp3):
        raise DeliveryError("archive: the disk went away")


def test_a_lost_pending_record_is_made_again_before_the_call_is_attached(tmp_path, cdr_db,
                                                                         sample_rows):
    """Stage `created`, its hidden record gone with a replaced file system: the next run
    uploads the MP3 and writes the record again — never `done` with an MP3 and no JSON."""
    rows = clone_call(legs_of(sample_rows, ANSWERED), dt.datetime(2026, 11, 26, 10, 0),
                      monitor=tmp_path / "monitor")
    cdr_db.insert(rows)
    key = key_of(rows)
    config = make_config(tmp_path, cdr_db.url)
    run_once(config, RunOptions(now=NOW),
             target_factory=lambda c: DiesOnAttach(c.target.archive, c.source.timezone))
    entry = entry_of(config, key)
    assert entry.stage == Stage.CREATED
    pending = list(Path(config.target.archive.dir).rglob(".*.pending"))
    assert len(pending) == 1
    pending[0].unlink()

    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
    assert report.exit_code == ExitCode.OK, report.summary()
    record = archived(tmp_path)[key]
    assert record["recording"] == f"{key}.mp3" and record["status"] == "answered"
    json_path = Path(config.target.archive.dir) / entry.object_id
    assert json_path.with_suffix(".mp3").stat().st_size > 0
    assert json.loads(json_path.read_text())["key"] == key
    assert entry_of(config, key).stage == Stage.DONE
