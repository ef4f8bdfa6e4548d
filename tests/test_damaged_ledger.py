"""A damaged ledger: `status --json` always prints JSON (the error in it), `check` fails on
any ledger a run could not use, and neither says rc 0 while every run fails."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from support import DIRECT_ANSWERED, cdr_table, clone_call, legs_of, msk, run_cli, write_config

from poller.config.load import load
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")


def _sql(statement: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(statement)
    return damage


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, it was overwritten\n" * 200)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# the damage, and whether what status reads meets it (else only the runs do)
DAMAGE = {
    "garbage": (_garbage, True),
    "truncated": (_truncated, True),
    "bad watermark": (_sql("UPDATE poller_meta SET value = 'yesterday' "
                           "WHERE name = 'watermark'"), True),
    "non-JSON last run": (_sql("UPDATE poller_meta SET value = '{not json' "
                               "WHERE name = 'last_run'"), True),
    "bogus stage": (_sql("UPDATE poller_calls SET stage = 'teleported'"), True),
    "dropped calls table": (_sql("DROP TABLE poller_calls"), True),
    "text first_calldate": (_sql("UPDATE poller_calls SET first_calldate = 'yesterday'"),
                            False),
    "bad origin": (_sql("UPDATE poller_meta SET value = 'the beginning' "
                        "WHERE name = 'origin'"), False),
}


@pytest.fixture
def delivered(tmp_path: Path, sample_rows: list) -> Path:
    """A site whose ledger holds delivered calls and a waiting one; its config file."""
    rows = [row for minute in range(3) for row in clone_call(
        legs_of(sample_rows, DIRECT_ANSWERED), dt.datetime(2026, 11, 26, 10, minute))]
    path = write_config(tmp_path, cdr_table(tmp_path, rows))
    (tmp_path / "monitor").mkdir()
    assert run_once(load(path, env={}), RunOptions(now=NOW)).exit_code == 0
    return path


@pytest.mark.parametrize(("damage", "status_meets_it"), list(DAMAGE.values()),
                         ids=list(DAMAGE))
def test_status_json_is_always_json_and_check_fails(delivered, damage, status_meets_it):
    """Garbage or half a state.db: `status --json` printed `unexpected error: DatabaseError`
    and no JSON; a bad watermark, a non-JSON last_run, a bogus stage: `unexpected error`;
    a dropped table or a text first_calldate: status and check said rc 0 while every run
    failed."""
    ledger = delivered.parent / "state" / "state.db"
    assert not Path(f"{ledger}-wal").exists() or Path(f"{ledger}-wal").stat().st_size == 0
    damage(ledger)

    shown = run_cli("--config", str(delivered), "status", "--json")
    data = json.loads(shown.stdout)  # JSON, whatever the damage
    assert data["schema"] == 1
    assert "sqlalche.me" not in shown.stdout and "Background on this error" not in shown.stdout
    if status_meets_it:
        assert data["ledger_error"] and shown.exit_code == 1, data
        text = run_cli("--config", str(delivered), "status")
        assert text.exit_code == 1 and "ledger:" in text.stdout, text.output

    checked = run_cli("--config", str(delivered), "check")
    assert checked.exit_code == 1, checked.output
    assert any(line.startswith("FAIL") and "state database" in line
               for line in checked.stdout.splitlines()), checked.stdout

    ran = run_cli("--config", str(delivered), "run")
    if ran.exit_code != 0:  # the runs cannot use it: status never says 0 again
        after = run_cli("--config", str(delivered), "status", "--json")
        data = json.loads(after.stdout)
        assert after.exit_code == 1, ran.output
        assert data["ledger_error"] or data["last_run"]["error"], data


def test_a_healthy_ledger_passes_both(delivered):
    data = json.loads(run_cli("--config", str(delivered), "status", "--json").stdout)
    assert data["ledger_error"] is None
    checked = run_cli("--config", str(delivered), "check")
    assert not [line for line in checked.stdout.splitlines()
                if line.startswith("FAIL") and "state" in line], checked.stdout


def test_status_says_when_the_last_run_stopped_on_an_unexpected_error(delivered, monkeypatch):
    """A failure no check foresees still shows: the last run records it, status says so."""
    from poller.run import pipeline

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline, "_deliver", broken)
    with pytest.raises(ZeroDivisionError):
        run_once(load(delivered, env={}), RunOptions(now=NOW + dt.timedelta(minutes=1)))
    shown = run_cli("--config", str(delivered), "status", "--json")
    assert "ZeroDivisionError: a bug" in json.loads(shown.stdout)["last_run"]["error"]
    assert shown.exit_code == 1
    assert "ZeroDivisionError" in run_cli("--config", str(delivered), "status").stdout
