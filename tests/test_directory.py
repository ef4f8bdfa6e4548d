"""The caller directory: CSV, SQLite and a CRM database of its own on MariaDB; numbers
in every form matched; warnings once; the copy in state.dir; unreadable at first and later."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from support import (
    archived,
    as_nobody,
    cdr_table,
    config_data,
    give_to_nobody,
    key_of,
    needs_root,
    run_cli,
    write_config,
)

from poller.callers import directory
from poller.callers import readers as directory_read
from poller.callers.caller import Caller, caller_fields
from poller.callers.directory import lookup, verify
from poller.callers.numbers import normalise
from poller.callers.readers import parse_rows, read_csv
from poller.config.load import from_mapping, load
from poller.config.schema import CallersConfig, Seconds, Secret
from poller.errors import ConfigError, ExitCode
from poller.ops.check import WARN, run_checks
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
ACME = "+79161234567"
ROGA = "+74951234567"

# the CRM's contacts, its numbers written as people write them
CONTACTS = [
    (1, "8 (916) 123-45-67", "ООО «Акме»", "7701000001"),
    (2, "+7 495 123 45 67", "Рога и копыта", "7701000002"),
    (3, "0049 30 1234567", "Berlin GmbH", None),
    (4, "anonymous", "Nobody", None),  # a bad row
    (5, "89161234567", "Acme again", None),  # the same number twice
]
QUERY = "SELECT phone AS number, company AS name, id, inn FROM contacts"
PER_RUN = QUERY + " WHERE phone_e164 IN :numbers"

CSV_TEXT = (
    "number,name,id,inn\n"
    "8 (916) 123-45-67,ООО «Акме»,1,7701000001\n"
    "+7 495 123 45 67,Рога и копыта,2,7701000002\n"
    "\n"
    "0049 30 1234567,Berlin GmbH,3,\n"
    "anonymous,Nobody,4,\n"
    "89161234567,Acme again,5,\n"
)


def csv_config(path: Path, **changes) -> CallersConfig:
    values = {"country": "RU", "csv": str(path), "fields": ("inn",), "refresh": Seconds(600)}
    return CallersConfig(**(values | changes))


def sql_config(url: str, query: str = QUERY, **changes) -> CallersConfig:
    values = {"country": "RU", "url": Secret(url), "query": query, "fields": ("inn",)}
    return CallersConfig(**(values | changes))


@pytest.fixture
def callers_csv(tmp_path: Path) -> Path:
    path = tmp_path / "callers.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    return path


# ---- rows and numbers


@pytest.mark.parametrize("written", [
    "89161234567", "+79161234567", "79161234567", "9161234567", "810 7 916 123 45 67",
])
def test_a_caller_number_in_every_form_finds_its_caller(tmp_path, callers_csv, written):
    found = lookup(csv_config(callers_csv), tmp_path, [normalise(written, "RU") or ""], NOW)
    assert found.find(normalise(written, "RU")) == Caller(
        ACME, "ООО «Акме»", "1", {"inn": "7701000001"})


def test_unknown_anonymous_and_unparsable_callers_are_unmatched(tmp_path, callers_csv):
    found = lookup(csv_config(callers_csv), tmp_path, ["+79990000000", ""], NOW)
    assert found.find("+79990000000") is None and found.find(None) is None
    assert dict(found.matches) == {}


def test_rows_bad_and_twice_are_left_out_and_reported():
    rows = [("line 2", ["89161234567", "Acme", "1"]), ("line 3", ["xyz", "Bad", "2"]),
            ("line 4", ["", "Empty", "3"]), ("line 5", ["+79161234567", "Again", "4"])]
    parsed = parse_rows(["Number", " NAME ", "id"], rows, "RU", ())
    assert list(parsed.callers) == [ACME]
    assert parsed.callers[ACME].name == "Acme" and parsed.callers[ACME].extra is None
    assert parsed.problems == (
        "2 rows left out, not a phone number: line 3: 'xyz' is not a phone number; "
        "line 4: no number",
        "1 rows left out, number listed twice, the first row kept: line 5: +79161234567 "
        "already listed at line 2")


def test_a_missing_column_is_unreadable():
    with pytest.raises(directory.DirectoryError, match="no column 'name'"):
        parse_rows(["number", "company"], [], "RU", ())
    with pytest.raises(directory.DirectoryError, match="no column 'inn'"):
        parse_rows(["number", "name"], [], "RU", ("inn",))


def test_caller_fields_are_null_for_an_unknown_caller():
    acme = Caller(ACME, "Acme", None, {"inn": "77"})
    assert caller_fields(acme, ["inn"]) == {"caller_id": None, "caller_name": "Acme",
                                            "caller_inn": "77"}
    assert caller_fields(None, ["inn"]) == {"caller_id": None, "caller_name": None,
                                            "caller_inn": None}


@pytest.mark.parametrize("text", [
    "\ufeffnumber;name\n89161234567;Acme\n",  # Excel: BOM and ";"
    "number\tname\n89161234567\tAcme\n",
    '"number","name"\n"89161234567","Acme"\n',
])
def test_csv_dialects_excel_writes(tmp_path, text):
    path = tmp_path / "c.csv"
    path.write_text(text, encoding="utf-8")
    assert read_csv(str(path), "RU", ()).callers[ACME].name == "Acme"


def test_a_csv_not_in_utf8_is_unreadable(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("number,name\n89161234567,Акме\n".encode("cp1251"))
    with pytest.raises(directory.DirectoryError, match="not UTF-8"):
        read_csv(str(path), "RU", ())


# ---- loading, refresh, the copy in state.dir


def test_warnings_are_given_once_per_version_of_the_file(tmp_path, callers_csv, caplog):
    config = csv_config(callers_csv, refresh=Seconds(0))  # read on every run
    with caplog.at_level(logging.WARNING, logger="poller"):
        lookup(config, tmp_path, [ACME], NOW)
    assert "line 6: 'anonymous' is not a phone number" in caplog.text
    assert "line 7: +79161234567 already listed at line 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="poller"):
        lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=1))
    assert caplog.text == ""
    callers_csv.write_text(CSV_TEXT + "12,Short,9,\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="poller"):
        lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=2))
    assert "line 8: '12' is not a phone number" in caplog.text


def test_the_directory_is_read_at_most_once_per_refresh(tmp_path, callers_csv):
    config = csv_config(callers_csv)
    assert lookup(config, tmp_path, [ACME], NOW).find(ACME).name == "ООО «Акме»"
    callers_csv.write_text("number,name,inn\n89161234567,Renamed,\n", encoding="utf-8")
    later = lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=9))
    assert later.find(ACME).name == "ООО «Акме»" and later.loaded_at == NOW
    refreshed = lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=10))
    assert refreshed.find(ACME).name == "Renamed"
    assert refreshed.loaded_at == NOW + dt.timedelta(minutes=10)


def test_a_reread_normalises_only_numbers_it_has_not_seen(tmp_path, callers_csv, monkeypatch):
    config = csv_config(callers_csv, refresh=Seconds(0))
    lookup(config, tmp_path, [ACME], NOW)
    callers_csv.write_text(CSV_TEXT + "84957654321,New,6,\n", encoding="utf-8")
    seen = []

    def counting(raw, region):
        seen.append(raw)
        return normalise(raw, region)

    monkeypatch.setattr(directory_read, "normalise", counting)
    found = lookup(config, tmp_path, ["+74957654321"], NOW + dt.timedelta(minutes=1))
    assert found.find("+74957654321").name == "New"
    # the new row, and the rows that did not give a caller last time
    assert seen == ["anonymous", "89161234567", "84957654321"]


def test_the_copy_is_kept_private_and_written_whole(tmp_path, callers_csv):
    lookup(csv_config(callers_csv), tmp_path, [ACME], NOW)
    copy = tmp_path / directory.CACHE_NAME
    assert copy.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    data = json.loads(copy.read_text(encoding="utf-8"))
    assert data["loaded_at"] == NOW.isoformat() and len(data["subscribers"]) == 3


def test_no_numbers_reads_nothing(tmp_path):
    missing = csv_config(tmp_path / "absent.csv")
    assert lookup(missing, tmp_path, [], NOW).loaded_at is None
    assert lookup(CallersConfig(), tmp_path, [ACME], NOW).matches == {}  # no [callers]


def test_unreadable_at_first_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="callers.csv .*absent.csv: cannot read"):
        lookup(csv_config(tmp_path / "absent.csv"), tmp_path, [ACME], NOW)
    assert ConfigError("x").exit_code == 2


def test_unreadable_later_uses_the_last_good_copy_and_tries_again_a_refresh_later(
        tmp_path, callers_csv, caplog):
    config = csv_config(callers_csv)
    lookup(config, tmp_path, [ACME], NOW)
    callers_csv.unlink()
    with caplog.at_level(logging.WARNING, logger="poller"):
        found = lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=11))
    assert found.stale and found.find(ACME).name == "ООО «Акме»" and found.loaded_at == NOW
    assert "cannot read the directory" in caplog.text and "next try in 10m" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="poller"):
        again = lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=12))
    assert again.stale and caplog.text == ""  # not retried (nor warned) every minute
    callers_csv.write_text("number,name,inn\n89161234567,Back,\n", encoding="utf-8")
    back = lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=21))
    assert not back.stale and back.find(ACME).name == "Back"


def test_a_changed_setting_is_never_served_the_old_copy(tmp_path, callers_csv):
    lookup(csv_config(callers_csv), tmp_path, [ACME], NOW)
    with pytest.raises(ConfigError):
        lookup(csv_config(tmp_path / "other.csv"), tmp_path, [ACME], NOW)
    found = lookup(csv_config(callers_csv, fields=()), tmp_path, [ACME], NOW)
    assert found.find(ACME).extra is None


def test_a_damaged_copy_is_read_again(tmp_path, callers_csv, caplog):
    (tmp_path / directory.CACHE_NAME).write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="poller"):
        assert lookup(csv_config(callers_csv), tmp_path, [ACME], NOW).find(ACME)
    assert "damaged directory copy" in caplog.text


# ---- SQL directories: SQLite and a CRM database on MariaDB


def fill_contacts(engine: sa.engine.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, phone VARCHAR(40), "
            "phone_e164 VARCHAR(20), company VARCHAR(200), inn VARCHAR(12))"))
        conn.execute(sa.text("INSERT INTO contacts VALUES (:id, :phone, :e164, :company, :inn)"),
                     [{"id": i, "phone": p, "e164": normalise(p, "RU"), "company": c, "inn": n}
                      for i, p, c, n in CONTACTS])


@pytest.fixture
def sqlite_crm(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    fill_contacts(engine)
    engine.dispose()
    return url


@pytest.fixture
def mariadb_crm(empty_db) -> str:
    """A CRM of its own on the MariaDB server: a throw-away database with a contacts table."""
    fill_contacts(empty_db.engine)
    return empty_db.url


def crm(request: pytest.FixtureRequest, kind: str) -> str:
    return request.getfixturevalue({"sqlite": "sqlite_crm", "mariadb": "mariadb_crm"}[kind])


# the CRM fixture is chosen at run time, so conftest cannot see it: the mark is set here
KINDS = ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_crm_query_is_loaded_whole(request, tmp_path, caplog, kind):
    config = sql_config(crm(request, kind))
    with caplog.at_level(logging.WARNING, logger="poller"):
        found = lookup(config, tmp_path, [ACME, ROGA, "+49301234567", "+79990000000"], NOW)
    assert found.find(ACME) == Caller(ACME, "ООО «Акме»", "1", {"inn": "7701000001"})
    assert found.find(ROGA).name == "Рога и копыта"  # non-ASCII through utf8mb4
    assert found.find("+49301234567").extra == {"inn": None}  # NULL stays null
    assert found.find("+79990000000") is None
    assert "row 4: 'anonymous' is not a phone number" in caplog.text
    assert "row 5: +79161234567 already listed at row 1" in caplog.text
    assert len(verify(config).callers) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_a_query_with_numbers_runs_once_per_run_for_the_runs_numbers(request, tmp_path, kind):
    url = crm(request, kind)
    config = sql_config(url, PER_RUN)
    assert directory.wants_numbers(config)
    found = lookup(config, tmp_path, [ACME, "+79990000000", ACME], NOW)
    assert dict(found.matches) == {ACME: Caller(ACME, "ООО «Акме»", "1",
                                                    {"inn": "7701000001"})}
    # every run asks again: a contact renamed in the CRM shows at the next run
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE contacts SET company = 'Acme' WHERE id = 1"))
    engine.dispose()
    assert lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=1)).find(ACME).name \
        == "Acme"
    assert not verify(config).callers  # run with no numbers: checks the URL and the SQL


@pytest.mark.parametrize("kind", KINDS)
def test_a_per_run_query_failing_later_uses_earlier_answers(request, tmp_path, caplog, kind):
    url = crm(request, kind)
    broken = sql_config(url, PER_RUN.replace("contacts", "no_such_table"))
    with pytest.raises(ConfigError, match="cannot read the directory"):
        lookup(broken, tmp_path, [ACME], NOW)
    config = sql_config(url, PER_RUN)
    lookup(config, tmp_path, [ACME, ROGA], NOW)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE contacts RENAME TO contacts_old"))
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="poller"):
        found = lookup(config, tmp_path, [ACME, "+79990000000"], NOW + dt.timedelta(minutes=1))
    assert found.stale and dict(found.matches) == {ACME: found.find(ACME)}
    assert "using the answers of earlier runs" in caplog.text


def test_a_refused_login_is_a_config_error_without_the_password(tmp_path, mariadb_crm):
    password = "Wr0ngCrmPw"
    url = mariadb_crm.replace("root@", f"nobody_{secrets.token_hex(2)}:{password}@")
    with pytest.raises(ConfigError) as caught:
        lookup(sql_config(url), tmp_path, [ACME], NOW)
    assert "callers.url" in str(caught.value) and "***" in str(caught.value)
    assert password not in str(caught.value)


def test_an_unreachable_database_later_is_a_warning_without_the_password(
        tmp_path, sqlite_crm, caplog):
    config = sql_config(sqlite_crm, refresh=Seconds(60))
    lookup(config, tmp_path, [ACME], NOW)
    Path(sqlite_crm.removeprefix("sqlite:///")).unlink()
    sqlite3.connect(sqlite_crm.removeprefix("sqlite:///")).close()  # an empty database
    with caplog.at_level(logging.WARNING, logger="poller"):
        found = lookup(config, tmp_path, [ACME], NOW + dt.timedelta(minutes=2))
    assert found.stale and found.find(ACME).name == "ООО «Акме»"
    assert "no such table: contacts" in caplog.text


@needs_root
def test_a_copy_the_user_may_not_read_is_said_to_be_so_not_damaged(site, callers_csv, caplog):
    """A callers.json a root run left root's (0600) was reported as `ignoring a damaged
    directory copy ([Errno 13] Permission denied)`: it is not damaged, and the fix differs."""
    state = site / "state"
    state.mkdir()
    lookup(csv_config(callers_csv), state, [ACME], NOW)  # as root: the copy is root's
    give_to_nobody(state)
    os.chown(state / directory.CACHE_NAME, 0, 0)
    shutil.copy(callers_csv, site / "callers.csv")
    (site / "callers.csv").chmod(0o644)
    config = csv_config(site / "callers.csv", refresh=Seconds(0))

    def read_as_the_service_user() -> str:
        import io

        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        logging.getLogger("poller").addHandler(handler)
        try:
            found = lookup(config, state, [ACME], NOW + dt.timedelta(minutes=1))
        finally:
            logging.getLogger("poller").removeHandler(handler)
        assert found.find(ACME) is not None
        return stream.getvalue()

    said = as_nobody(read_as_the_service_user)
    assert "permission denied" in said.lower() and "damaged" not in said, said
    assert "user nobody" in said, said


# ---- a CSV that would lose rows silently, or forge check's table


def test_an_unclosed_quote_that_swallows_lines_is_warned_about_naming_its_line(tmp_path):
    """One unclosed `"` read the rest of the file into one caller's name; check said
    `1 subscribers` without a word. The rows read now disagree with the lines: warned, with
    the line the runaway value starts on."""
    path = tmp_path / "c.csv"
    path.write_text('number,name,id,manager\n'
                    '89161234567,"Romashka,17,x\n'
                    '+74955550102,Vega,18,y\n'
                    '+74955550103,Lyra,19,z\n', encoding="utf-8")
    parsed = read_csv(str(path), "RU", ())
    assert len(parsed.callers) == 1
    (problem,) = [p for p in parsed.problems if "quote" in p]
    assert "line 2" in problem and "lines 2-4" in problem, problem


def test_a_quoted_value_on_several_lines_is_warned_about_too(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('number,name\n89161234567,"Two\nlines"\n+74955550102,Vega\n',
                    encoding="utf-8")
    parsed = read_csv(str(path), "RU", ())
    assert len(parsed.callers) == 2
    assert any("line 2" in p and "lines 2-3" in p for p in parsed.problems), parsed.problems


def test_a_csv_without_such_values_has_no_warning(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('number,name\n"89161234567","Acme, Ltd"\n+74955550102,Vega\n',
                    encoding="utf-8")
    assert read_csv(str(path), "RU", ()).problems == ()


def test_a_csv_in_cp1251_is_unreadable_naming_the_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(("number,name\n89161234567,Acme\n" + "84955550102,Вега\n" * 3)
                     .encode("cp1251"))
    with pytest.raises(directory.DirectoryError, match=r"line 3 is not UTF-8"):
        read_csv(str(path), "RU", ())


def test_checks_table_never_prints_a_control_character_raw(tmp_path):
    """A newline in a header (or a value) was printed raw in check's table: a forged
    `FAIL` line of the attacker's choosing."""
    directory_file = tmp_path / "c.csv"
    directory_file.write_text('"num\nFAIL  forged          everything is broken",name\n'
                              '89161234567,Acme\n', encoding="utf-8")
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'cdr.db'}",
                        callers={"csv": str(directory_file), "country": "RU"})
    result = run_cli("--config", str(path), "check")
    assert not any(line.startswith("FAIL  forged") for line in result.output.splitlines()), \
        result.output
    assert "num\\nfail  forged" in result.output, result.output


