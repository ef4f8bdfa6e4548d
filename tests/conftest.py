"""Shared fixtures: a throw-away database on the real MariaDB server, sample rows, configs."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from cdrtable import load_table  # noqa: E402

from poller import config as config_module  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SAMPLES = DATA / "samples"
MSK = ZoneInfo("Europe/Moscow")
MYSQL_URL = os.environ.get("POLLER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")


@dataclass
class CdrDatabase:
    """A database of its own on the MariaDB server, holding a FreePBX cdr table."""

    url: str
    engine: sa.engine.Engine

    def insert(self, rows: list[dict[str, Any]], table: str = "cdr") -> None:
        if not rows:
            return
        meta = sa.MetaData()
        cdr = sa.Table(table, meta, autoload_with=self.engine)
        with self.engine.begin() as conn:
            conn.execute(cdr.insert(), rows)

    def execute(self, sql: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(sa.text(sql), params)


@pytest.fixture(scope="session")
def mysql_server() -> str:
    engine = sa.create_engine(MYSQL_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"no MariaDB server at {MYSQL_URL} (set POLLER_TEST_MYSQL_URL): {exc.orig}")
    finally:
        engine.dispose()
    return MYSQL_URL


def _create_database(server: str, schema_sql: Path | None) -> Iterator[CdrDatabase]:
    name = f"poller_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = f"{server.rstrip('/')}/{name}"
    engine = sa.create_engine(url + "?charset=utf8mb4", poolclass=sa.pool.NullPool)
    try:
        if schema_sql is not None:
            with engine.begin() as conn:
                conn.exec_driver_sql(schema_sql.read_text())
        yield CdrDatabase(url, engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def cdr_db(mysql_server: str) -> Iterator[CdrDatabase]:
    """An empty FreePBX cdr table (sql/cdr-freepbx.sql) in a database of its own."""
    yield from _create_database(mysql_server, ROOT / "sql" / "cdr-freepbx.sql")


@pytest.fixture
def empty_db(mysql_server: str) -> Iterator[CdrDatabase]:
    """An empty database of its own (for other schemas, or a MySQL ledger)."""
    yield from _create_database(mysql_server, None)


@pytest.fixture(scope="session")
def sample_rows() -> list[dict[str, Any]]:
    """The 44 real rows Asterisk 22 wrote for 27 calls, in insertion order."""
    return load_table(SAMPLES / "cdr.txt")


@pytest.fixture(scope="session")
def sample_calls() -> list[dict[str, str]]:
    import csv

    with open(SAMPLES / "calls.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def recordings_dir(tmp_path: Path) -> Path:
    """A copy of the sample recordings (FreePBX date folders) that tests may change."""
    target = tmp_path / "monitor"
    shutil.copytree(SAMPLES / "recordings", target)
    past = dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.UTC).timestamp()
    for path in target.rglob("*.wav"):
        os.utime(path, (past, past))  # written long ago: settled
    return target


def config_data(tmp_path: Path, source_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """The test configuration as a TOML document would hold it: archive target, state and
    recordings under tmp_path; `sections` merged in (nested tables merged, not replaced)."""
    data: dict[str, Any] = {
        "source": {"url": source_url, "timezone": "Europe/Moscow", "settle": "60s",
                   "lookback": "4h", "start": "2026-11-26 09:00"},
        "state": {"dir": str(tmp_path / "state")},
        "recordings": {"dir": str(tmp_path / "monitor")},
        "target": {"kind": "archive", "archive": {"dir": str(tmp_path / "archive")}},
    }
    for section, values in sections.items():
        node = data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key].update(value)
            else:
                node[key] = value
    return data


def make_config(tmp_path: Path, source_url: str, **sections: dict[str, Any]) -> Any:
    """A validated Config for tests (see config_data), its recordings folder made as on a PBX
    (a missing one makes calls wait: the spool is not mounted)."""
    config = config_module.from_mapping(config_data(tmp_path, source_url, **sections), env={})
    Path(config.recordings.dir).mkdir(parents=True, exist_ok=True)
    return config


def msk(text: str) -> dt.datetime:
    """An aware Moscow time from 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=MSK)
