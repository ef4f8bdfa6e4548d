"""A state.dir belongs to one ledger and one source (design §13): a second config that names
the same state.dir is refused, both named, before it touches the first one's journal."""

from __future__ import annotations

from support import (
    DIRECT_ANSWERED,
    cdr_table,
    clone_call,
    legs_of,
    local,
    make_config,
    msk,
    run_cli,
    write_config,
)

from poller.errors import ConfigError, ExitCode
from poller.run.options import RunOptions
from poller.run.owner import OWNER_FILE, claim, conflict, owner_of, recorded
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")


def test_a_state_dir_shared_by_two_configs_is_refused_naming_both(tmp_path, sample_rows):
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), local("2026-11-26 10:00"))
    cdr = cdr_table(tmp_path, rows)
    state = {"dir": str(tmp_path / "shared")}
    first = make_config(tmp_path, cdr, state={**state, "url": f"sqlite:///{tmp_path}/a.db"})
    assert run_once(first, RunOptions(now=NOW)).exit_code == ExitCode.OK
    journal = tmp_path / "shared" / "journal"
    step = b'{"key": "1001", "stage": "created", "values": {"object_id": "77"}}\n'
    journal.write_bytes(step)  # a step the first config's next run is to apply
    second = make_config(tmp_path, cdr, source={"name": "lviv"},
                         state={**state, "url": f"sqlite:///{tmp_path}/b.db"})
    try:
        run_once(second, RunOptions(now=NOW))
        raise AssertionError("the second config ran in the first one's state.dir")
    except ConfigError as exc:
        text = str(exc)
    assert str(owner_of(first.state.database_url, "")) in text
    assert str(owner_of(second.state.database_url, "lviv")) in text
    assert journal.read_bytes() == step  # neither applied nor truncated
    assert not (tmp_path / "b.db").exists()
    path = write_config(tmp_path, cdr, source={"name": "lviv"},
                        state={**state, "url": f"sqlite:///{tmp_path}/b.db"})
    checked = run_cli("--config", str(path), "check")
    assert checked.exit_code == ExitCode.PARTIAL
    assert "FAIL  state.dir" in checked.output and "belongs to another config" in \
        checked.output, checked.output
    # the owner's own runs go on
    assert run_once(first, RunOptions(now=NOW)).exit_code == ExitCode.OK
    assert (tmp_path / "shared" / OWNER_FILE).is_file()


def test_a_damaged_owner_file_is_claimed_again(tmp_path, sample_rows):
    config = make_config(tmp_path, cdr_table(tmp_path, []))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / OWNER_FILE).write_text("{torn")
    assert run_once(config, RunOptions(now=NOW)).exit_code == ExitCode.OK
    assert '"source": ""' in (tmp_path / "state" / OWNER_FILE).read_text()


def test_the_same_ledger_at_a_new_address_is_told_how_to_be_claimed_again(tmp_path):
    """A ledger moved to another server (or its host written `127.0.0.1` for `localhost`) is
    another owner to state.dir: every run stops with exit 2 until someone acts, so the
    refusal says what to do for that case, not only to give each config its own folder."""
    claim(tmp_path, owner_of("mysql+pymysql://poller:secret@localhost/poller", "kiev"))
    moved = owner_of("mysql+pymysql://poller:secret@db2.example.net:3306/poller", "kiev")
    text = conflict(tmp_path, moved) or ""
    assert f"remove {tmp_path / OWNER_FILE}" in text and "new address" in text
    assert "secret" not in text and "secret" not in (tmp_path / OWNER_FILE).read_text()
    (tmp_path / OWNER_FILE).unlink()
    claim(tmp_path, moved)
    assert recorded(tmp_path) == moved
