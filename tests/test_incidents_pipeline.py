"""Callers and incidents through whole runs: a MariaDB cdr table (for some tests a SQLite one
first), a directory (CSV, or a CRM query on a second MariaDB database), the archive and the
loopback easla server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from easla_server import EaslaServer
from support import (
    BERLIN,
    DIRECT_ANSWERED,
    IVR_NOBODY,
    QUEUE_ABANDON,
    archive_files,
    archived,
    clone_call,
    entry_of,
    insert_rows,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
    open_ledger,
    run_cli,
    write_config,
)

from poller.errors import ConfigError, ExitCode
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

NOW = msk("2026-11-26 12:00")  # a Thursday
CUSTOMER = "+79161234567"
WRITTEN = ["89161234567", "+79161234567", "79161234567", "9161234567", "810 7 916 123 45 67"]
INCIDENT_DEFS = {(7, "incoming_call"): 42, (7, "incident"): 43}


def directory_csv(tmp_path: Path) -> Path:
    path = tmp_path / "callers.csv"
    path.write_text("number,name,id,inn\n"
                    "8 (916) 123-45-67,ООО «Ромашка»,17,7701234567\n"
                    "+7 495 555-01-02,Vega Ltd,18,\n", encoding="utf-8")
    return path


def callers_section(tmp_path: Path) -> dict[str, Any]:
    return {"country": "RU", "csv": str(directory_csv(tmp_path)), "fields": ["inn"]}


def call_from(sample_rows: list[dict[str, Any]], uniqueid: str, when: str, number: str,
              zone: Any = None, **options: Any) -> list[dict[str, Any]]:
    """A real sample call moved to `when` (local), from `number` as the trunk wrote it."""
    extra = {"zone": zone} if zone is not None else {}
    return clone_call(legs_of(sample_rows, uniqueid), local(when), src=number, cnum=number,
                      clid=f'"" <{number}>', **extra, **options)


def incidents_of(server: EaslaServer) -> dict[int, dict[str, Any]]:
    return {oid: obj for oid, obj in server.objects.items() if obj["objectdef"] == 43}


def calls_of(server: EaslaServer) -> dict[str, int]:
    """Call key → object id (the latest, were there two)."""
    return {obj["attributes"]["incoming_call_key"][0]: oid
            for oid, obj in sorted(server.objects.items()) if obj["objectdef"] == 42}


def easla_section_attributes() -> dict[str, str]:
    """Call field → easla attribute: the caller fields and the incident mapped too."""
    return {"key": "incoming_call_key", "number": "incoming_call_number", "status": "status",
            "caller_name": "incoming_call_customer", "caller_inn": "incoming_call_inn",
            "incident": "incoming_call_incident"}


def easla_section(server: EaslaServer) -> dict[str, Any]:
    return {"kind": "easla", "easla": {
        "url": server.url, "login": "poller", "password": "secret", "timeout": "3s",
        "attributes": easla_section_attributes()}}


INCIDENTS = {"statuses": ["unanswered", "busy"], "callers": "known",
             "hours": "Mon-Fri 09:00-18:00", "fold": "30m",
             "attributes": {"incident_title": "Missed call from {caller_name} {number_e164}",
                            "incident_call": "{key}", "incident_inn": "{caller_inn}"}}


# -- who called


def test_numbers_in_every_form_match_the_caller(tmp_path, cdr_db, sample_rows):
    """Every way a trunk writes the customer's number finds the same caller; an unknown,
    an anonymous and an unparsable caller keep their raw number and null caller fields."""
    known = [call_from(sample_rows, DIRECT_ANSWERED, f"2026-11-26 10:{10 * i:02d}", number)
             for i, number in enumerate(WRITTEN)]
    others = {number: call_from(sample_rows, DIRECT_ANSWERED, f"2026-11-26 11:{10 * i:02d}",
                                number)
              for i, number in enumerate(["+79990001122", "anonymous", "", "12-AB-34"])}
    cdr_db.insert([row for rows in [*known, *others.values()] for row in rows])
    config = make_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path))
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK, report.summary()
    assert (report.callers_matched, report.callers_unmatched) == (5, 4)
    assert "callers 5 matched, 4 unmatched" in report.summary()
    records = archived(tmp_path)
    for rows, written in zip(known, WRITTEN, strict=True):
        record = records[key_of(rows)]
        assert record["number"] == written
        assert (record["number_e164"], record["caller_name"], record["caller_id"],
                record["caller_inn"]) == (CUSTOMER, "ООО «Ромашка»", "17", "7701234567")
        assert record["incident"] is None  # no [incidents]
    unknown = records[key_of(others["+79990001122"])]
    assert unknown["number_e164"] == "+79990001122" and unknown["caller_name"] is None
    for raw in ("anonymous", "", "12-AB-34"):
        record = records[key_of(others[raw])]
        assert record["number"] == raw and record["number_e164"] is None
        assert record["caller_id"] is record["caller_name"] is record["caller_inn"] is None
    status = run_cli("--config", str(write_config(tmp_path, cdr_db.url,
                                                  callers=callers_section(tmp_path))), "status")
    assert "callers:     5 matched, 4 unmatched in the last run" in status.output, status.output


def test_a_crm_query_with_numbers_on_a_second_database(tmp_path, cdr_db, empty_db,
                                                      sample_rows):
    """A CRM too large to load: its query runs with the run's numbers bound to :numbers."""
    empty_db.execute("CREATE TABLE contacts (id INT PRIMARY KEY, phone VARCHAR(32), "
                     "phone_e164 VARCHAR(32), company VARCHAR(64)) CHARACTER SET utf8mb4")
    empty_db.execute("INSERT INTO contacts VALUES (5, '8 916 123-45-67', '+79161234567', "
                     "'ООО «Ромашка»'), (6, '+7 495 555-01-02', '+74955550102', 'Vega')")
    calls = [call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567"),
             call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:50", "+79990001122")]
    cdr_db.insert([row for rows in calls for row in rows])
    callers = {"country": "RU", "url": empty_db.url + "?charset=utf8mb4",
               "query": "SELECT phone AS number, company AS name, id FROM contacts "
                        "WHERE phone_e164 IN :numbers"}
    config = make_config(tmp_path, cdr_db.url, callers=callers,
                         incidents=INCIDENTS | {"attributes": {"t": "{caller_name}"}},
                         target={"archive": {"dir": str(tmp_path / "archive")}})
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK, report.summary()
    records = archived(tmp_path)
    first, second = (records[key_of(rows)] for rows in calls)
    assert (first["caller_name"], first["caller_id"], first["incident"]) == \
        ("ООО «Ромашка»", "5", key_of(calls[0]))
    assert (second["caller_name"], second["incident"]) == (None, None)
    (path,) = archive_files(tmp_path, ".incident.json")
    incident = json.loads(path.read_text())
    assert incident == {"incident": key_of(calls[0]), "attributes": {"t": "ООО «Ромашка»"},
                        "joined": []}


# -- incidents in easla


def test_incidents_exactly_for_the_selected_calls_with_parent(tmp_path, cdr_url, sample_rows):
    """Missed calls of a known customer in working hours open an incident under the call's
    object; answered, unknown, anonymous and after-hours calls do not; a call back within the
    fold joins the open incident instead of opening another."""
    opens = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    joins = call_from(sample_rows, QUEUE_ABANDON, "2026-11-26 10:20", "+79161234567")
    answered = call_from(sample_rows, DIRECT_ANSWERED, "2026-11-26 10:05", "89161234567")
    unknown = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:06", "+79990001122")
    anonymous = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:07", "anonymous")
    after_hours = call_from(sample_rows, IVR_NOBODY, "2026-11-26 08:10", "+74955550102")
    later = call_from(sample_rows, IVR_NOBODY, "2026-11-26 11:00", "9161234567")  # fold over
    everything = [opens, joins, answered, unknown, anonymous, after_hours, later]
    insert_rows(cdr_url, [row for rows in everything for row in rows])
    with EaslaServer(objectdefs=INCIDENT_DEFS) as server:
        config = make_config(tmp_path, cdr_url, callers=callers_section(tmp_path),
                             incidents=INCIDENTS, target=easla_section(server),
                             source={"start": "2026-11-26 08:00"})
        report = run_once(config, RunOptions(now=NOW))
        assert report.exit_code == ExitCode.OK, report.summary()
        assert (report.incidents_opened, report.incidents_joined, report.incidents_created) \
            == (2, 1, 2)
        calls = calls_of(server)
        assert len(calls) == len(everything)
        made = incidents_of(server)
        assert sorted(obj["parent"] for obj in made.values()) == \
            sorted([calls[key_of(opens)], calls[key_of(later)]])
        by_parent = {obj["parent"]: obj["attributes"] for obj in made.values()}
        assert by_parent[calls[key_of(opens)]] == {
            "incident_title": [f"Missed call from ООО «Ромашка» {CUSTOMER}"],
            "incident_call": [key_of(opens)], "incident_inn": ["7701234567"]}
        incident_field = {key: server.objects[oid]["attributes"]["incoming_call_incident"][0]
                          for key, oid in calls.items()}
        assert incident_field[key_of(opens)] == incident_field[key_of(joins)] == key_of(opens)
        assert incident_field[key_of(later)] == key_of(later)
        for rows in (answered, unknown, anonymous, after_hours):
            assert incident_field[key_of(rows)] == ""
        assert server.objects[calls[key_of(joins)]]["attributes"]["incoming_call_customer"] \
            == ["ООО «Ромашка»"]
        again = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
        assert again.exit_code == ExitCode.OK and len(incidents_of(server)) == 2
        backfill = run_once(config, RunOptions(since=local("2026-11-26 00:00"),
                                               now=NOW + dt.timedelta(minutes=6)))
        assert backfill.exit_code == ExitCode.OK, backfill.summary()
        assert len(incidents_of(server)) == 2 and len(server.objects) == len(everything) + 2
    with open_ledger(config) as ledger:
        row = ledger.incident(key_of(opens))
        assert row is not None and (row["stage"], row["joined"]) == ("done", [key_of(joins)])
        assert row["object_id"] == str(min(made))


KILLED_BEFORE_INCIDENT = textwrap.dedent("""
    import datetime as dt
    import os
    import sys

    from poller.config.load import load
    from poller.run.pipeline import run_once
    from poller.run.options import RunOptions
    from poller.targets.easla.target import EaslaTarget


    def die(*args, **kwargs):
        os._exit(9)  # killed (OOM, reboot) after the call's object, before its incident


    EaslaTarget.create_incident = die
    run_once(load(sys.argv[1]), RunOptions(now=dt.datetime.fromisoformat(sys.argv[2])))
    sys.exit(0)
""")


def test_sigkill_between_the_call_and_its_incident(tmp_path, cdr_db, sample_rows):
    """The process dies after easla made the call's object and before the incident: the next
    run makes the incident once, under that object, and never the call again."""
    rows = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    cdr_db.insert(rows)
    with EaslaServer(objectdefs=INCIDENT_DEFS) as server:
        path = write_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                            incidents=INCIDENTS, target=easla_section(server))
        killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_INCIDENT, str(path),
                                 NOW.isoformat()], capture_output=True, text=True, timeout=120)
        assert killed.returncode == 9, killed.stderr
        assert len(calls_of(server)) == 1 and not incidents_of(server)
        config = make_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                             incidents=INCIDENTS, target=easla_section(server))
        for minutes in (1, 2):
            report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=minutes)))
            assert report.exit_code == ExitCode.OK, report.summary()
        assert len(calls_of(server)) == 1
        (incident,) = incidents_of(server).values()
        assert incident["parent"] == calls_of(server)[key_of(rows)]
    assert entry_of(config, key_of(rows)).stage == "done"


