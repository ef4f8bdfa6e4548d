"""One server ledger for several PBXs (design §13): each source's watermark, settings and calls
kept apart; a ledger made by two first runs at once; an older ledger upgraded in place."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from support import (
    DATA,
    DIRECT_ANSWERED,
    QUEUE_ANSWERED,
    archived,
    cdr_table,
    clone_call,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
    run_cli,
    sql_statements,
    write_config,
)

from poller.errors import ExitCode
from poller.ledger.schema import SCHEMA_VERSION
from poller.ledger.store import Ledger, made_meanwhile
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")
STARTS = ("2026-11-26 09:10", "2026-11-26 09:40", "2026-11-26 10:15", "2026-11-26 10:50")


def same_uniqueids(sample_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Four calls as a PBX writes them; the other PBX, started the same second, writes the
    very same uniqueids and linkedids."""
    direct, queue = legs_of(sample_rows, DIRECT_ANSWERED), legs_of(sample_rows, QUEUE_ANSWERED)
    rows: list[dict[str, Any]] = []
    for number, start in enumerate(STARTS):
        template = direct if number % 2 else queue
        rows += clone_call(template, local(start), epoch=1796399787 + number)
    return rows


# the servers' marks by hand: the fixture is asked for by name, which the marks cannot see
SERVERS = [pytest.param("mysql", marks=pytest.mark.mariadb),
           pytest.param("postgresql", marks=pytest.mark.postgresql)]


def server_url(request: Any, kind: str) -> str:
    database = request.getfixturevalue("empty_db" if kind == "mysql" else "pg_db")
    return database.url + ("?charset=utf8mb4" if kind == "mysql" else "")


def pbx_config(tmp_path: Path, name: str, rows: list[dict[str, Any]], state_url: str,
               **sections: Any) -> Any:
    """One PBX's poller: its own cdr table and state.dir, the shared ledger and archive."""
    site = tmp_path / name
    site.mkdir()
    return make_config(site, cdr_table(site, rows), source={"name": name},
                       state={"url": state_url},
                       target={"archive": {"dir": str(tmp_path / "archive")}}, **sections)


@pytest.mark.parametrize("kind", SERVERS)
def test_two_pbxs_with_the_same_uniqueids_share_one_ledger_and_one_target(
        tmp_path, sample_rows, request, kind):
    """Each call of both PBXs is delivered once, under its PBX's name; each source keeps its
    own watermark; status and retry see one source's part."""
    url = server_url(request, kind)
    rows = same_uniqueids(sample_rows)
    kiev = pbx_config(tmp_path, "kiev", rows, url)
    lviv = pbx_config(tmp_path, "lviv", rows[: -len(legs_of(sample_rows, DIRECT_ANSWERED))], url)
    for moment in (NOW, NOW.replace(minute=5)):
        for config in (kiev, lviv, kiev):
            report = run_once(config, RunOptions(now=moment))
            assert report.exit_code == ExitCode.OK, report.summary()
    records = archived(tmp_path)
    keys = {key_of(rows[i:i + 1]) for i in range(len(rows))}
    assert len(keys) == 4
    assert set(records) == {f"kiev:{key}" for key in keys} | {
        f"lviv:{key}" for key in keys if not key.startswith("1796399790")}
    assert {record["pbx"] for key, record in records.items()
            if key.startswith("lviv:")} == {"lviv"}
    with _ledger(url, "kiev") as ledger:
        assert ledger.counts() == {"done": 4}
        assert ledger.watermark() == local("2026-11-26 10:50")
    with _ledger(url, "lviv") as ledger:
        assert ledger.counts() == {"done": 3}
        assert ledger.watermark() == local("2026-11-26 10:15")
        assert ledger.get("schema_version") == str(SCHEMA_VERSION)
    with _ledger(url, "") as ledger:  # nothing of theirs belongs to an unnamed source
        assert ledger.counts() == {} and ledger.watermark() is None
    path = write_config(tmp_path / "kiev", kiev.source.url, source={"name": "kiev"},
                        state={"url": url})
    shown = run_cli("--config", str(path), "status", "--source", "lviv", "--json")
    assert shown.exit_code == 0, shown.output
    assert '"source": "lviv"' in shown.output and '"done": 3' in shown.output
    refused = run_cli("--config", str(path), "retry", "--failed", "--source", "no pe")
    assert refused.exit_code == ExitCode.CONFIG and "--source" in refused.output
    # a parked call of lviv named from a config without a name: its source is said, not
    # "0 calls put back"
    parked = f"lviv:{sorted(keys)[0]}"
    with _ledger(url, "lviv") as ledger, ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE poller_calls SET stage = 'failed' WHERE call_key = :k"),
                     {"k": parked})
    (tmp_path / "plain").mkdir()
    plain = write_config(tmp_path / "plain", kiev.source.url, state={"url": url})
    wrong = run_cli("--config", str(plain), "retry", parked)
    assert wrong.exit_code == ExitCode.CONFIG, wrong.output
    assert "source lviv" in wrong.output and "--source lviv" in wrong.output
    with _ledger(url, "lviv") as ledger:
        assert ledger.counts() == {"done": 2, "failed": 1}
    put_back = run_cli("--config", str(plain), "retry", parked, "--source", "lviv")
    assert put_back.exit_code == 0 and "1 call put back" in put_back.output, put_back.output


