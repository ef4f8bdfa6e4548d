"""Grouping cdr legs into calls, their outcome, durations and the incoming filter (no database).

The 27 real sample calls (tests/data/samples, explained in the cdr-samples README) are built from
their rows and compared with what the script that placed them wrote in calls.csv.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from collections import defaultdict
from functools import cache
from typing import Any

import pytest
from cdrtable import load_table
from support import BERLIN, MSK, SAMPLES, call_of, leg, local

from poller.calls import caller, extension, is_incoming, recording_names, talk_seconds
from poller.config.schema import IncomingRules
from poller.model import Leg
from poller.source.table import decode_text

TEMPLATE = "{calldate:%Y/%m/%d}/{recordingfile}"
LEG_FIELDS = {f.name for f in dataclasses.fields(Leg)}


def leg_from_row(row: dict[str, Any]) -> Leg:
    """A Leg from a cdr row dict, keeping only the columns Leg has."""
    return Leg(**{name: value for name, value in row.items() if name in LEG_FIELDS})


@cache
def _samples() -> tuple[dict[str, dict[str, str]], dict[str, tuple[Leg, ...]]]:
    """calls.csv by call id, and the legs of each call (grouped by Leg.key) by call id."""
    with open(SAMPLES / "calls.csv", newline="", encoding="utf-8") as handle:
        expected = {row["call_id"]: row for row in csv.DictReader(handle)}
    groups: dict[str, list[Leg]] = defaultdict(list)
    for row in load_table(SAMPLES / "cdr.txt"):
        leg = leg_from_row(row)
        groups[leg.key].append(leg)
    # the first row's calldate is placed_at_msk truncated to the second (README, calls.csv)
    by_start = {str(min(leg.calldate for leg in legs)): legs for legs in groups.values()}
    assert len(by_start) == len(groups) == 27
    legs_by_call = {call_id: tuple(by_start[row["placed_at_msk"][:19]])
                    for call_id, row in expected.items()}
    return expected, legs_by_call


def expected_call(call_id: str) -> dict[str, str]:
    return _samples()[0][call_id]


def sample_legs(call_id: str) -> list[Leg]:
    return list(_samples()[1][call_id])


CALL_IDS = list(_samples()[0])


# --- the 27 real calls -----------------------------------------------------------------------


def test_sample_rows_form_27_calls(sample_rows):
    """The 44 real rows group into the 27 calls the script placed, one key per call."""
    keys = {leg_from_row(row).key for row in sample_rows}
    assert len(sample_rows) == 44
    assert len(keys) == 27
    assert sum(len(sample_legs(c)) for c in CALL_IDS) == 44


@pytest.mark.parametrize("call_id", CALL_IDS)
def test_sample_call_outcome_matches_calls_csv(call_id):
    """Each real call gets the status, direction and answering extension it really had."""
    expected = expected_call(call_id)
    call = call_of(*sample_legs(call_id))
    assert call.status == expected["expected_outcome"]
    assert call.incoming is (expected["direction"] == "incoming")
    if expected["direction"] == "incoming":
        assert call.answered_by == expected["answered_by"]
        assert call.did == expected["did"]
        assert call.number == expected["caller_number"]
        assert call.name == expected["caller_name"]


@pytest.mark.parametrize("call_id", CALL_IDS)
def test_sample_call_times_are_consistent(call_id):
    """Every real call starts at its placing second (+03:00), and wait + talk fit in duration."""
    expected = expected_call(call_id)
    legs = sample_legs(call_id)
    call = call_of(*legs)
    placed = dt.datetime.fromisoformat(expected["placed_at_msk"]).replace(microsecond=0)
    assert call.start == placed.replace(tzinfo=MSK)
    assert call.start.isoformat().endswith("+03:00")
    assert call.key == legs[0].linkedid
    assert 0 <= call.wait_time <= call.duration
    assert 0 <= call.talk_time <= call.duration
    if call.status != "answered":
        assert call.talk_time == 0
        assert call.wait_time == call.duration
        assert call.answered_by == ""


# (call, duration, talk_time, wait_time) from the README's scenario table (rows: dur/billsec)
DURATIONS = [
    ("P1-01", 9, 6, 3),  # ANSWERED 201 9/6: rings 3 s, talks 6 s
    ("P2-02", 12, 8, 4),  # ANSWERED 202 12/8
    ("P1-02", 10, 0, 10),  # NO ANSWER 202 10/0 + Hangup row 0/0
    ("P1-03", 0, 0, 0),  # BUSY 202 0/0 + Hangup row
    ("P1-04", 6, 0, 6),  # caller gives up after 6 s of ringing
    ("P1-05", 11, 7, 4),  # ring group: 211 4/0, 212 ANSWERED 11/7, 213 BUSY
    ("P2-06", 9, 6, 3),  # ring group: 211 ANSWERED 9/6, 212 and 213 3/0
    ("P1-07", 7, 0, 7),  # queue abandon: NO ANSWER 7/7 and 6/6
    ("P1-08", 13, 0, 13),  # announcement: 09:39:36 to 09:39:49 (212's leg 09:39:41 + 8)
    ("P2-09", 13, 0, 13),  # the same announcement call with the default cdr.conf
    ("P1-12", 16, 14, 2),  # ANSWERED 201 16/14, recording paused and resumed
    ("P1-13", 18, 16, 2),  # the long call of the overlapping pair
    ("P1-14", 5, 4, 1),  # the short call of the overlapping pair
]


@pytest.mark.parametrize(("call_id", "duration", "talk", "wait"), DURATIONS,
                         ids=[d[0] for d in DURATIONS])
def test_sample_call_durations(call_id, duration, talk, wait):
    """Durations of the real calls are what their rows say (README scenario table)."""
    call = call_of(*sample_legs(call_id))
    assert (call.duration, call.talk_time, call.wait_time) == (duration, talk, wait)


@pytest.mark.parametrize(("call_id", "agent", "real_wait"), [("P1-06", "221", 3),
                                                             ("P2-07", "222", 4)])
def test_queue_talk_time_is_an_upper_bound(call_id, agent, real_wait):
    """A queue answered before Queue(): billsec counts the agent's ringing, talk_time is 9 s."""
    call = call_of(*sample_legs(call_id))
    assert call.status == "answered"
    assert call.answered_by == agent
    assert call.duration == 9
    assert call.talk_time == 9  # the agent really talked 9 - real_wait s; the cdr cannot tell
    assert 0 <= call.wait_time <= real_wait
    assert call.talk_time + call.wait_time == call.duration