def test_lost_reply_of_the_call_makes_one_incident_under_the_kept_object(tmp_path, cdr_db,
                                                                        sample_rows):
    """easla made the call's object but its reply was lost: the call is made again (the one
    duplicate a lost reply can make, recognisable by its key); its incident is made once,
    under the object the ledger kept."""
    rows = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    cdr_db.insert(rows)
    with EaslaServer(objectdefs=INCIDENT_DEFS) as server:
        config = make_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                             incidents=INCIDENTS, target=easla_section(server),
                             retry={"backoff": "1s", "max_backoff": "1s"})
        server.fail_next("createObjectref", "lost_reply")
        first = run_once(config, RunOptions(now=NOW))
        assert first.exit_code == ExitCode.PARTIAL and not incidents_of(server)
        second = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=5)))
        assert second.exit_code == ExitCode.OK, second.summary()
        assert len(server.find_objects("incoming_call_key", key_of(rows))) == 2
        (incident,) = incidents_of(server).values()
        assert str(incident["parent"]) == entry_of(config, key_of(rows)).object_id


def test_a_failing_incident_is_charged_alone_and_retried(tmp_path, cdr_url, sample_rows):
    """An incident easla cannot take never touches its call: an unknown attribute stops the
    run (exit 2, nothing charged), a fault about a value charges the incident alone, and the
    next run makes it once."""
    rows = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    insert_rows(cdr_url, rows)
    with EaslaServer(objectdefs=INCIDENT_DEFS,
                     attributes=set(easla_section_attributes().values())) as server:
        config = make_config(tmp_path, cdr_url, callers=callers_section(tmp_path),
                             incidents=INCIDENTS, target=easla_section(server),
                             retry={"backoff": "1s", "max_backoff": "1s"})
        with pytest.raises(ConfigError, match="Unknown attribute incident_title"):
            run_once(config, RunOptions(now=NOW))
        assert entry_of(config, key_of(rows)).stage == "done" and not incidents_of(server)
        server.attributes = None
        server.fail_next("createObjectref", "fault", text="Value too long for incident_title")
        second = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
        assert second.exit_code == ExitCode.PARTIAL
        entry = entry_of(config, key_of(rows))
        assert (entry.stage, entry.attempts) == ("done", 0)
        with open_ledger(config) as ledger:
            row = ledger.incident(key_of(rows))
        assert row is not None and (row["stage"], row["attempts"]) == ("pending", 1)
        assert "Value too long" in row["last_error"]
        third = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=2)))
        assert third.exit_code == ExitCode.OK, third.summary()
        assert len(calls_of(server)) == 1 and len(incidents_of(server)) == 1


