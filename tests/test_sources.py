"""Every Asterisk: the 44 real sample rows give the same calls from a MariaDB table, a
PostgreSQL cdr_pgsql table, a SQLite table and Master.csv — both the real Master.csv that
cdr_csv wrote beside the table and the one written here from the table's rows."""

from __future__ import annotations

import csv
import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support import (
    MSK,
    ROOT,
    SAMPLES,
    archived,
    make_config,
    master_csv_line,
    msk,
    write_master_csv,
)

from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.source.freepbx import freepbx_cdr

# what Asterisk's own schemas and Master.csv give instead of FreePBX's did and recordingfile:
# incoming calls by their trunk channel, recordings by the file name's uniqueid
NO_DID = {"incoming": {"did_set": False, "channels": ["Local/*@from-pstn-*"]}}
PATTERN = "{calldate:%Y/%m/%d}/*-{uniqueid}.wav"
COMPARED = ("status", "number", "start", "duration", "talk_time", "wait_time", "answered_by",
            "recording", "recording_problem")
PGSQL_COLUMNS = ("calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel",
                 "lastapp", "lastdata", "duration", "billsec", "disposition", "amaflags",
                 "accountcode", "uniqueid", "userfield", "peeraccount", "linkedid", "sequence")


def test_the_lines_written_from_the_rows_are_those_cdr_csv_wrote(sample_rows):
    """The helper writes what cdr_csv writes: every field of the real Master.csv, except an
    `end` (and `answer`) a second later where the call lasted a fraction of a second more
    than the table's whole seconds say."""
    real = list(csv.reader((SAMPLES / "Master.csv").read_text(encoding="utf-8").splitlines()))
    written = list(csv.reader("".join(master_csv_line(r) for r in sample_rows).splitlines()))
    assert len(real) == len(written) == 44
    late = 0
    for mine, theirs in zip(written, real, strict=True):
        assert len(mine) == len(theirs) == 21
        assert mine[:10] + mine[12:] == theirs[:10] + theirs[12:]
        for at in (10, 11):  # answer, end
            if mine[at] != theirs[at]:
                gap = dt.datetime.fromisoformat(theirs[at]) - dt.datetime.fromisoformat(mine[at])
                assert gap == dt.timedelta(seconds=1), (mine, theirs)
                late += 1
    assert late == 4  # the queue and announcement members that ran a fraction over


def _run(tmp_path: Path, url: str, **sections: Any) -> dict[str, dict[str, Any]]:
    config = make_config(tmp_path, url, **sections)
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    assert report.skipped == 4, report.summary()  # 2 outgoing, 2 internal
    return {key: {name: record[name] for name in COMPARED}
            for key, record in archived(tmp_path).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_rows) -> dict[str, dict[str, Any]]:
    """The calls as the FreePBX table in SQLite gives them (did and recordingfile set)."""
    folder = tmp_path_factory.mktemp("sqlite")
    return _sqlite_calls(folder, sample_rows)


def _sqlite_calls(folder: Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    import shutil

    url = f"sqlite:///{folder / 'cdr.db'}"
    engine = sa.create_engine(url)
    table = freepbx_cdr(sa.MetaData())
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()
    shutil.copytree(SAMPLES / "recordings", folder / "monitor")
    _settle(folder / "monitor")
    return _run(folder, url)


def _settle(monitor: Path) -> None:
    import os

    past = dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.UTC).timestamp()
    for path in monitor.rglob("*.wav"):
        os.utime(path, (past, past))


def test_the_reference_is_what_calls_csv_says(reference, sample_calls):
    incoming = [c for c in sample_calls if c["direction"] == "incoming"]
    assert len(reference) == len(incoming) == 23
    by_start = {(r["number"], r["start"][:19]): r for r in reference.values()}
    for expected in incoming:
        record = by_start[(expected["caller_number"],
                           expected["placed_at_msk"][:19].replace(" ", "T"))]
        assert record["status"] == expected["expected_outcome"], expected["call_id"]
        assert (record["recording"] is not None) == \
            expected["recording_expected"].startswith("yes"), expected["call_id"]


def test_mariadb_gives_the_same_calls(tmp_path, cdr_db, sample_rows, recordings_dir, reference):
    cdr_db.insert(sample_rows)
    assert _run(tmp_path, cdr_db.url) == reference


