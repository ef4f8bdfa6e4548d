"""The incident rule: working hours (across midnight, daylight saving), selection, folding,
attribute templates. Pure functions, plain data."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from support import BERLIN, MSK, local, msk

from poller.callers.incidents import (
    CallFacts,
    Decision,
    IncidentRule,
    OpenIncident,
    apply,
    decide,
    selects,
)
from poller.config.hours import Hours, parse_hours, within
from poller.templates import attribute_fields, check_attribute_templates, render_attributes

NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC


# 2026-11-23 is a Monday
@pytest.mark.parametrize(("moment", "expected"), [
    ("2026-11-23 09:00", True),  # Monday, start inclusive
    ("2026-11-23 08:59:59", False),
    ("2026-11-23 17:59:59", True),
    ("2026-11-23 18:00", False),  # end exclusive
    ("2026-11-27 12:00", True),  # Friday
    ("2026-11-28 10:00", True),  # Saturday's own range
    ("2026-11-28 14:00", False),
    ("2026-11-28 09:30", False),
    ("2026-11-29 12:00", False),  # Sunday
])
def test_weekly_hours(moment, expected):
    hours = parse_hours("Mon-Fri 09:00-18:00, Sat 10:00-14:00")
    assert within(hours, msk(moment), MSK) is expected


@pytest.mark.parametrize(("moment", "expected"), [
    ("2026-11-27 21:59", False),
    ("2026-11-27 22:00", True),  # Friday evening
    ("2026-11-27 23:59:59", True),
    ("2026-11-28 00:00", True),  # the small hours after Friday belong to Friday's range
    ("2026-11-28 01:59:59", True),
    ("2026-11-28 02:00", False),
    ("2026-11-28 22:30", False),  # Saturday evening: not a Saturday range
    ("2026-11-27 01:00", False),  # Friday's small hours follow Thursday, which has no range
])
def test_a_range_across_midnight_belongs_to_the_day_it_starts(moment, expected):
    hours = parse_hours("Fri 22:00-02:00")
    assert within(hours, msk(moment), MSK) is expected


def test_a_night_range_on_sunday_ends_on_monday_morning():
    hours = parse_hours("Sun 20:00-08:00")
    assert within(hours, msk("2026-11-22 21:00"), MSK)  # Sunday evening
    assert within(hours, msk("2026-11-23 07:59"), MSK)  # Monday morning
    assert not within(hours, msk("2026-11-24 07:00"), MSK)  # Tuesday morning
    assert not within(hours, msk("2026-11-22 07:00"), MSK)  # Sunday morning follows Saturday


@pytest.mark.parametrize(("text", "day", "second", "expected"), [
    ("Sat-Mon 10:00-12:00", 6, 11 * 3600, True),  # Sunday inside a range over the week end
    ("Sat-Mon 10:00-12:00", 1, 11 * 3600, False),
    ("08:00-20:00", 2, 9 * 3600, True),  # no day: every day
    ("mon 00:00-24:00", 0, 86399, True),
    ("Mon 00:00-24:00", 1, 0, False),
])
def test_day_ranges(text, day, second, expected):
    (only,) = parse_hours(text).ranges
    assert only.covers(day, second) is expected


def test_empty_hours_mean_always():
    assert parse_hours("").always and parse_hours("  ").always
    assert within(Hours(), msk("2026-11-29 03:00"), MSK)


@pytest.mark.parametrize("text", [
    "Mon-Fri", "Mon-Fri 9-18", "Mon-Fri 09:00-25:00", "Xyz 09:00-18:00", "Mon-Fri 09:00-09:00",
    "Mon 00:00-00:00", "Mon-Fri 09:60-18:00", "Mon-Fri 24:00-02:00", ",", "Mon,Tue 09:00-18:00",
])
def test_unreadable_hours_are_refused(text):
    with pytest.raises(ValueError):
        parse_hours(text)


# Berlin: summer time starts 2026-03-29 02:00 → 03:00 and ends 2026-10-25 03:00 → 02:00;
# New York: starts 2026-03-08 02:00 → 03:00 and ends 2026-11-01 02:00 → 01:00
@pytest.mark.parametrize(("zone", "utc", "expected"), [
    (BERLIN, "2026-03-29T07:59:59", False),  # 09:59:59 CEST: before 10:00
    (BERLIN, "2026-03-29T08:00:00", True),  # 10:00 CEST: the wall clock, not a fixed offset
    (BERLIN, "2026-03-29T00:30:00", True),  # 01:30 CET, in the night range before the jump
    (BERLIN, "2026-03-29T01:00:00", False),  # 03:00 CEST: the hour 02:00-03:00 never existed
    (BERLIN, "2026-10-25T00:30:00", True),  # 02:30 CEST, first pass of the repeated hour
    (BERLIN, "2026-10-25T01:30:00", True),  # 02:30 CET, second pass: same wall clock
    (BERLIN, "2026-10-25T02:00:00", False),  # 03:00 CET
    (NEW_YORK, "2026-11-01T05:30:00", True),  # 01:30 EDT
    (NEW_YORK, "2026-11-01T06:30:00", True),  # 01:30 EST, the repeated hour
    (NEW_YORK, "2026-11-01T07:30:00", False),  # 02:30 EST
    (NEW_YORK, "2026-03-08T06:59:00", True),  # 01:59 EST
    (NEW_YORK, "2026-03-08T07:00:00", False),  # 03:00 EDT
])
def test_daylight_saving_days_follow_the_wall_clock(zone, utc, expected):
    # a Sunday on every date above: a night range Sat 23:00 - Sun 03:00 (03:00 exclusive),
    # and a day range on Sunday from 10:00
    hours = parse_hours("Sat 23:00-03:00, Sun 10:00-18:00")
    if zone is NEW_YORK:
        hours = parse_hours("Sat 23:00-02:00, Sun 10:00-18:00")
    start = dt.datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert within(hours, start, zone) is expected


def test_naive_start_is_refused():
    with pytest.raises(ValueError):
        within(parse_hours("Mon 09:00-18:00"), dt.datetime(2026, 11, 23, 10), MSK)


# ---- selection and folding


RULE = IncidentRule(statuses=frozenset({"unanswered", "busy"}), callers="known",
                    hours=parse_hours("Mon-Fri 09:00-18:00"), fold=dt.timedelta(minutes=30),
                    zone=MSK)
ANY = IncidentRule(RULE.statuses, "any", RULE.hours, RULE.fold, MSK)
NUMBER = "+79161234567"


def call(key: str, moment: str, status: str = "unanswered", number: str | None = NUMBER,
         known: bool = True) -> CallFacts:
    return CallFacts(key, msk(moment), status, number, known)


@pytest.mark.parametrize(("rule", "facts", "expected"), [
    (RULE, call("a", "2026-11-23 10:00"), True),
    (RULE, call("a", "2026-11-23 10:00", status="busy"), True),
    (RULE, call("a", "2026-11-23 10:00", status="answered"), False),
    (RULE, call("a", "2026-11-23 10:00", status="impossible"), False),
    (RULE, call("a", "2026-11-23 10:00", known=False), False),
    (ANY, call("a", "2026-11-23 10:00", known=False), True),
    (ANY, call("a", "2026-11-23 10:00", number=None, known=False), False),  # anonymous
    (RULE, call("a", "2026-11-23 10:00", number=None, known=True), False),
    (RULE, call("a", "2026-11-23 19:00"), False),  # after hours
    (RULE, call("a", "2026-11-28 10:00"), False),  # Saturday
])
def test_selection(rule, facts, expected):
    assert selects(rule, facts) is expected


def test_no_statuses_means_no_incidents():
    rule = IncidentRule(frozenset(), "any", Hours(), RULE.fold, MSK)
    assert decide(rule, call("a", "2026-11-23 10:00"), ()) == Decision("none")


def run_calls(rule: IncidentRule, calls: list[CallFacts]) -> dict[str, str | None]:
    """What the run would do: decide each call against the state, record, update the state."""
    state: tuple[OpenIncident, ...] = ()
    fields = {}
    for facts in calls:
        decision = decide(rule, facts, state)
        fields[facts.key] = decision.incident
        state = apply(decision, facts, state)
    return fields


def test_a_customer_ringing_five_times_is_one_incident():
    calls = [call(f"c{n}", f"2026-11-23 10:{2 * n:02d}") for n in range(5)]
    assert run_calls(RULE, calls) == {f"c{n}": "c0" for n in range(5)}


def test_fold_counts_from_the_last_call_joined():
    calls = [call("a", "2026-11-23 10:00"), call("b", "2026-11-23 10:25"),
             call("c", "2026-11-23 10:55"),  # 30 min after b (inclusive), 55 after a
             call("d", "2026-11-23 11:26")]  # 31 min after c: a new incident
    assert run_calls(RULE, calls) == {"a": "a", "b": "a", "c": "a", "d": "d"}


def test_only_selected_calls_join_and_other_numbers_never_do():
    calls = [call("a", "2026-11-23 10:00"),
             call("b", "2026-11-23 10:05", status="answered"),  # answered: no incident
             call("c", "2026-11-23 10:10", number="+74951234567"),  # another caller
             call("d", "2026-11-23 10:20", known=False),  # unknown: not selected
             call("e", "2026-11-23 10:20", number=None)]  # anonymous
    assert run_calls(RULE, calls) == {"a": "a", "b": None, "c": "c", "d": None, "e": None}


def test_a_call_after_hours_does_not_join_an_incident_of_the_afternoon():
    calls = [call("a", "2026-11-23 17:50"), call("b", "2026-11-23 18:05")]
    assert run_calls(RULE, calls) == {"a": "a", "b": None}


def test_zero_fold_never_folds():
    rule = IncidentRule(RULE.statuses, "known", RULE.hours, dt.timedelta(0), MSK)
    calls = [call("a", "2026-11-23 10:00"), call("b", "2026-11-23 10:00:05")]
    assert run_calls(rule, calls) == {"a": "a", "b": "b"}


def test_a_call_met_out_of_start_order_joins_the_incident_it_precedes():
    calls = [call("b", "2026-11-23 10:20"), call("a", "2026-11-23 10:00")]
    assert run_calls(RULE, calls) == {"b": "b", "a": "b"}


def test_the_nearest_of_two_open_incidents_wins():
    state = (OpenIncident("x", NUMBER, msk("2026-11-23 10:00"), msk("2026-11-23 10:00")),
             OpenIncident("y", NUMBER, msk("2026-11-23 10:40"), msk("2026-11-23 10:40")))
    assert decide(RULE, call("c", "2026-11-23 10:25"), state) == Decision("join", "y")


def test_apply_widens_the_joined_incident_only():
    first = OpenIncident("a", NUMBER, msk("2026-11-23 10:00"), msk("2026-11-23 10:00"))
    other = OpenIncident("z", "+74951234567", msk("2026-11-23 10:00"),
                         msk("2026-11-23 10:00"))
    after = apply(Decision("join", "a"), call("b", "2026-11-23 10:10"), (first, other))
    assert after == (OpenIncident("a", NUMBER, first.first_start, msk("2026-11-23 10:10")),
                     other)
    assert apply(Decision("none"), call("b", "2026-11-23 10:10"), after) == after


def test_folding_across_a_daylight_saving_change_counts_real_time():
    rule = IncidentRule(RULE.statuses, "any", Hours(), dt.timedelta(minutes=30), BERLIN)
    # 02:50 CEST and 02:10 CET on 2026-10-25: twenty minutes apart although the clock went back
    summer = local("2026-10-25 02:50").replace(tzinfo=BERLIN)
    winter = local("2026-10-25 02:10").replace(tzinfo=BERLIN, fold=1)
    first = CallFacts("a", summer, "busy", NUMBER, False)
    second = CallFacts("b", winter, "busy", NUMBER, False)
    assert run_calls(rule, [first, second]) == {"a": "a", "b": "a"}


# ---- templates


FIELDS = ("key", "number", "caller_name", "number_e164", "duration")


def test_render_fills_fields_and_nulls_render_empty():
    templates = {"incident_title": "Missed call from {caller_name} {number}",
                 "incident_call": "{key}", "braces": "{{literal}} {duration}s"}
    values = {"key": "1795672100.1", "number": "89161234567", "caller_name": None,
              "duration": 12}
    assert render_attributes(templates, values) == {
        "incident_title": "Missed call from  89161234567", "incident_call": "1795672100.1",
        "braces": "{literal} 12s"}


@pytest.mark.parametrize(("template", "problem"), [
    ("{nope}", "unknown field {nope}"),
    ("{key.__class__}", "only plain field names"),
    ("{key[0]}", "only plain field names"),
    ("{}", "only plain field names"),
    ("{0}", "only plain field names"),
    ("{key!r}", "no conversion"),
    ("{duration:>5}", "format spec"),
    ("{key", "expected '}'"),
    ("key}", "Single '}'"),
])
def test_bad_templates_are_found_at_load_time(template, problem):
    problems = check_attribute_templates({"title": template}, FIELDS)
    assert len(problems) == 1
    assert problems[0].startswith("incidents.attributes.title: ")
    assert problem in problems[0]


def test_template_fields():
    assert attribute_fields("{key} {number} {key} {{x}}") == {"key", "number"}
    assert check_attribute_templates({"a": "{key}", "b": "plain"}, FIELDS) == []
