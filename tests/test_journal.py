"""The journal of confirmed steps (state.dir/journal): a line that cannot be read is set aside
with a warning, the rest applied, and the runs go on; `check` fails until someone looked."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support import (
    DIRECT_ANSWERED,
    cdr_table,
    clone_call,
    entry_of,
    key_of,
    legs_of,
    make_config,
    msk,
)

from poller.errors import ExitCode, TargetUnavailable
from poller.ledger.journal import Journal, parse_lines
from poller.model import Stage
from poller.ops.check import FAIL, run_checks
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")


def good_line(key: str, object_id: str) -> bytes:
    return json.dumps({"key": key, "stage": "created", "values": {
        "object_id": object_id, "recording": None, "recording_problem": None,
        "note": None}}).encode() + b"\n"


BAD_LINES = {
    "torn last line": b'{"key": "1795675107.0", "stage": "crea',  # a kill mid-append
    "garbage bytes": b"\x00\x17\xff\xfe garbage\n",
    "a list": b"[1, 2, 3]\n",
    "an unknown stage": b'{"key": "K", "stage": "teleported", "values": {}}\n',
    "values not a table": b'{"key": "K", "stage": "created", "values": 5}\n',
    "a value not text": b'{"key": "K", "stage": "created", "values": {"object_id": [1]}}\n',
    "an unknown value": b'{"key": "K", "stage": "created", "values": {"stage": "done"}}\n',
    "a stage never journaled": b'{"key": "K", "stage": "skipped", "values": {}}\n',
    "bad UTF-8": b'{"key": "K\xc3\x28", "stage": "created", "values": {}}\n',
    "no key": b'{"stage": "created", "values": {}}\n',
}


@pytest.mark.parametrize("bad", list(BAD_LINES.values()), ids=list(BAD_LINES))
def test_a_line_that_cannot_be_read_is_told_apart_from_the_good_ones(bad):
    good = good_line("K2", "obj-2")
    lines = good + bad if bad.startswith(b'{"key": "1795') else bad + good
    steps, unreadable = parse_lines(lines)
    assert [(step.key, step.stage) for step in steps] == [("K2", Stage.CREATED)]
    (found,) = unreadable
    assert found.text == bad.rstrip(b"\n") and found.why


def waiting_call(tmp_path: Path, sample_rows: list[dict[str, Any]]) -> tuple[Any, str]:
    """A call the ledger holds as seen: the target was down for its run."""
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, 0))
    config = make_config(tmp_path, cdr_table(tmp_path, rows))

    def down(config: Any) -> Any:
        raise TargetUnavailable("archive: not mounted")

    assert run_once(config, RunOptions(now=NOW), target_factory=down).new_calls == 1
    return config, key_of(rows)


@pytest.mark.parametrize("bad", list(BAD_LINES.values()), ids=list(BAD_LINES))
def test_a_bad_journal_line_is_set_aside_and_the_rest_applied(tmp_path, sample_rows, bad,
                                                              caplog):
    """Every run ended `unexpected error: JSONDecodeError` (rc 1, nothing delivered) on one
    bad line; `check` said nothing. The line goes to journal.bad with a warning, the good
    step is applied (the call is finished under the object the journal names), the run
    delivers; check fails until the set-aside file is looked at."""
    config, key = waiting_call(tmp_path, sample_rows)
    state = Path(config.state.dir)
    object_id = "2026/11/26/from-the-journal.json"
    journal = state / "journal"
    journal.write_bytes(good_line(key, object_id) + bad)
    assert [r for r in run_checks(config) if r.outcome == FAIL and r.name == "journal"]

    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert report.exit_code == ExitCode.OK and report.delivered_count == 1, report.summary()
    entry = entry_of(config, key)
    assert entry.stage == Stage.DONE and entry.object_id == object_id
    assert journal.read_bytes() == b""
    assert (state / "journal.bad").read_bytes() == bad.rstrip(b"\n") + b"\n"
    assert "journal.bad" in caplog.text and "line 2" in caplog.text
    failed = [r for r in run_checks(config) if r.outcome == FAIL and r.name == "journal"]
    assert failed and "journal.bad" in failed[0].detail


def test_a_directory_named_journal_is_set_aside_and_the_run_delivers(tmp_path, sample_rows,
                                                                     caplog):
    """`IsADirectoryError` ended every run."""
    config, key = waiting_call(tmp_path, sample_rows)
    state = Path(config.state.dir)
    (state / "journal").unlink()  # the first run made it
    (state / "journal").mkdir()
    (state / "journal" / "what.txt").write_text("left by someone")
    assert [r for r in run_checks(config) if r.outcome == FAIL and r.name == "journal"]
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert report.exit_code == ExitCode.OK and report.delivered_count == 1, report.summary()
    assert (state / "journal").is_file()
    (aside,) = [p for p in state.iterdir() if p.name.startswith("journal.bad")]
    assert (aside / "what.txt").read_text() == "left by someone"
    assert str(aside) in caplog.text
    assert [r for r in run_checks(config) if r.outcome == FAIL and r.name == "journal"]


def test_a_clean_journal_passes_check(tmp_path, sample_rows):
    config, _ = waiting_call(tmp_path, sample_rows)
    (Path(config.state.dir) / "journal").write_bytes(b"")
    assert not [r for r in run_checks(config) if r.name == "journal" and r.outcome == FAIL]


def test_the_journal_keeps_what_it_cannot_set_aside_in_the_log(tmp_path, caplog):
    """journal.bad itself unusable (a directory): the line is logged whole, never dropped."""
    (tmp_path / "journal.bad").mkdir()
    (tmp_path / "journal").write_bytes(b"garbage\n")

    class Nothing:
        def known(self, keys: list[str]) -> dict[str, Stage]:
            return {}

        def incident_stages(self, keys: list[str]) -> dict[str, Any]:
            return {}

    journal = Journal(tmp_path)
    with caplog.at_level(logging.WARNING, logger="poller"):
        journal.open(Nothing())  # type: ignore[arg-type]
    journal.close()
    assert "garbage" in caplog.text