@pytest.mark.slow  # a whole run with real encodes, as below
def test_postgresql_cdr_pgsql_gives_the_same_calls(tmp_path, pg_db, sample_rows,
                                                   recordings_dir, reference):
    """Asterisk's cdr_pgsql table: calldate a timestamp with time zone (an instant: each
    start keeps its +03:00 and its wall clock whatever the server's zone), no did, no
    recordingfile (the pattern finds the files, paused halves included)."""
    rows = [{name: (row[name].replace(tzinfo=MSK) if name == "calldate" else row[name])
             for name in PGSQL_COLUMNS} for row in sample_rows]
    pg_db.insert(rows)
    pg_db.execute("ALTER DATABASE " + sa.engine.make_url(pg_db.url).database
                  + " SET timezone = 'America/Los_Angeles'")
    calls = _run(tmp_path, pg_db.url, source=NO_DID, recordings={"name": PATTERN})
    assert calls == reference


# each source's run delivers the 23 sample calls and encodes their 16 recordings for real
# (2 to 6 s each): the fast lane keeps the reference run alone
@pytest.mark.slow
@pytest.mark.parametrize("written", [False, True], ids=["cdr_csv's own", "from the rows"])
def test_master_csv_gives_the_same_calls(tmp_path, sample_rows, recordings_dir, reference,
                                         written):
    path = tmp_path / "cdr-csv" / "Master.csv"
    if written:
        write_master_csv(path, sample_rows)
    else:
        path.parent.mkdir()
        path.write_bytes((SAMPLES / "Master.csv").read_bytes())
    calls = _run(tmp_path, "", source={"kind": "csv", "csv": {"path": str(path)}, **NO_DID},
                 recordings={"name": PATTERN})
    assert calls == reference


@pytest.mark.slow
def test_the_sqlite_table_of_asterisks_own_schema_gives_the_same_calls(tmp_path, sample_rows,
                                                                       reference):
    """Without did and recordingfile (cdr_sqlite3_custom's usual columns) a SQLite table finds
    incoming calls by channel and recordings by the pattern, as Master.csv does."""
    url = f"sqlite:///{tmp_path / 'cdr.db'}"
    engine = sa.create_engine(url)
    columns = [sa.Column("calldate", sa.DateTime, index=True)] + [
        sa.Column(name, sa.Integer if name in ("duration", "billsec", "amaflags", "sequence")
                  else sa.String(150)) for name in PGSQL_COLUMNS[1:]]
    table = sa.Table("cdr", sa.MetaData(), *columns)
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{name: row[name] for name in PGSQL_COLUMNS}
                                      for row in sample_rows])
    engine.dispose()
    import shutil

    shutil.copytree(SAMPLES / "recordings", tmp_path / "monitor")
    _settle(tmp_path / "monitor")
    assert _run(tmp_path, url, source=NO_DID, recordings={"name": PATTERN}) == reference


def test_check_names_the_server_and_driver_and_the_shipped_grant_reads_only(tmp_path, pg_db):
    """`check` on PostgreSQL: which server and driver it found; the role that
    sql/grant-readonly-postgresql.sql makes may read the table and nothing more, while the
    superuser the tests connect as is warned about."""
    from support import sql_statements

    from poller.ops.check import run_checks

    role = f"poller_g{secrets.token_hex(3)}"
    statements = [s.replace("poller", role).replace(f"{role}_", "poller_")
                  for s in sql_statements(ROOT / "sql" / "grant-readonly-postgresql.sql")]
    for statement in statements:
        pg_db.execute(statement)
    try:
        url = sa.engine.make_url(pg_db.url).set(username=role, password="change-me")
        reader = make_config(tmp_path, url.render_as_string(hide_password=False), source=NO_DID,
                             recordings={"name": PATTERN})
        results = {r.name: r for r in run_checks(reader)}
        assert results["source"].outcome == "ok", results["source"]
        assert "on PostgreSQL 1" in results["source"].detail
        assert "through psycopg 3." in results["source"].detail
        assert results["source grants"].outcome == "ok", results["source grants"]
        admin = make_config(tmp_path, pg_db.url, source=NO_DID, recordings={"name": PATTERN})
        grants = {r.name: r for r in run_checks(admin)}["source grants"]
        assert grants.outcome == "warn" and "superuser" in grants.detail
    finally:
        pg_db.execute(f"DROP OWNED BY {role}")
        pg_db.execute(f"DROP ROLE {role}")