def test_a_lost_reply_of_the_incident_itself_is_a_recognisable_duplicate(tmp_path, cdr_db,
                                                                       sample_rows):
    """easla's operations hold no lookup, so an incident whose reply was lost is made again:
    the one way to a second incident, under the same call object, with the same opening key."""
    rows = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    cdr_db.insert(rows)
    with EaslaServer(objectdefs=INCIDENT_DEFS,
                     attributes=set(easla_section_attributes().values())) as server:
        config = make_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                             incidents=INCIDENTS, target=easla_section(server),
                             retry={"backoff": "1s", "max_backoff": "1s"})
        with pytest.raises(ConfigError):
            run_once(config, RunOptions(now=NOW))
        server.attributes = None
        server.fail_next("createObjectref", "lost_reply")
        lost = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
        assert lost.exit_code == ExitCode.PARTIAL and len(incidents_of(server)) == 1
        again = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=2)))
        assert again.exit_code == ExitCode.OK, again.summary()
        made = list(incidents_of(server).values())
    assert len(made) == 2
    assert {obj["parent"] for obj in made} == {int(entry_of(config, key_of(rows)).object_id)}
    assert {obj["attributes"]["incident_call"][0] for obj in made} == {key_of(rows)}


# -- the archive, the hours across midnight and a daylight-saving change