def test_check_shows_a_directory_problem_as_a_warning(tmp_path):
    directory_file = tmp_path / "c.csv"
    directory_file.write_text('number,name\n89161234567,"Romashka\n+74955550102,Vega\n',
                              encoding="utf-8")
    config = from_mapping(config_data(tmp_path, f"sqlite:///{tmp_path / 'cdr.db'}",
                                      callers={"csv": str(directory_file), "country": "RU"}),
                          env={})
    results = [r for r in run_checks(config) if r.name.startswith("callers")]
    assert any(r.outcome == WARN and "line 2" in r.detail for r in results), results


# ---- a directory that cannot be read after a first good load: calls go on without it


def _directory_site(tmp_path: Path, sample_rows: list, refresh: str = "10m"
                    ) -> tuple[Path, Callable[[int], list[dict]]]:
    """A site with a CSV directory knowing the sample caller, and a way to add calls."""
    from support import DIRECT_ANSWERED, clone_call, legs_of

    callers_csv = tmp_path / "callers.csv"
    callers_csv.write_text("number,name,id\n+79161002301,Sokolov Ivan,7\n", encoding="utf-8")
    cdr = cdr_table(tmp_path, [])
    path = write_config(tmp_path, cdr, callers={"csv": str(callers_csv), "country": "RU",
                                                "refresh": refresh})
    (tmp_path / "monitor").mkdir()

    def add_call(minute: int) -> list[dict]:
        rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED),
                          dt.datetime(2026, 11, 26, 10, minute))
        engine = sa.create_engine(cdr)
        with engine.begin() as conn:
            conn.execute(sa.Table("cdr", sa.MetaData(), autoload_with=conn).insert(), rows)
        engine.dispose()
        return rows

    return path, add_call