def test_ring_group_answered_by_the_member_who_picked_up():
    """Ring group P1-05: 211 no answer, 212 answered after 4 s, 213 busy → answered by 212."""
    call = call_of(*sample_legs("P1-05"))
    assert (call.status, call.answered_by, call.talk_time, call.wait_time) == (
        "answered", "212", 7, 4)


def test_announcement_call_is_unanswered_and_spans_its_last_leg():
    """P1-08: the PBX answered (ANSWERED, no dstchannel) but nobody did: unanswered, 13 s."""
    legs = sample_legs("P1-08")
    assert [leg.disposition for leg in legs] == ["NO ANSWER", "NO ANSWER", "ANSWERED"]
    call = call_of(*legs)
    assert call.status == "unanswered"
    assert call.start == dt.datetime(2026, 11, 26, 9, 39, 36, tzinfo=MSK)
    assert call.end == dt.datetime(2026, 11, 26, 9, 39, 49, tzinfo=MSK)
    assert call.duration == 13
    assert call.last_calldate == local("2026-11-26 09:39:49")


@pytest.mark.parametrize("call_id", CALL_IDS)
def test_duplicate_legs_from_two_cdr_backends_are_ignored(call_id):
    """Two CDR back-ends writing one table double every row: the call comes out the same."""
    legs = sample_legs(call_id)
    assert call_of(*legs + legs) == call_of(*legs)
    assert call_of(*list(reversed(legs)) + legs) == call_of(*legs)


def test_systemname_prefixed_ids_group_the_same():
    """With systemname=pbx1 in asterisk.conf, ids read `pbx1-1795675142.17`: same grouping."""
    legs = sample_legs("P1-05")
    prefixed = [dataclasses.replace(leg, uniqueid="pbx1-" + leg.uniqueid,
                                    linkedid="pbx1-" + leg.linkedid) for leg in legs]
    assert len({leg.key for leg in prefixed}) == 1
    assert prefixed[0].key == "pbx1-" + legs[0].linkedid
    plain, call = call_of(*legs), call_of(*prefixed)
    assert call.key == "pbx1-" + plain.key
    assert dataclasses.replace(call, key=plain.key) == plain


def test_prefixed_uniqueid_looks_like_the_systemname_example():
    """Design's example id `pbx1-1795675107.1` with an empty linkedid: its own key."""
    leg = dataclasses.replace(sample_legs("P1-01")[0], uniqueid="pbx1-1795675107.1", linkedid="")
    call = call_of(leg)
    assert call.key == "pbx1-1795675107.1"
    assert call.start == dt.datetime(2026, 11, 26, 9, 38, 27, tzinfo=MSK)