def test_hours_across_midnight_and_the_autumn_change_with_folding(tmp_path, cdr_db,
                                                                  sample_rows):
    """Berlin, the night of 24/25 October 2026, clocks back at 03:00: working hours
    "Sat 22:00-04:00" cover the repeated hour too; two calls of the repeated hour twenty real
    minutes apart (02:50 CEST, then 02:10 CET) fold, though the wall clock runs backwards."""
    def night(when: str, number: str, epoch: int | None = None) -> list[dict[str, Any]]:
        return clone_call(legs_of(sample_rows, IVR_NOBODY), local(when), zone=BERLIN,
                          epoch=epoch, src=number, cnum=number, clid=f'"" <{number}>')

    cest_0250 = int(dt.datetime(2026, 10, 25, 0, 50, tzinfo=dt.UTC).timestamp())
    cet_0210 = int(dt.datetime(2026, 10, 25, 1, 10, tzinfo=dt.UTC).timestamp())
    before = night("2026-10-24 21:50", "89161234567")  # Saturday, not yet
    late = night("2026-10-24 23:30", "89161234567")  # opens
    summer = night("2026-10-25 02:50", "+74955550102", cest_0250)  # opens (another customer)
    winter = night("2026-10-25 02:10", "+74955550102", cet_0210)  # 20 min later: joins
    over = night("2026-10-25 04:10", "89161234567")  # the hours ended
    calls = [before, late, summer, winter, over]
    cdr_db.insert([row for rows in calls for row in rows])
    config = make_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                         incidents=INCIDENTS | {"hours": "Sat 22:00-04:00"},
                         source={"timezone": "Europe/Berlin", "start": "2026-10-24 20:00"})
    report = run_once(config, RunOptions(now=dt.datetime(2026, 10, 25, 6, 0, tzinfo=dt.UTC)))
    assert report.exit_code == ExitCode.OK, report.summary()
    records = archived(tmp_path)
    assert [records[key_of(rows)]["incident"] for rows in calls] == \
        [None, key_of(late), key_of(summer), key_of(summer), None]
    files = {path.name: json.loads(path.read_text())
             for path in archive_files(tmp_path, ".incident.json")}
    assert set(files) == {f"{key_of(late)}.incident.json", f"{key_of(summer)}.incident.json"}
    assert files[f"{key_of(summer)}.incident.json"]["joined"] == [key_of(winter)]
    # the record's folder is the opening call's
    assert (archive_files(tmp_path, f"{key_of(summer)}.incident.json")[0].parent
            == archive_files(tmp_path, f"{key_of(summer)}.json")[0].parent)


