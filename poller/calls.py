"""Pure functions from cdr legs to calls: grouping, outcome, durations, the incoming filter."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import functools
import logging
import re
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

from poller.clock import to_aware
from poller.config.schema import IncomingRules
from poller.model import Call, Leg, Status
from poller.templates import recording_fields, render_recording_name

log = logging.getLogger(__name__)

ANSWERED, NO_ANSWER, BUSY, FAILED = "ANSWERED", "NO ANSWER", "BUSY", "FAILED"
CONGESTION, CANCEL = "CONGESTION", "CANCEL"
KNOWN_DISPOSITIONS = {ANSWERED, NO_ANSWER, BUSY, FAILED, CONGESTION, CANCEL}

_CLID = re.compile(r'^\s*"?(?P<name>.*?)"?\s*<(?P<number>[^>]*)>\s*$')
# PJSIP/101-0000002a, SIP/101-00000001, Local/101@from-internal-0000001a;1
_CHANNEL = re.compile(r"^[^/]+/(?P<name>[^@;]+?)(?:@[^;]*)?(?:-[0-9a-fA-F]{6,}(?:;\d)?)?(?:;\d)?$")


def unique_legs(legs: Iterable[Leg], zone: ZoneInfo) -> list[Leg]:
    """The legs of one call without the copies a second CDR back-end wrote, in time order.

    Time order is by instant: a leg from the second pass of the autumn's repeated hour reads
    earlier on the wall clock than the leg before the change that it followed.
    """
    seen: dict[tuple[object, ...], Leg] = {}
    for leg in legs:
        seen.setdefault(leg.identity, leg)
    return sorted(seen.values(), key=lambda leg: (_begin(leg, zone), leg.sequence, leg.uniqueid))


def person_answered(leg: Leg) -> bool:
    """ANSWERED with a callee channel: a phone picked up (not the PBX answering for itself)."""
    return leg.disposition == ANSWERED and bool(leg.dstchannel.strip())


def outcome(legs: Sequence[Leg]) -> Status:
    """The call's status over its legs, by the fixed rule (README: How it works)."""
    if any(person_answered(leg) for leg in legs):
        return Status.ANSWERED
    # rows with no callee channel (the Hangup row after a failed Dial) rang nobody
    rang = [leg for leg in legs if leg.dstchannel.strip()] or list(legs)
    if any(leg.disposition in (NO_ANSWER, CANCEL) or leg.disposition not in KNOWN_DISPOSITIONS
           for leg in rang):
        return Status.UNANSWERED
    if any(leg.disposition == BUSY for leg in legs):
        return Status.BUSY
    if rang and all(leg.disposition in (FAILED, CONGESTION) for leg in rang):
        return Status.IMPOSSIBLE
    return Status.UNANSWERED


def extension(channel: str) -> str:
    """`PJSIP/101-0000002a` and `Local/101@from-internal-…;1` both give `101`."""
    match = _CHANNEL.match(channel.strip())
    return match.group("name") if match else ""


def caller(legs: Sequence[Leg]) -> tuple[str, str]:
    """The caller's number and name from the first leg (src, cnum, cnam, clid)."""
    first = legs[0]
    match = _CLID.match(first.clid)
    number = first.src.strip() or first.cnum.strip() or (match.group("number") if match else "")
    name = first.cnam.strip() or (match.group("name").strip() if match else "")
    if name == number:
        name = ""
    return number, name


def is_incoming(first: Leg, rules: IncomingRules) -> bool:
    """Whether the call's first leg matches any configured incoming rule."""
    if rules.did_set and first.did.strip():
        return True
    if any(fnmatch.fnmatchcase(first.channel, pattern) for pattern in rules.channels):
        return True
    return first.dcontext in rules.contexts


def recording_names(legs: Sequence[Leg], template: str) -> tuple[str, ...]:
    """The distinct files the legs name, in time order (a queue copies one name onto each leg).

    Only a template over {recordingfile} names files a row says exist; see recording_search
    for the others.
    """
    names: list[str] = []
    files: set[str] = set()
    for leg in legs:
        # each file is named by the first leg that names it: a Hangup row after midnight must
        # not move the call's file into the next day's folder
        if leg.recordingfile in files:
            continue
        name = render_recording_name(template, leg)
        if name and name not in names:
            names.append(name)
            files.add(leg.recordingfile)
    return tuple(names)


def recording_search(legs: Sequence[Leg], template: str) -> tuple[str, ...]:
    """Where a template without {recordingfile} may find the call's file, in the order to try:
    the name each leg gives, then the name its linkedid gives.

    MixMonitor names the file after the channel that started it, which need not be the call's
    first leg (a queue's trunk channel, the channel a busy call went on to voicemail with), and
    that channel may have written no row at all (then its uniqueid is the call's linkedid).
    """
    names: list[str] = []
    tried = [*legs, *(dataclasses.replace(leg, uniqueid=leg.linkedid)
                      for leg in legs if leg.linkedid.strip())]
    for leg in tried:
        name = render_recording_name(template, leg)
        if name and name not in names:
            names.append(name)
    return tuple(names)


# whole-second truncation can make one leg's talk seem to begin a second before the last ended
_TRUNCATION = dt.timedelta(seconds=1)


def talk_seconds(spans: Iterable[tuple[dt.datetime, dt.datetime]]) -> int:
    """Seconds someone talked over the answered legs' (pick-up, hang-up) spans.

    Spans one after another (a transfer) add up; spans at the same time count once: the two
    halves of a Local channel (a FreePBX queue member `Local/221@from-queue;1`, and its `;2`
    dialling `PJSIP/221`) each write an answered row for one conversation.
    """
    total = dt.timedelta()
    reach: dt.datetime | None = None
    for begin, end in sorted(spans):
        if reach is not None and begin < reach - _TRUNCATION:
            begin = min(reach, end)  # the part already counted
        total += max(end - begin, dt.timedelta())
        reach = end if reach is None else max(reach, end)
    return int(total.total_seconds())