def test_empty_linkedid_falls_back_to_uniqueid():
    """Before Asterisk 1.8 (or a site without the column) linkedid is empty: uniqueid groups."""
    legs = [dataclasses.replace(leg, linkedid="  ") for leg in sample_legs("P1-05")]
    assert {leg.key for leg in legs} == {"1795675142.17"}
    call = call_of(*legs)
    assert call.key == "1795675142.17"
    assert dataclasses.replace(call, key=legs[0].uniqueid) == dataclasses.replace(
        call_of(*sample_legs("P1-05")), key=legs[0].uniqueid)


def test_unknown_disposition_counts_as_unanswered_and_is_listed():
    """A disposition this version does not know (a future Asterisk) → unanswered, reported."""
    legs = [dataclasses.replace(leg, disposition="ON HOLD") for leg in sample_legs("P2-03")]
    call = call_of(*legs)
    assert call.status == "unanswered"
    assert call.unknown_dispositions == ("ON HOLD",)
    assert call_of(*sample_legs("P2-03")).unknown_dispositions == ()


def test_unknown_disposition_beside_a_busy_member_is_still_unanswered():
    """A ring group where one member is BUSY and another has an unknown disposition."""
    busy, _ = sample_legs("P1-03")
    odd = dataclasses.replace(busy, disposition="WEIRD", sequence=busy.sequence + 1,
                              dstchannel="Local/203@sim-phone-00000099;1")
    call = call_of(busy, odd)
    assert call.status == "unanswered"
    assert call.unknown_dispositions == ("WEIRD",)


def test_transfer_sums_the_talk_of_both_answered_legs():
    """A call 201 answers and transfers to 202: two person-answered legs, talk is their sum."""
    first = sample_legs("P1-01")[0]  # 09:38:27, ANSWERED 201 9/6
    second = dataclasses.replace(first, calldate=first.calldate + dt.timedelta(seconds=9),
                                 sequence=first.sequence + 5,
                                 dstchannel="PJSIP/202-0000002b", duration=20, billsec=18)
    call = call_of(second, first)
    assert call.status == "answered"
    assert call.talk_time == 6 + 18
    assert call.answered_by == "201"  # the first person who answered
    assert call.wait_time == 3
    assert call.duration == 29


def test_outcome_busy_beats_nothing_and_failed_is_impossible():
    """Busy and callee-congestion calls: BUSY → busy; FAILED (P2-10) and CONGESTION → impossible."""
    assert call_of(*sample_legs("P2-04")).status == "busy"
    assert call_of(*sample_legs("P2-10")).status == "impossible"
    assert call_of(*sample_legs("P1-09")).status == "impossible"  # CONGESTION + Hangup row


# --- extension, caller, incoming rules -------------------------------------------------------


@pytest.mark.parametrize(("channel", "ext"), [
    ("PJSIP/101-0000002a", "101"),
    ("SIP/101-00000001", "101"),
    ("Local/101@from-internal-0000001a;1", "101"),
    ("Local/201@sim-phone-00000001;1", "201"),
    ("", ""),
])
def test_extension_from_destination_channel(channel, ext):
    """answered_by is the extension in the callee channel, whatever the channel technology."""
    assert extension(channel) == ext


def test_caller_from_quoted_clid():
    """clid `"Name" <num>` with no src/cnum/cnam columns filled gives both number and name."""
    number, name = caller([leg(src="", cnum="", cnam="", clid='"Sokolov Ivan" <+79161002301>')])
    assert (number, name) == ("+79161002301", "Sokolov Ivan")


def test_caller_with_empty_name_in_clid():
    """clid `"" <num>` (no caller name sent) gives the number and an empty name."""
    assert caller([leg(src="", cnum="", cnam="", clid='"" <89161002302>')]) == (
        "89161002302", "")


def test_caller_prefers_cnam_over_clid_name():
    """FreePBX's cnam column (CID lookup) is preferred over the name in clid."""
    vega = leg(cnam="Vega LLC", clid='"OOO Vega" <+79161002305>', src="+79161002305")
    assert caller([vega]) == ("+79161002305", "Vega LLC")


def test_caller_name_equal_to_number_is_dropped():
    """A clid of `"201" <201>` carries no name: the name is empty, not the number again."""
    assert caller([leg(src="201", cnam="", clid='"201" <201>')]) == ("201", "")