def test_a_call_joining_later_rewrites_the_incident_file(tmp_path, cdr_url, sample_rows):
    """The customer calls again in the next run: the incident file lists the call that joined,
    rewritten whole; a backfill over the same hours changes nothing."""
    first = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    insert_rows(cdr_url, first)
    config = make_config(tmp_path, cdr_url, callers=callers_section(tmp_path),
                         incidents=INCIDENTS)
    assert run_once(config, RunOptions(now=NOW)).exit_code == ExitCode.OK
    (path,) = archive_files(tmp_path, ".incident.json")
    assert json.loads(path.read_text())["joined"] == []
    second = call_from(sample_rows, QUEUE_ABANDON, "2026-11-26 10:25", "+79161234567")
    insert_rows(cdr_url, second)
    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert (report.incidents_joined, report.incidents_created) == (1, 0), report.summary()
    assert json.loads(path.read_text())["joined"] == [key_of(second)]
    before = {p: p.read_bytes() for p in archive_files(tmp_path, ".json")}
    backfill = run_once(config, RunOptions(since=local("2026-11-26 00:00"),
                                           now=NOW + dt.timedelta(minutes=2)))
    assert backfill.exit_code == ExitCode.OK and backfill.incidents_opened == 0
    assert {p: p.read_bytes() for p in archive_files(tmp_path, ".json")} == before


def test_backfill_applies_the_rules_as_the_live_run_would(tmp_path, cdr_db, sample_rows):
    """History the ledger never saw (before its first run) is decided by a backfill exactly
    as one live run over all of it decides: same incidents, same joins, none twice."""
    times = ["09:10", "09:25", "09:50", "10:40", "11:05"]
    numbers = ["89161234567", "+79161234567", "+74955550102", "9161234567", "+74955550102"]
    calls = [call_from(sample_rows, IVR_NOBODY, f"2026-11-26 {when}", number)
             for when, number in zip(times, numbers, strict=True)]
    cdr_db.insert([row for rows in calls for row in rows])
    sections = {"callers": callers_section(tmp_path), "incidents": INCIDENTS}
    live = make_config(tmp_path / "live", cdr_db.url, **sections,
                       source={"start": "2026-11-26 09:00"})
    assert run_once(live, RunOptions(now=NOW)).exit_code == ExitCode.OK
    expected = {key: record["incident"] for key, record in archived(tmp_path / "live").items()}
    # 09:10 opens, 09:25 joins, 09:50 opens (another customer); 10:40 and 11:05 come after
    # their folds ended and open their own
    assert len(set(expected.values()) - {None}) == 4
    # a second install starting at 10:00 sees the last two calls live, then backfills the rest
    late = make_config(tmp_path / "late", cdr_db.url, **sections,
                       source={"start": "2026-11-26 10:00", "lookback": "10m"})
    assert run_once(late, RunOptions(now=NOW)).exit_code == ExitCode.OK
    for minutes in (1, 2):  # twice: the second decides nothing anew
        backfill = run_once(late, RunOptions(since=local("2026-11-26 09:00"),
                                             until=local("2026-11-26 10:00"),
                                             now=NOW + dt.timedelta(minutes=minutes)))
        assert backfill.exit_code == ExitCode.OK, backfill.summary()
    got = {key: record["incident"] for key, record in archived(tmp_path / "late").items()}
    assert got == expected
    assert len(archive_files(tmp_path / "late", ".incident.json")) == 4


