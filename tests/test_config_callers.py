"""`[callers]` and `[incidents]`: defaults change nothing, every problem names its key, the
directory's URL is a secret like source.url."""

from __future__ import annotations

import logging

import pytest

from poller.config.load import from_mapping
from poller.config.load import load as load_config
from poller.config.schema import CALLER_FIELDS, Secret
from poller.databases import query_parameters
from poller.errors import ConfigError
from poller.model import RECORD_FIELDS

SOURCE = {"url": "mysql+pymysql://poller:pw@127.0.0.1/asteriskcdrdb"}
CRM_PASSWORD = "CrmS3cret"
CRM_URL = f"mysql+pymysql://crm:{CRM_PASSWORD}@crm-db/crm"
QUERY = "SELECT phone AS number, company AS name, id FROM contacts"


def load(**sections):
    return from_mapping({"source": SOURCE, **sections}, env={})


def problems_of(env=None, **sections) -> str:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"source": SOURCE, **sections}, env=env or {})
    return str(caught.value)


def test_without_the_sections_there_is_no_directory_and_no_incident():
    loaded = load()
    assert not loaded.callers.enabled and not loaded.incidents.enabled
    assert loaded.incidents.fold == 1800 and loaded.callers.refresh == 600
    assert loaded.incidents.hours == "" and loaded.incidents.callers == "known"


def test_the_design_example_loads():
    loaded = load(
        callers={"country": "RU", "csv": "/etc/poller/callers.csv", "refresh": "10m",
                 "fields": ["inn"]},
        incidents={"statuses": ["unanswered", "busy"], "callers": "known",
                   "hours": "Mon-Fri 09:00-18:00", "fold": "30m", "objectdef": "incident",
                   "objectdef_version": 0,
                   "attributes": {"incident_title": "Missed call from {caller_name} {number}",
                                  "incident_call": "{key}", "inn": "{caller_inn}"}})
    assert loaded.callers.enabled and loaded.incidents.enabled
    assert loaded.callers.fields == ("inn",)
    assert loaded.incidents.statuses == ("unanswered", "busy")
    assert loaded.incidents.attributes["inn"] == "{caller_inn}"


@pytest.mark.parametrize(("sections", "named"), [
    ({"callers": {"colour": "red"}}, "unknown key 'callers.colour'"),
    ({"incidents": {"status": ["busy"]}}, "unknown key 'incidents.status'"),
    ({"callers": {"refresh": 600}}, "callers.refresh must be a duration"),
    ({"callers": {"fields": "inn"}}, "callers.fields must be a list"),
    ({"callers": {"csv": "/x.csv"}}, "callers.country is required"),
    ({"callers": {"country": "Russia", "csv": "/x.csv"}}, "callers.country: not a region"),
    ({"callers": {"country": "RU", "csv": "/x.csv", "url": CRM_URL, "query": QUERY}},
     "callers.csv and callers.url exclude each other"),
    ({"callers": {"country": "RU", "url": CRM_URL}}, "callers.url needs callers.query"),
    ({"callers": {"country": "RU", "csv": "/x.csv", "query": QUERY}},
     "callers.query needs callers.url"),
    ({"callers": {"country": "RU", "url": CRM_URL, "query": QUERY + " WHERE x = :city"}},
     "callers.query: unknown parameter :city"),
    ({"callers": {"country": "RU", "url": "not a url", "query": QUERY}},
     "callers.url: not a database URL"),
    ({"callers": {"country": "RU", "csv": "/x.csv", "fields": ["name"]}}, "callers.fields"),
    ({"callers": {"country": "RU", "csv": "/x.csv", "fields": ["a b"]}},
     "callers.fields: not a column name"),
    ({"callers": {"country": "RU", "csv": "/x.csv", "fields": ["inn", "INN"]}},
     "callers.fields: a column is listed twice"),
    ({"incidents": {"statuses": ["missed"], "callers": "any"}},
     "incidents.statuses: 'missed' is not a status"),
    ({"incidents": {"statuses": ["busy"], "callers": "all"}}, "incidents.callers must be"),
    ({"incidents": {"statuses": ["busy"]}}, "incidents.callers = \"known\" needs a directory"),
    ({"incidents": {"hours": "Mon-Fri 9-18"}}, "incidents.hours: cannot read"),
    ({"incidents": {"hours": "Mon-Fri 09:00-25:00"}}, "incidents.hours: not a time of day"),
    ({"incidents": {"fold": "soon"}}, "incidents.fold: not a duration"),
    ({"incidents": {"objectdef_version": -1}}, "incidents.objectdef_version"),
    ({"incidents": {"statuses": ["busy"], "callers": "any", "objectdef": ""}},
     "incidents.objectdef must not be empty"),
    ({"incidents": {"attributes": {"t": "{caller_inn}"}}},
     "incidents.attributes.t: unknown field {caller_inn}"),
    ({"incidents": {"attributes": {"t": "{key.__class__}"}}},
     "incidents.attributes.t: {key.__class__}: only plain field names"),
    ({"incidents": {"attributes": {"t": 5}}}, "incidents.attributes.t must be a string"),
])
def test_problems_name_their_key(sections, named):
    assert named in problems_of(**sections)


def test_every_call_field_is_a_template_field():
    fields = {"key": "x", "number": "y"}
    attributes = {name: f"{{{name}}}" for name in (*RECORD_FIELDS, *CALLER_FIELDS)}
    loaded = load(incidents={"attributes": attributes | fields})
    assert set(loaded.incidents.attributes) >= set(CALLER_FIELDS)


def test_query_parameters_ignore_casts_and_times():
    query = "SELECT a::text, '10:30' FROM t WHERE n IN :numbers AND x = :x"
    assert query_parameters(query) == {"numbers", "x"}


def test_the_directory_url_is_a_secret_from_file_or_environment():
    loaded = load(callers={"country": "RU", "url": CRM_URL, "query": QUERY})
    assert isinstance(loaded.callers.url, Secret)
    assert CRM_PASSWORD not in repr(loaded)
    from_env = from_mapping(
        {"source": SOURCE, "callers": {"country": "RU", "query": QUERY}},
        env={"POLLER_CALLERS_URL": CRM_URL})
    assert from_env.callers.url == CRM_URL


def test_a_password_never_shows_in_problems():
    text = problems_of(callers={"country": "RU", "url": CRM_URL})
    assert "callers.url needs callers.query" in text and CRM_PASSWORD not in text
    text = problems_of(callers={"country": "RU", "url": "nonsense:" + CRM_PASSWORD + "@x",
                                "query": QUERY})
    assert CRM_PASSWORD not in text
    assert "value not shown" in problems_of(callers={"url": 12345678})


def test_a_world_readable_file_with_the_directory_password_is_warned_about(tmp_path, caplog):
    path = tmp_path / "poller.toml"
    path.write_text(f'[source]\nurl = "sqlite:///cdr.db"\n\n[callers]\ncountry = "RU"\n'
                    f'url = "{CRM_URL}"\nquery = "{QUERY}"\n')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="poller"):
        load_config(path, env={})
    assert "readable by every user" in caplog.text
    assert CRM_PASSWORD not in caplog.text