def _begin(leg: Leg, zone: ZoneInfo) -> dt.datetime:
    """When a leg began, in UTC."""
    return _utc_start(leg.calldate, zone, leg.uniqueid)


def _utc_start(calldate: dt.datetime, zone: ZoneInfo, uniqueid: str) -> dt.datetime:
    return to_aware(calldate, zone, uniqueid).astimezone(dt.UTC)


# grouping, checking and building a call ask it of each leg several times: a backfill's
# millions of legs paid more for the zone arithmetic than for reading the rows
_utc_start = functools.lru_cache(maxsize=4096)(_utc_start)


def _hangup(leg: Leg, zone: ZoneInfo) -> dt.datetime:
    """When a leg hung up, in UTC: its duration counts elapsed seconds, not wall-clock ones."""
    return _begin(leg, zone) + dt.timedelta(seconds=max(leg.duration, 0))


def leg_times(leg: Leg, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """When a leg began and hung up, in UTC."""
    return _begin(leg, zone), _hangup(leg, zone)


def plausible(leg: Leg, zone: ZoneInfo, now: dt.datetime, longest: float,
              skew: dt.timedelta) -> tuple[Leg, str | None]:
    """A leg as it can have been: a row is written at hang-up, so its end is not in the future
    (by more than the clocks' skew), and no call lasts longer than `longest` seconds.

    A leg whose end lies in the future gets its billsec (or 0) instead: a fixed value, so its
    call settles like any other and never holds the watermark. Returns the leg, and what was
    wrong with it (None when nothing was).
    """
    start = _begin(leg, zone)
    latest = (now.astimezone(dt.UTC) + skew - start).total_seconds()
    if leg.duration <= min(latest, longest):
        return leg, None
    if leg.duration > latest:
        duration = leg.billsec if 0 <= leg.billsec <= min(latest, longest) else 0
        why = "ends in the future"
    else:
        duration = int(longest)
        why = "is longer than source.max_call_length"
    fixed = dataclasses.replace(leg, duration=duration, billsec=min(leg.billsec, duration))
    return fixed, (f"leg {leg.uniqueid or '?'} (seq {leg.sequence}): duration {leg.duration}s "
                   f"{why}: counted as {duration}s")


def build_call(legs: Iterable[Leg], rules: IncomingRules, zone: ZoneInfo, template: str) -> Call:
    """One call record from all legs sharing a key."""
    ordered = unique_legs(legs, zone)
    if not ordered:
        raise ValueError("a call needs at least one leg")
    first = ordered[0]
    start = to_aware(first.calldate, zone, first.uniqueid)
    start_utc = start.astimezone(dt.UTC)
    # aware datetimes sharing one ZoneInfo add and subtract as wall-clock times: work in UTC
    hangups = [_hangup(leg, zone) for leg in ordered]
    end_utc = max(hangups)
    end = end_utc.astimezone(zone)
    duration = max(int((end_utc - start_utc).total_seconds()), 0)
    # the first pick-up is the answered leg whose talk began first (hang-up less billsec)
    picked = sorted((hangup - dt.timedelta(seconds=leg.billsec), leg.sequence, number)
                    for number, (leg, hangup) in enumerate(zip(ordered, hangups, strict=True))
                    if person_answered(leg))
    answered = [ordered[number] for _, _, number in picked]
    talk_time = talk_seconds([
        (hangups[number] - dt.timedelta(seconds=max(ordered[number].billsec, 0)),
         hangups[number]) for _, _, number in picked])
    if answered:
        wait_time = min(max(int((picked[0][0] - start_utc).total_seconds()), 0), duration)
    else:
        wait_time = duration
    status = outcome(ordered)
    # a row that names its file says one is coming: it is waited for; a file only a template
    # could name is the recording if it is there once the call has settled, else there is none
    search = "recordingfile" not in recording_fields(template)
    recordings = (recording_search if search else recording_names)(ordered, template)
    expects = bool(recordings) and not search
    unknown = tuple(sorted({leg.disposition for leg in ordered} - KNOWN_DISPOSITIONS))
    number, name = caller(ordered)
    return Call(
        key=first.key,
        start=start,
        end=end,
        number=number,
        name=name,
        did=first.did.strip(),
        duration=duration,
        talk_time=talk_time,
        wait_time=wait_time,
        status=status,
        answered_by=extension(answered[0].dstchannel) if answered else "",
        incoming=is_incoming(first, rules),
        recordings=recordings,
        expects_recording=expects,
        recording_search=search and bool(recordings),
        first_calldate=first.calldate,
        last_calldate=max(leg.calldate for leg in ordered),
        unknown_dispositions=unknown,
        legs=len(ordered),
        pbx=first.pbx,
    )


def stand_in(key: str, legs: Sequence[Leg], zone: ZoneInfo) -> Call:
    """What the ledger keeps of a call whose legs could not be built: enough to list it and
    find its rows again. It counts no legs, so the next successful build replaces it."""
    first = min(legs, key=lambda leg: leg.calldate)
    start = first.calldate.replace(tzinfo=zone)
    return Call(key=key, start=start, end=start, number=first.src.strip(), name="",
                did=first.did.strip(), duration=0, talk_time=0, wait_time=0, status=Status.UNBUILT,
                answered_by="", incoming=False, recordings=(), expects_recording=False,
                first_calldate=first.calldate,
                last_calldate=max(leg.calldate for leg in legs), legs=0, pbx=first.pbx)