def test_dry_run_with_a_directory_and_incidents_writes_nothing(tmp_path, cdr_db, sample_rows):
    cdr_db.insert(call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567"))
    path = write_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                        incidents=INCIDENTS)
    result = run_cli("--config", str(path), "run", "--dry-run")
    assert result.exit_code == ExitCode.OK, result.output
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())
    assert not (tmp_path / "archive").exists()


@pytest.mark.parametrize("ledger", ["sqlite", "mysql"])
def test_a_version_2_ledger_is_upgraded_and_makes_incidents(tmp_path, cdr_db, empty_db,
                                                           sample_rows, ledger):
    """A ledger of schema version 2 (SQLite, or MySQL made from the version-2 SQL) gains the
    incidents table at start; its calls stay as they were and new ones get incidents."""
    import sqlalchemy as sa

    old = call_from(sample_rows, DIRECT_ANSWERED, "2026-11-26 09:30", "89161234567")
    cdr_db.insert(old)
    state = {} if ledger == "sqlite" else {"url": empty_db.url + "?charset=utf8mb4"}
    plain = make_config(tmp_path, cdr_db.url, state=state)
    assert run_once(plain, RunOptions(now=NOW)).exit_code == ExitCode.OK
    engine = sa.create_engine(plain.state.database_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:  # back to what version 2 held
        conn.exec_driver_sql("DROP TABLE poller_incidents")
        conn.exec_driver_sql("UPDATE poller_meta SET value = '2' WHERE name = 'schema_version'")
    engine.dispose()
    new = call_from(sample_rows, IVR_NOBODY, "2026-11-26 11:00", "89161234567")
    cdr_db.insert(new)
    config = make_config(tmp_path, cdr_db.url, state=state, callers=callers_section(tmp_path),
                         incidents=INCIDENTS)
    report = run_once(config, RunOptions(now=NOW + dt.timedelta(minutes=1)))
    assert report.exit_code == ExitCode.OK, report.summary()
    with open_ledger(config) as opened:
        assert opened.get("schema_version") == "4"
        assert opened.counts() == {"done": 2}
        assert opened.incident(key_of(new))["stage"] == "done"
    assert archived(tmp_path)[key_of(old)]["caller_name"] is None  # recorded before: as it was
    assert archived(tmp_path)[key_of(new)]["incident"] == key_of(new)


def test_the_mysql_ledger_sql_matches_the_schema(tmp_path, cdr_db, empty_db, sample_rows):
    """sql/ledger-mysql.sql, run by a DBA, makes a ledger the poller uses as it is."""
    from support import ROOT

    lines = (ROOT / "sql" / "ledger-mysql.sql").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.startswith("--"))
    with empty_db.engine.begin() as conn:
        for statement in filter(str.strip, script.split(";")):
            conn.exec_driver_sql(statement)
    rows = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:00", "89161234567")
    cdr_db.insert(rows)
    config = make_config(tmp_path, cdr_db.url, state={"url": empty_db.url + "?charset=utf8mb4"},
                         callers=callers_section(tmp_path), incidents=INCIDENTS)
    report = run_once(config, RunOptions(now=NOW))
    assert report.exit_code == ExitCode.OK and report.incidents_created == 1, report.summary()


def test_check_reads_the_directory(tmp_path, cdr_db):
    """`poller check` reads the directory once and says how many known callers it holds; one it
    cannot read is a failed check."""
    path = write_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path))
    result = run_cli("--config", str(path), "check")
    assert f"callers.csv {tmp_path / 'callers.csv'}: 2 known callers" in result.output, \
        result.output
    (tmp_path / "callers.csv").unlink()
    result = run_cli("--config", str(path), "check")
    assert "cannot read the directory" in result.output and result.exit_code != 0
    assert not (tmp_path / "state" / "callers.json").exists()