RUN_AT = dt.datetime(2026, 11, 26, 12, 0, tzinfo=ZoneInfo("Europe/Moscow"))


@pytest.mark.parametrize("copy", ["damaged", "invalidated by an edit of [callers]"])
def test_a_directory_unreadable_after_a_good_load_lets_calls_through_without_it(
        tmp_path, sample_rows, caplog, copy):
    """The CSV gone and the copy in state.dir damaged (or made for other settings): every
    run was `rc=2 ERROR callers.csv …: cannot read the directory` and the new call was not
    even read. Now the calls are delivered without caller fields, the outage is warned about
    once, and each run that needed the directory exits 1 (never 2)."""
    path, add_call = _directory_site(tmp_path, sample_rows)
    config = load(path, env={})
    first = add_call(0)
    assert run_once(config, RunOptions(now=RUN_AT)).exit_code == ExitCode.OK
    assert archived(tmp_path)[key_of(first)]["caller_name"] == "Sokolov Ivan"

    (tmp_path / "callers.csv").unlink()
    if copy == "damaged":
        (tmp_path / "state" / directory.CACHE_NAME).write_text("{not json", encoding="utf-8")
    else:
        edited = write_config(tmp_path, config.source.url, callers={
            "csv": str(tmp_path / "callers.csv"), "country": "RU", "fields": ["manager"]})
        config = load(edited, env={})
    second = add_call(20)
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=RUN_AT + dt.timedelta(minutes=30)))
    assert report.exit_code == ExitCode.PARTIAL, report.summary()
    assert report.delivered_count == 1 and report.failures == 0, report.summary()
    record = archived(tmp_path)[key_of(second)]
    assert record["caller_name"] is None and record["number_e164"] == "+79161002301"
    assert any("cannot read the directory" in said for said in report.unavailable), report
    warned = [r for r in caplog.records if "cannot read the directory" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING

    caplog.clear()
    third = add_call(40)
    with caplog.at_level(logging.WARNING, logger="poller"):
        report = run_once(config, RunOptions(now=RUN_AT + dt.timedelta(minutes=50)))
    assert report.exit_code == ExitCode.PARTIAL and report.delivered_count == 1
    assert archived(tmp_path)[key_of(third)]["caller_name"] is None
    assert "cannot read the directory" not in caplog.text  # once per outage

    (tmp_path / "callers.csv").write_text("number,name,id,manager\n+79161002301,Sokolov Ivan,7,"
                                          "Petrova\n", encoding="utf-8")
    fourth = add_call(59)
    with caplog.at_level(logging.INFO, logger="poller"):
        report = run_once(config, RunOptions(now=RUN_AT + dt.timedelta(minutes=70)))
    assert report.exit_code == ExitCode.OK, report.summary()
    assert archived(tmp_path)[key_of(fourth)]["caller_name"] == "Sokolov Ivan"
    assert "reads again" in caplog.text


def test_a_directory_unreadable_at_the_first_run_is_still_a_config_error(tmp_path, sample_rows):
    path, add_call = _directory_site(tmp_path, sample_rows)
    (tmp_path / "callers.csv").unlink()
    add_call(0)
    with pytest.raises(ConfigError, match="cannot read the directory"):
        run_once(load(path, env={}), RunOptions(now=RUN_AT))


# ---- a directory too big to read whole


def test_a_csv_of_more_rows_than_a_run_reads_whole_is_refused_naming_numbers(
        tmp_path, callers_csv, monkeypatch):
    """A million-row CSV took minutes and a gigabyte at every refresh. Past the limit the file
    is refused before anything is parsed, and the message names the lookup that scales."""
    monkeypatch.setattr(directory_read, "MAX_CSV_ROWS", 5)
    with pytest.raises(ConfigError, match=r"more than 5 rows.*:numbers") as refused:
        lookup(csv_config(callers_csv), tmp_path, [ACME], NOW)
    assert "callers.query" in str(refused.value)
    with pytest.raises(ConfigError, match=":numbers"):
        verify(csv_config(callers_csv))
    monkeypatch.setattr(directory_read, "MAX_CSV_ROWS", 6)  # the header and six lines: read
    assert lookup(csv_config(callers_csv), tmp_path, [ACME], NOW).find(ACME) is not None