class _ledger:
    """A ledger of one source, closed after use."""

    def __init__(self, url: str, source: str):
        self.ledger = Ledger(url, create=False, source=source)

    def __enter__(self) -> Ledger:
        return self.ledger

    def __exit__(self, *exc: object) -> None:
        self.ledger.close()


@pytest.mark.parametrize("kind", SERVERS)
def test_first_runs_at_once_all_make_the_ledger(request, kind):
    """Two hosts' first runs against one fresh ledger: each finds the tables (or the
    schema_version row) made a moment before by the other, and goes on."""
    url = server_url(request, kind)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    for _ in range(4):
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def first_run(barrier: threading.Barrier = barrier,
                      errors: list[BaseException] = errors) -> None:
            barrier.wait()
            try:
                Ledger(url, source="kiev").close()
            except BaseException as exc:  # noqa: BLE001 - kept for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=first_run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with engine.begin() as conn:
            assert conn.exec_driver_sql("SELECT value FROM poller_meta WHERE name = "
                                        "'schema_version'").scalar() == str(SCHEMA_VERSION)
            for table in ("poller_incidents", "poller_calls", "poller_meta"):
                conn.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()


@pytest.mark.mariadb
def test_a_deadlock_between_two_creators_is_looked_at_again_other_errors_are_not():
    """Two first runs creating the tables at once on MariaDB: the server broke a deadlock
    between them (`1213 Deadlock found`), and the losing run stopped as `state database
    unreachable` instead of finding the ledger made a moment later."""
    def refused(code: int, text: str) -> sa.exc.OperationalError:
        return sa.exc.OperationalError("CREATE TABLE poller_calls", {},
                                       pymysql.err.OperationalError(code, text))

    assert made_meanwhile(refused(1213, "Deadlock found when trying to get lock; try "
                                        "restarting transaction"))
    assert made_meanwhile(refused(1050, "Table 'poller_meta' already exists"))
    assert not made_meanwhile(refused(1045, "Access denied for user 'poller'@'localhost'"))
    assert not made_meanwhile(refused(2003, "Can't connect to MySQL server on '127.0.0.1'"))


def test_a_version_3_mysql_ledger_is_upgraded_and_keeps_its_keys(tmp_path, sample_rows,
                                                                 empty_db):
    """A ledger made by the version-3 SQL, holding a delivered call: upgraded at start, its
    calls are the unnamed source's, their keys unchanged; a later named source sits beside."""
    url = empty_db.url + "?charset=utf8mb4"
    with sa.create_engine(url, poolclass=sa.pool.NullPool).begin() as conn:
        for statement in sql_statements(DATA / "ledger-mysql-v3.sql"):
            conn.exec_driver_sql(statement)
    rows = same_uniqueids(sample_rows)
    site = tmp_path / "old"
    site.mkdir()
    old = make_config(site, cdr_table(site, rows), state={"url": url},
                      target={"archive": {"dir": str(tmp_path / "archive")}})
    assert run_once(old, RunOptions(now=NOW)).exit_code == ExitCode.OK
    named = pbx_config(tmp_path, "kiev", rows, url)
    assert run_once(named, RunOptions(now=NOW)).exit_code == ExitCode.OK
    with _ledger(url, "") as ledger:
        assert ledger.get("schema_version") == str(SCHEMA_VERSION)
        assert ledger.counts() == {"done": 4}
        assert {entry.key for entry in ledger.entries(["done"])} == {
            key_of(rows[i:i + 1]) for i in range(len(rows))}
        ledger.put("cursor:" + "c" * 64, "{}")  # the names of settings have room for a source
    with _ledger(url, "kiev") as ledger:
        assert ledger.counts() == {"done": 4}
        assert all(e.key.startswith("kiev:") for e in ledger.entries(["done"]))