def test_a_missed_call_outside_the_hours_says_why_it_opens_no_incident(tmp_path, cdr_db,
                                                                       sample_rows, caplog):
    """A missed call outside incidents.hours opened no incident and nothing said why, not
    even with -v; check did not show the rule at all. The run now says why at INFO (as it
    does for a caller not in the directory), and check shows the rule in words."""
    import logging

    evening = call_from(sample_rows, IVR_NOBODY, "2026-11-26 20:15:00", "89161234567")
    stranger = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:15:00", "+74951112233")
    cdr_db.insert(evening + stranger)
    sections = {"callers": callers_section(tmp_path),
                "incidents": INCIDENTS | {"hours": "Mon-Fri 09:00-18:00"},
                "source": {"start": "2026-11-26 09:00"}}
    config = make_config(tmp_path, cdr_db.url, **sections)
    with caplog.at_level(logging.INFO, logger="poller"):
        report = run_once(config, RunOptions(now=msk("2026-11-26 21:00")))
    assert report.exit_code == ExitCode.OK and report.incidents_opened == 0, report.summary()
    assert (f"call {key_of(evening)} from 89161234567 (unanswered): no incident: it came at "
            "Thu 20:15, outside incidents.hours (Mon-Fri 09:00-18:00, Europe/Moscow)"
            in caplog.text), caplog.text
    assert (f"call {key_of(stranger)} from +74951112233 (unanswered): no incident: the caller "
            "is not in the directory" in caplog.text), caplog.text

    result = run_cli("--config", str(write_config(tmp_path, cdr_db.url, **sections)), "check")
    rule = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["incidents"]]
    assert rule and rule[0].startswith("ok"), result.stdout
    assert "a call " in rule[0] and "unanswered" in rule[0] and "known caller" in rule[0]
    assert "within Mon-Fri 09:00-18:00 (Europe/Moscow)" in rule[0], rule[0]


def test_any_caller_without_a_country_says_why_a_national_number_opens_nothing(
        tmp_path, cdr_db, sample_rows, caplog):
    """Found in a walk-through: `callers = "any"` without a [callers] country read
    `89161234567` as no number at all, so no missed call ever opened an incident, and the run
    said the number was hidden. The run and check now name callers.country."""
    import logging

    missed = call_from(sample_rows, IVR_NOBODY, "2026-11-26 10:15:00", "89161234567")
    cdr_db.insert(missed)
    sections = {"incidents": INCIDENTS | {"callers": "any", "attributes": {
                    "incident_title": "Missed call from {number}"}},
                "source": {"start": "2026-11-26 09:00"}}
    config = make_config(tmp_path, cdr_db.url, **sections)
    with caplog.at_level(logging.INFO, logger="poller"):
        report = run_once(config, RunOptions(now=NOW))
    assert report.incidents_opened == 0, report.summary()
    assert "callers.country is not set" in caplog.text and "hidden" not in caplog.text
    result = run_cli("--config", str(write_config(tmp_path, cdr_db.url, **sections)), "check")
    rule = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["incidents"]]
    assert rule and rule[0].startswith("warn") and "callers.country" in rule[0], result.stdout


def test_a_backfill_says_why_no_incident_only_at_debug(tmp_path, cdr_db, sample_rows, caplog):
    """A line per missed call of a backfill's range would bury its own lines: there the
    reason is DEBUG (-v), a live run's INFO."""
    import logging

    evening = call_from(sample_rows, IVR_NOBODY, "2026-11-25 20:15:00", "89161234567")
    cdr_db.insert(evening)
    config = make_config(tmp_path, cdr_db.url, callers=callers_section(tmp_path),
                         incidents=INCIDENTS, source={"start": "2026-11-26 09:00"})
    with caplog.at_level(logging.DEBUG, logger="poller"):
        run_once(config, RunOptions(since=local("2026-11-25 00:00"),
                                    until=local("2026-11-26 00:00"), now=NOW))
    said = [r for r in caplog.records if "no incident" in r.getMessage()]
    assert said and all(r.levelno == logging.DEBUG for r in said), caplog.text