def test_legacy_encoded_caller_name_is_readable():
    """A cp1251 caller name in a latin1 column, read as bytes, becomes Cyrillic text."""
    raw = '"Иванов" <+79161002301>'.encode("cp1251")
    named = leg(cnam="", clid=decode_text(raw, "cp1251"))
    assert caller([named]) == ("+79161002301", "Иванов")
    assert decode_text("Иванов".encode(), "cp1251") == "Иванов"  # UTF-8 stays UTF-8


@pytest.mark.parametrize(("rules", "leg_values", "incoming"), [
    (IncomingRules(did_set=True, contexts=()), {"did": "74951230001"}, True),
    (IncomingRules(did_set=False, contexts=()), {"did": "74951230001"}, False),
    (IncomingRules(did_set=False, channels=("PJSIP/provider-*",), contexts=()),
     {"did": "", "channel": "PJSIP/provider-0000002a"}, True),
    (IncomingRules(did_set=False, channels=("PJSIP/provider-*",), contexts=()),
     {"did": "", "channel": "PJSIP/101-0000002a"}, False),
    (IncomingRules(did_set=False, contexts=("from-trunk", "from-pstn")),
     {"did": "", "dcontext": "from-trunk"}, True),
    (IncomingRules(did_set=True, channels=("PJSIP/provider-*",), contexts=("from-trunk",)),
     {"did": "", "channel": "PJSIP/203-00000017", "dcontext": "from-internal"}, False),
], ids=["did-set", "did-rule-off", "trunk-channel", "not-trunk-channel", "context",
        "none-match"])
def test_is_incoming_rules(rules, leg_values, incoming):
    """A call is incoming when its first leg matches any configured rule, else it is not."""
    assert is_incoming(leg(**leg_values), rules) is incoming


def test_outgoing_and_internal_sample_calls_are_not_incoming_even_with_channel_rules():
    """Outgoing/internal calls (dcontext from-internal, no did) stay outgoing with the defaults."""
    for call_id in ("P1-10", "P1-11", "P2-11", "P2-12"):
        assert call_of(*sample_legs(call_id)).incoming is False, call_id


# --- recordings named by the legs ------------------------------------------------------------


def test_queue_legs_naming_one_file_give_one_recording():
    """A queue copies recordingfile onto every member's leg: the call has one recording."""
    legs = sample_legs("P1-06")
    assert len(legs) == 2 and legs[0].recordingfile == legs[1].recordingfile
    names = recording_names(legs, TEMPLATE)
    assert names == (f"2026/11/26/{legs[0].recordingfile}",)
    assert call_of(*legs).recordings == names


def test_two_files_named_by_legs_are_joined_in_time_order():
    """A transfer whose legs name different files: both, earliest leg's file first."""
    first = sample_legs("P1-01")[0]
    second = dataclasses.replace(first, calldate=first.calldate + dt.timedelta(seconds=9),
                                 sequence=first.sequence + 5, recordingfile="second.wav",
                                 dstchannel="PJSIP/202-0000002b")
    call = call_of(second, first)
    assert call.recordings == (f"2026/11/26/{first.recordingfile}", "2026/11/26/second.wav")
    assert call.expects_recording is True


def test_empty_recordingfile_names_no_recording():
    """A route that does not record (ext 205, P1-14) leaves recordingfile empty: no recording."""
    legs = sample_legs("P1-14")
    assert legs[0].recordingfile == ""
    assert recording_names(legs, TEMPLATE) == ()
    call = call_of(*legs)
    assert call.recordings == ()
    assert call.expects_recording is False


def test_uniqueid_template_searches_every_leg_then_the_linkedid():
    """With `{uniqueid}.wav` nothing in the row says a file exists: the call's legs and its
    linkedid are places to look (MixMonitor names the file after the channel that started it),
    answered or not, and nothing is waited for."""
    for call_id, answered in (("P1-02", False), ("P1-01", True)):
        legs = sample_legs(call_id)
        call = call_of(*legs, template="{uniqueid}.wav")
        assert call.expects_recording is False and call.recording_search is True
        expected = (f"{legs[0].uniqueid}.wav", f"{legs[0].linkedid}.wav")
        assert call.recordings == expected, call_id
        assert (call.status == "answered") is answered


def test_search_tries_each_legs_own_uniqueid_in_time_order():
    """A call whose legs carry different uniqueids (a queue's member channels, a transfer):
    each leg's name in time order, then each linkedid, none twice."""
    first = sample_legs("P1-01")[0]
    later = dataclasses.replace(first, uniqueid="1795675110.9", sequence=first.sequence + 3,
                                calldate=first.calldate + dt.timedelta(seconds=3))
    call = call_of(later, first, template="{uniqueid}.wav")
    assert call.recordings == ("1795675107.1.wav", "1795675110.9.wav", "1795675107.0.wav")


