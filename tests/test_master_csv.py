"""Master.csv as the source (`source.kind = "csv"`): rotation by rename in the middle of a
run's reading, copytruncate, the first run and its backfill, and every kind of bad input — each
ending with every call delivered once, or a clear message and nothing lost."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import (
    DIRECT_ANSWERED,
    QUEUE_ANSWERED,
    archived,
    clone_call,
    legs_of,
    make_config,
    master_csv_line,
    msk,
    run_cli,
    write_config,
    write_master_csv,
)

from poller.run.marks import Axis
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.source.interface import OFFSET
from poller.source.mastercsv import CsvSource

NOW = msk("2026-11-26 12:00")
NO_DID = {"did_set": False, "channels": ["Local/*@from-pstn-*"]}


def _calls(sample_rows: list[dict[str, Any]], count: int, first: str,
           kinds: tuple[str, ...] = (DIRECT_ANSWERED, QUEUE_ANSWERED)) -> list[list[dict]]:
    """`count` real calls (a direct and a queue call, by turns), a minute apart."""
    start = dt.datetime.fromisoformat(first)
    return [clone_call(legs_of(sample_rows, kinds[n % len(kinds)]),
                       start + dt.timedelta(minutes=n)) for n in range(count)]


def _rows(calls: list[list[dict]]) -> list[dict]:
    return [row for call in calls for row in call]


def _config(tmp_path: Path, path: Path, **source: Any) -> Any:
    return make_config(tmp_path, "", source={"kind": "csv", "csv": {"path": str(path)},
                                             "incoming": NO_DID, **source},
                       recordings={"name": "{uniqueid}.wav"})


def _run(config: Any, now: dt.datetime = NOW, **options: Any) -> Any:
    return run_once(config, RunOptions(now=now, **options))


def _keys(calls: list[list[dict]]) -> set[str]:
    return {call[0]["linkedid"] for call in calls}


def _copytruncate(master: Path) -> None:
    """What logrotate's copytruncate does: a copy beside it, then the same inode emptied."""
    shutil.copyfile(master, master.with_name("Master.csv.1"))
    with open(master, "r+b") as handle:
        handle.truncate(0)


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of a few hundred bytes: one run reads the file in many windows."""
    monkeypatch.setattr("poller.run.read.offset_axis",
                        lambda: Axis(OFFSET, 2048, 1, 600, 300, 1200))


@pytest.fixture
def while_reading(monkeypatch):
    """Do something once in the middle of a run's reading of Master.csv (after its first
    window); returns a list that holds the window's start once it was done."""
    def install(action):
        done: list[int] = []
        read_window = CsvSource.read_window

        def once(self, lo, hi, column=OFFSET):
            legs = read_window(self, lo, hi, column)
            if not done:
                done.append(lo)
                action()
            return legs

        monkeypatch.setattr(CsvSource, "read_window", once)
        return done

    return install


def test_a_rotation_in_the_middle_of_a_runs_reading_loses_nothing(tmp_path, sample_rows,
                                                                    small_windows,
                                                                    while_reading):
    """logrotate renames Master.csv while a run reads it, and Asterisk writes on into a new
    one; three more lines reach the old file before the rename. The run finishes what it had
    opened; the next finds the old file by its identity, finishes it, then reads the new one:
    every call delivered once."""
    master = tmp_path / "cdr-csv" / "Master.csv"
    before, late, after = (_calls(sample_rows, 20, "2026-11-26 10:00"),
                           _calls(sample_rows, 3, "2026-11-26 10:30"),
                           _calls(sample_rows, 10, "2026-11-26 10:40"))
    write_master_csv(master, _rows(before))
    config = _config(tmp_path, master)

    def rotate() -> None:
        write_master_csv(master, _rows(late), mode="a")
        master.rename(master.with_name("Master.csv.1"))
        write_master_csv(master, _rows(after))

    rotated = while_reading(rotate)
    first = _run(config)
    assert rotated and first.exit_code == 0, first.summary()
    assert set(archived(tmp_path)) == _keys(before)
    second = _run(config, NOW + dt.timedelta(minutes=1))
    assert second.exit_code == 0 and second.new_calls == 13, second.summary()
    assert set(archived(tmp_path)) == _keys(before + late + after)
    third = _run(config, NOW + dt.timedelta(minutes=2))
    assert third.new_calls == 0 and third.delivered_count == 0, third.summary()


