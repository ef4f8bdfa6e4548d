"""Shared fixtures: a throw-away database on the real MariaDB server, sample rows and
recordings, the demo; and the marks that fixtures give the tests using them."""

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

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from cdrtable import load_table  # noqa: E402
from support import (  # noqa: E402
    MYSQL_URL,
    POSTGRESQL_URL,
    ROOT,
    SAMPLES,
    cdr_table,
    run_cli,
    sql_statements,
)

# A test that uses one of these fixtures, directly or through another fixture, gets the mark:
# `-m "not mariadb and not slow"` then runs without a database server, in seconds.
MARK_OF_FIXTURE = {"mysql_server": "mariadb", "postgresql_server": "postgresql", "demo": "slow"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in MARK_OF_FIXTURE.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(MARK_OF_FIXTURE[fixture])


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


def _server(url: str, name: str, variable: str, mark: str) -> str:
    """A database server the tests use. Without one its tests are skipped, except under CI,
    where a skip would let a broken server pass unnoticed."""
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except (sa.exc.OperationalError, ImportError) as exc:
        reason = (f"no {name} server at {shown} (set {variable} to one, or deselect with "
                  f"-m 'not {mark}'): {getattr(exc, 'orig', exc)}")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def mysql_server() -> str:
    """The MariaDB server of POLLER_TEST_MYSQL_URL."""
    return _server(MYSQL_URL, "MariaDB", "POLLER_TEST_MYSQL_URL", "mariadb")


@pytest.fixture(scope="session")
def postgresql_server() -> str:
    """The PostgreSQL server of POLLER_TEST_POSTGRESQL_URL (through psycopg 3)."""
    return _server(POSTGRESQL_URL, "PostgreSQL", "POLLER_TEST_POSTGRESQL_URL", "postgresql")


@pytest.fixture
def pg_db(postgresql_server: str) -> Iterator[CdrDatabase]:
    """Asterisk's cdr_pgsql table (sql/cdr-pgsql.sql) in a database of its own."""
    name = f"poller_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(postgresql_server, poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(postgresql_server).set(database=name)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in sql_statements(ROOT / "sql" / "cdr-pgsql.sql"):
                conn.exec_driver_sql(statement)
        yield CdrDatabase(url.render_as_string(hide_password=False), engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def cdr_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty FreePBX cdr table, once in a SQLite file and once on the MariaDB server: the
    run's glue is tested without a server, and MariaDB still runs the same test (fill it with
    support.insert_rows)."""
    if request.param == "sqlite":  # beside the test's tmp_path, whose files a test may count
        return cdr_table(tmp_path_factory.mktemp("pbx"), [])
    database: CdrDatabase = request.getfixturevalue("cdr_db")
    return database.url


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


@dataclass(frozen=True)
class Demo:
    """A folder `poller demo` built and delivered, with what the command printed."""

    folder: Path
    output: str

    @property
    def config(self) -> Path:
        return self.folder / "poller.toml"


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`poller demo`, built and run once for the session: tests that only read it share it."""
    folder = tmp_path_factory.mktemp("demo").resolve() / "demo"
    result = run_cli("demo", str(folder))
    assert result.exit_code == 0, result.output
    return Demo(folder, result.output)


@pytest.fixture
def demo_copy(demo: Demo, tmp_path: Path) -> Demo:
    """A copy of the session's demo for a test that runs the poller on it (its config names
    the copy's own paths)."""
    folder = tmp_path.resolve() / "demo"
    shutil.copytree(demo.folder, folder, symlinks=True)
    # the config, and the claim state.dir keeps of its ledger, name the copy's own paths
    for named in (folder / "poller.toml", folder / "state" / "owner.json"):
        if named.is_file():
            named.write_text(named.read_text(encoding="utf-8").replace(str(demo.folder),
                                                                       str(folder)),
                             encoding="utf-8")
    return Demo(folder, demo.output)


@pytest.fixture
def site() -> Iterator[Path]:
    """A folder every user may enter (pytest's own is root's, mode 0700): for what runs as
    another user."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="poller-site-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