def test_a_pattern_is_kept_whole_and_a_value_with_a_star_names_nothing():
    """`*` in the template's file name is a pattern; a caller `*97` filled into it would make
    a second wildcard, so that leg names no file rather than a wrong one."""
    template = "{calldate:%Y/%m/%d}/in-*-{src}-{uniqueid}.wav"
    legs = sample_legs("P1-01")
    assert call_of(*legs, template=template).recordings[0] == \
        "2026/11/26/in-*-+79161002301-1795675107.1.wav"
    starred = [dataclasses.replace(leg, src="*97") for leg in legs]
    assert call_of(*starred, template=template).recordings == ()


def test_recordingfile_template_expects_the_named_file_even_when_unanswered():
    """With the FreePBX template an unanswered call naming a file still waits for it."""
    call = call_of(*sample_legs("P1-02"))
    assert call.status == "unanswered"
    assert call.expects_recording is True
    assert len(call.recordings) == 1


# --- daylight saving time --------------------------------------------------------------------



def test_call_spanning_fall_back_ends_duration_seconds_after_it_started():
    """A 20-minute call from 02:50 CEST on the fall-back night ends at 02:10 CET (01:10 UTC)."""
    epoch = int(dt.datetime(2026, 10, 25, 0, 50, tzinfo=dt.UTC).timestamp())
    call = call_of(leg("2026-10-25 02:50", uniqueid=f"{epoch}.7", linkedid=f"{epoch}.7",
                      duration=1200, billsec=1100), zone=BERLIN)
    assert call.start.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 0, 50, tzinfo=dt.UTC)
    assert call.duration == 1200
    assert call.end.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 1, 10, tzinfo=dt.UTC)


def test_legs_on_both_sides_of_fall_back_are_ordered_by_instant():
    """201 rings from 02:58 CEST for 180 s, then 202 is dialled at 02:01 CET and talks 60 s:
    the call starts at 02:58 CEST (the earlier wall-clock reading is the later leg)."""
    epoch = int(dt.datetime(2026, 10, 25, 0, 58, tzinfo=dt.UTC).timestamp())
    ids = {"uniqueid": f"{epoch}.1", "linkedid": f"{epoch}.1"}
    rang = leg("2026-10-25 02:58", sequence=1, dstchannel="PJSIP/201-00000002",
               disposition="NO ANSWER", duration=180, billsec=0, **ids)
    answered = leg("2026-10-25 02:01", sequence=2, dstchannel="PJSIP/202-00000003",
                   disposition="ANSWERED", duration=70, billsec=60, **ids)
    call = call_of(answered, rang, zone=BERLIN)
    assert call.start.astimezone(dt.UTC) == dt.datetime(2026, 10, 25, 0, 58, tzinfo=dt.UTC)
    assert call.first_calldate == local("2026-10-25 02:58")
    assert (call.duration, call.wait_time, call.talk_time) == (250, 190, 60)
    assert call.answered_by == "202"


def test_local_channel_halves_count_one_conversation_once():
    """A FreePBX queue member behind a Local channel writes two answered rows for one talk: the
    trunk to `Local/221@from-queue-…;1` and its `;2` half to `PJSIP/221`. Talk counts once."""
    first = sample_legs("P1-01")[0]  # 09:38:27, ANSWERED 9/6
    outer = dataclasses.replace(first, dstchannel="Local/221@from-queue-0000002c;1",
                                duration=40, billsec=30)
    inner = dataclasses.replace(first, channel="Local/221@from-queue-0000002c;2",
                                dstchannel="PJSIP/221-0000002d", sequence=first.sequence + 1,
                                calldate=first.calldate + dt.timedelta(seconds=1), duration=39,
                                billsec=30)
    call = call_of(outer, inner)
    assert (call.status, call.answered_by) == ("answered", "221")
    assert call.talk_time == 30
    assert call.talk_time + call.wait_time == call.duration == 40


def test_talk_spans_one_second_apart_are_not_taken_for_an_overlap():
    """Whole-second truncation: a second leg that seems to begin a second before the first
    ended is a transfer, both talks counted whole."""
    at = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
    second = dt.timedelta(seconds=1)
    assert talk_seconds([(at, at + 10 * second), (at + 9 * second, at + 20 * second)]) == 21
    assert talk_seconds([(at, at + 10 * second), (at + 2 * second, at + 12 * second)]) == 12
    assert talk_seconds([(at, at + 30 * second), (at + 5 * second, at + 10 * second)]) == 30
    assert talk_seconds([]) == 0