def test_copytruncate_reads_from_the_start_and_says_what_may_be_missing(tmp_path, sample_rows,
                                                                       caplog):
    master = tmp_path / "Master.csv"
    first_calls, second_calls = (_calls(sample_rows, 6, "2026-11-26 10:00"),
                                 _calls(sample_rows, 4, "2026-11-26 11:00"))
    write_master_csv(master, _rows(first_calls))
    config = _config(tmp_path, master)
    assert _run(config).new_calls == 6
    _copytruncate(master)
    write_master_csv(master, _rows(second_calls), mode="a")
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = _run(config, NOW + dt.timedelta(minutes=1))
    assert report.exit_code == 0 and report.new_calls == 4, report.summary()
    assert "truncated in place" in caplog.text and "may be missing" in caplog.text
    assert set(archived(tmp_path)) == _keys(first_calls + second_calls)


def test_a_first_run_takes_the_lookback_and_a_backfill_reads_the_rotated_copies(
        tmp_path, sample_rows, caplog):
    """Months of Master.csv: the first run takes the calls of the lookback before now, says
    how many older lines it left and how to get them; `run --since` reads the rotated copies
    too, a compressed one included."""
    master = tmp_path / "Master.csv"
    oldest, older, recent = (_calls(sample_rows, 3, "2026-11-24 10:00"),
                             _calls(sample_rows, 4, "2026-11-26 06:00"),
                             _calls(sample_rows, 5, "2026-11-26 10:00"))
    with gzip.open(master.with_name("Master.csv.2.gz"), "wt", encoding="utf-8") as packed:
        packed.write("".join(master_csv_line(row) for row in _rows(oldest[:1])))
    write_master_csv(master.with_name("Master.csv.1"), _rows(oldest[1:]))
    write_master_csv(master, _rows(older + recent))
    config = _config(tmp_path, master, start="")
    with caplog.at_level(logging.WARNING, logger="poller"):
        first = _run(config)
    assert set(archived(tmp_path)) == _keys(recent), first.summary()
    assert "first run: 6 older lines" in caplog.text and "run --since" in caplog.text
    again = _run(config, NOW + dt.timedelta(minutes=1))
    # from the checkpoint: the last call's line again at most, never the whole file
    assert again.rows <= 2 and again.new_calls == 0, again.summary()
    backfill = _run(config, NOW + dt.timedelta(minutes=2),
                    since=dt.datetime(2026, 11, 24), until=dt.datetime(2026, 11, 26, 8))
    assert backfill.exit_code == 0 and backfill.new_calls == 7, backfill.summary()
    assert set(archived(tmp_path)) == _keys(oldest + older + recent)


def test_only_complete_lines_are_read(tmp_path, sample_rows):
    """A line Asterisk is still writing (no newline yet) is left for the next run."""
    master = tmp_path / "Master.csv"
    calls = _calls(sample_rows, 2, "2026-11-26 10:00", kinds=(DIRECT_ANSWERED,))
    whole, last = _rows(calls)[:-1], _rows(calls)[-1]
    write_master_csv(master, whole)
    half = master_csv_line(last)
    with open(master, "a", encoding="utf-8") as handle:
        handle.write(half[:40])
    config = _config(tmp_path, master)
    first = _run(config)
    assert first.new_calls == 1, first.summary()
    with open(master, "a", encoding="utf-8") as handle:
        handle.write(half[40:])
    second = _run(config, NOW + dt.timedelta(minutes=1))
    assert second.new_calls == 1, second.summary()
    assert set(archived(tmp_path)) == _keys(calls)


def test_bad_lines_are_said_and_the_good_ones_around_them_delivered(tmp_path, sample_rows,
                                                                   caplog):
    """A line with a wrong field count (a crash mid-write, then the next line), a comma and a
    newline quoted inside lastdata, NUL bytes, a caller name in cp1251: every call that can be
    read is, and each bad line is named with its file and byte."""
    master = tmp_path / "Master.csv"
    calls = _calls(sample_rows, 4, "2026-11-26 10:00")
    calls[1][0]["lastdata"] = 'Local/201@sim-phone,15,tT\n"quoted", and more'
    calls[2][0]["clid"] = '"Иванов" <+79161002301>'
    lines = [master_csv_line(row) for row in _rows(calls)]
    broken = '"","+7916","201","from-did-direct","x","Local/74951230001@from-pstn-0000;2"\n'
    cp1251 = [line.encode("cp1251") if "Иванов" in line else line.encode() for line in lines]
    data = (cp1251[0].replace(b",9,", b",9\x00\x00,") + broken.encode()
            + b"".join(cp1251[1:]))
    master.write_bytes(data)
    config = _config(tmp_path, master)
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = _run(config)
    assert report.exit_code == 0 and report.new_calls == 4, report.summary()
    records = archived(tmp_path)
    assert set(records) == _keys(calls)
    assert records[calls[2][0]["linkedid"]]["name"] == "Иванов"
    assert f"Master.csv byte {len(cp1251[0]) + 2}: line left out, 6 fields" in caplog.text
    assert "NUL bytes removed" in caplog.text


def test_a_file_shrinking_while_it_is_read_is_read_again_from_its_start(tmp_path, sample_rows,
                                                                        small_windows, caplog,
                                                                        while_reading):
    master = tmp_path / "Master.csv"
    calls, later = (_calls(sample_rows, 12, "2026-11-26 10:00"),
                    _calls(sample_rows, 2, "2026-11-26 11:00"))
    write_master_csv(master, _rows(calls))
    config = _config(tmp_path, master)
    while_reading(lambda: _copytruncate(master))
    with caplog.at_level(logging.WARNING, logger="poller"):
        first = _run(config)
    assert first.exit_code == 0 and "shrank" in caplog.text, first.summary()
    taken = set(archived(tmp_path))
    assert taken and taken < _keys(calls)
    write_master_csv(master, _rows(later), mode="a")
    second = _run(config, NOW + dt.timedelta(minutes=1))
    assert second.exit_code == 0, second.summary()
    assert _keys(later) <= set(archived(tmp_path))
    # the lines cut off are in the copy: a backfill from it delivers the rest, none twice
    backfill = _run(config, NOW + dt.timedelta(minutes=2), since=dt.datetime(2026, 11, 26))
    assert backfill.exit_code == 0, backfill.summary()
    assert set(archived(tmp_path)) == _keys(calls + later)


@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_a_missing_file_or_a_folder_in_its_place_is_an_outage(tmp_path, problem):
    """Like a database outage: exit 1, the reason said, nothing charged, nothing moved."""
    master = tmp_path / "Master.csv"
    if problem == "directory":
        master.mkdir()
    path = write_config(tmp_path, "", source={"kind": "csv", "csv": {"path": str(master)},
                                              "incoming": NO_DID},
                        recordings={"name": "{uniqueid}.wav"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 1, result.output
    assert ("not found" if problem == "missing" else "not a regular file") in result.output
    assert "nothing charged" in result.output


def test_lines_without_uniqueid_are_exit_2_naming_loguniqueid(tmp_path, sample_rows):
    master = tmp_path / "Master.csv"
    row = legs_of(sample_rows, DIRECT_ANSWERED)[0]
    fields = next(csv.reader([master_csv_line(row)]))[:16]  # loguniqueid = no, and the rest
    master.write_text(",".join('"' + f.replace('"', '""') + '"' for f in fields) + "\n",
                      encoding="utf-8")
    path = write_config(tmp_path, "", source={"kind": "csv", "csv": {"path": str(master)},
                                              "incoming": NO_DID},
                        recordings={"name": "{uniqueid}.wav"})
    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 2, result.output
    assert "loguniqueid = yes" in result.output and "16 fields" in result.output


@pytest.mark.slow
def test_the_demo_on_master_csv_delivers_what_the_table_demo_does(tmp_path, demo):
    """`poller demo --source csv`: the same sample PBX writing Master.csv instead of a table
    gives the same calls (incoming by trunk channel, recordings by the `*` pattern)."""
    import json

    result = run_cli("demo", "--source", "csv", str(tmp_path / "csv"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "csv" / "cdr-csv" / "Master.csv").is_file()

    def calls(folder: Path) -> list[tuple]:
        records = [json.loads(p.read_text()) for p in (folder / "archive").rglob("*.json")
                   if not p.name.endswith(".incident.json")]
        return sorted((r["number"], r["status"], r["duration"], r["talk_time"],
                       r["answered_by"], r["recording"] is not None, r["recording_problem"])
                      for r in records)

    assert calls(tmp_path / "csv") == calls(demo.folder)


def test_a_call_still_settling_is_read_again_from_its_first_line(tmp_path, sample_rows):
    """A call that ended moments before the run holds the checkpoint at its first line: the
    next run reads it again (with a line Asterisk wrote since) and takes it whole, once."""
    master = tmp_path / "Master.csv"
    done, fresh = (_calls(sample_rows, 2, "2026-11-26 11:00"),
                   _calls(sample_rows, 1, "2026-11-26 11:59:30", kinds=(QUEUE_ANSWERED,))[0])
    write_master_csv(master, _rows(done) + fresh[:1])
    config = _config(tmp_path, master)
    first = _run(config)
    assert first.settling == 1 and set(archived(tmp_path)) == _keys(done), first.summary()
    write_master_csv(master, fresh[1:], mode="a")
    second = _run(config, NOW + dt.timedelta(minutes=2))
    assert second.new_calls == 1 and second.delivered_count == 1, second.summary()
    assert set(archived(tmp_path)) == _keys([*done, fresh])
