"""After the faults and one clean run: what each target holds against what the PBX made."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from poller.recordings.formats import mp3_seconds
from poller.targets.easla.target import hms

from .suite import LABELS, Suite, Tally
from .workload import Expected

T = TypeVar("T")
LENGTH_TOLERANCE = 0.6  # seconds between the WAV and its MP3 (frame padding, 8 kHz → MP3)
STATUSES = {"answered": "incoming_call_answered", "unanswered": "incoming_call_unanswered",
            "busy": "incoming_call_busy", "impossible": "incoming_call_congestion"}


@dataclass
class SiteAudit:
    """One target against the workload."""

    name: str
    expected: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: Counter[str] = field(default_factory=Counter)  # key -> extra objects
    wrong: list[str] = field(default_factory=list)
    not_incoming_delivered: list[str] = field(default_factory=list)
    recordings_expected: int = 0
    recordings_attached: int = 0
    recordings_lost: list[str] = field(default_factory=list)
    recordings_duplicated: Counter[str] = field(default_factory=Counter)
    wrong_length: list[str] = field(default_factory=list)
    deleted_early: list[str] = field(default_factory=list)  # WAV gone, recording not there
    wavs_deleted: int = 0
    not_done: list[str] = field(default_factory=list)  # ledger stage after the clean run
    parked_own: list[str] = field(default_factory=list)
    parked_by_outage: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # webhook requests failing verification
    repeats: int = 0  # webhook requests sent again under an id the receiver already had


@dataclass
class Result:
    tally: Tally
    sites: list[SiteAudit]
    seed: int
    seconds: float = 0.0

    @property
    def unexplained_duplicates(self) -> list[str]:
        found = []
        for site in self.sites:
            for key, extra in site.duplicated.items():
                if site.name == "webhook" or extra > self.tally.object_windows.get(key, 0):
                    found.append(f"{site.name}: {key}: {extra} extra objects")
            for key, extra in site.recordings_duplicated.items():
                if extra > self.tally.file_windows.get(key, 0):
                    found.append(f"{site.name}: {key}: {extra} extra files")
        return found

    @property
    def kill_after_create_duplicates(self) -> int:
        """Objects made twice by a kill right after createObjectref answered."""
        return self.tally.window_causes[
            "SIGKILL after createObjectref answered: object not recorded"]


def audit(suite: Suite) -> list[SiteAudit]:
    calls = suite.workload.calls
    return [_audit_easla(suite, calls), _audit_archive(suite, calls),
            _audit_webhook(suite, calls)]


def _audit_easla(suite: Suite, calls: dict[str, Expected]) -> SiteAudit:
    result = SiteAudit("easla")
    by_key: dict[str, list[dict[str, Any]]] = {}
    with suite.easla._lock:
        objects = list(suite.easla.objects.values())
    for obj in objects:
        by_key.setdefault(obj["attributes"]["incoming_call_key"][0], []).append(obj)
    for key, call, found in _held(result, calls, by_key, "an object"):
        for obj in found:
            _compare(result, call, {name: values[0] for name, values in
                                    obj["attributes"].items()}, easla=True)
        files = [data for obj in found for _, data in obj["files"]]
        _recording(result, call, files)
        wav = call.wavs.get("easla")
        if wav is not None and not wav.exists():
            result.wavs_deleted += 1
            if not files:
                result.deleted_early.append(key)
    _ledger(result, suite, suite.easla_site, calls)
    return result


def _audit_archive(suite: Suite, calls: dict[str, Expected]) -> SiteAudit:
    result = SiteAudit("archive")
    records: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in suite.archive_site.archive.rglob("*.json"):
        if path.name.endswith(".incident.json"):
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        records.setdefault(record["key"], []).append((path, record))
    for _, call, found in _held(result, calls, records, "a record"):
        files = []
        for path, record in found:
            _compare(result, call, record, easla=False)
            if record.get("recording"):
                mp3 = path.with_name(record["recording"])
                files.append(mp3.read_bytes() if mp3.exists() else b"")
        _recording(result, call, files)
    _ledger(result, suite, suite.archive_site, calls)
    return result


def _audit_webhook(suite: Suite, calls: dict[str, Expected]) -> SiteAudit:
    """What the receiver stored (the first message of each webhook-id, as a receiver that
    drops repeats keeps it); a call under two ids is a duplicate, whatever caused it."""
    receiver = suite.receiver
    result = SiteAudit("webhook")
    result.rejected = list(receiver.seen.rejected)
    result.repeats = len(receiver.seen.requests) - len(receiver.seen.messages)
    found: dict[str, list[Any]] = {}
    for message in receiver.of_type("call.received"):
        found.setdefault(message.payload["call"]["key"], []).append(message)
    for _, call, messages in _held(result, calls, found, "a message"):
        for message in messages:
            _compare(result, call, message.payload["call"], easla=False)
        _recording(result, call, [m.recording for m in messages if m.recording])
    _ledger(result, suite, suite.webhook_site, calls)
    return result


def _held(result: SiteAudit, calls: dict[str, Expected], held: dict[str, list[T]],
          what: str) -> Iterator[tuple[str, Expected, list[T]]]:
    """Each incoming call the target holds, with what it holds for it (one item unless
    duplicated); the calls lost, delivered twice, not incoming or not of the workload are
    counted in `result` on the way."""
    for key in held.keys() - calls.keys():
        result.wrong.append(f"{key}: {what} for no call of the workload")
    for key, call in calls.items():
        items = held.get(key, [])
        if not call.incoming:
            if items:
                result.not_incoming_delivered.append(key)
            continue
        result.expected += 1
        if not items:
            result.lost.append(key)
            continue
        result.delivered += 1
        if len(items) > 1:
            result.duplicated[key] = len(items) - 1
        yield key, call, items


def _compare(result: SiteAudit, call: Expected, got: dict[str, Any], easla: bool) -> None:
    answered_by = call.answered_by if call.status == "answered" else ""
    if easla:
        want = {"status": STATUSES[call.status], "incoming_call_time": hms(call.duration),
                "incoming_call_number": call.number, "incoming_call_answered_by": answered_by}
    else:
        want = {"status": call.status, "duration": call.duration, "number": call.number,
                "answered_by": answered_by}
    for name, value in want.items():
        if got.get(name) != value:
            result.wrong.append(f"{call.key} ({call.template}): {name} {got.get(name)!r}, "
                                f"expected {value!r}")


def _recording(result: SiteAudit, call: Expected, files: list[bytes]) -> None:
    if call.seconds is None:
        if files:
            result.wrong.append(f"{call.key}: a recording attached to a call without audio")
        return
    result.recordings_expected += 1
    if not files or not any(files):
        result.recordings_lost.append(call.key)
        return
    result.recordings_attached += 1
    if len(files) > 1:
        result.recordings_duplicated[call.key] = len(files) - 1
    for data in files:
        with tempfile.NamedTemporaryFile(suffix=".mp3") as handle:
            handle.write(data)
            handle.flush()
            try:
                seconds = mp3_seconds(Path(handle.name))
            except Exception as exc:  # noqa: BLE001 - not an MP3 at all: reported
                result.wrong_length.append(f"{call.key}: not an MP3 ({exc})")
                continue
        if abs(seconds - call.seconds) > LENGTH_TOLERANCE:
            result.wrong_length.append(f"{call.key}: {seconds:.2f} s of MP3 for a "
                                       f"{call.seconds:.2f} s WAV")


def _ledger(result: SiteAudit, suite: Suite, site: Any, calls: dict[str, Expected]) -> None:
    entries = site.entries()
    for key, call in calls.items():
        entry = entries.get(key)
        if call.incoming and (entry is None or entry.stage != "done"):
            result.not_done.append(f"{key}: {entry.stage if entry else 'not in the ledger'}")
    for key in suite.tally.parked.get(site.name, []):
        if key in suite.tally.own_failures.get(site.name, set()):
            result.parked_own.append(key)
        else:
            result.parked_by_outage.append(key)


# -- the table


def table(result: Result) -> str:
    tally = result.tally
    lines = [f"fault suite, seed {result.seed}: {tally.runs} runs in {result.seconds:.0f} s", "",
             f"{'fault injected':<52}{'count':>6}  how"]
    for kind, label in LABELS.items():
        missed = f" ({tally.missed[kind]} missed)" if tally.missed[kind] else ""
        lines.append(f"  {label:<50}{tally.injected[kind]:>6}  "
                     f"{tally.detail.get(kind, '')}{missed}".rstrip())
    lines += ["", f"{'calls':<10}{'expected':>9}{'delivered':>10}{'lost':>6}{'duplicated':>11}"
                  f"{'parked (own / outage)':>23}{'wrong':>7}{'outgoing delivered':>20}"]
    for site in result.sites:
        parked = f"{len(site.parked_own)} / {len(site.parked_by_outage)}"
        lines.append(f"  {site.name:<8}{site.expected:>9}{site.delivered:>10}{len(site.lost):>6}"
                     f"{sum(site.duplicated.values()):>11}{parked:>23}{len(site.wrong):>7}"
                     f"{len(site.not_incoming_delivered):>20}")
    lines += ["", f"{'recordings':<10}{'expected':>9}{'attached':>10}{'lost':>6}"
                  f"{'duplicated':>11}{'wrong length':>14}{'WAVs deleted (early)':>22}"]
    for site in result.sites:
        deleted = f"{site.wavs_deleted} ({len(site.deleted_early)})" if site.name == "easla" \
            else "kept"
        lines.append(f"  {site.name:<8}{site.recordings_expected:>9}"
                     f"{site.recordings_attached:>10}{len(site.recordings_lost):>6}"
                     f"{sum(site.recordings_duplicated.values()):>11}"
                     f"{len(site.wrong_length):>14}{deleted:>22}")
    kills = tally.injected["kill_after_create"]
    made = result.kill_after_create_duplicates
    rate = f"{made / kills:.2f}" if kills else "n/a"
    windows = sum(tally.object_windows.values()) + sum(tally.file_windows.values())
    lines += ["", f"duplicates per kill after createObjectref: {made} of {kills} = {rate}",
              f"windows caused (target done, no local commit): {windows} "
              f"({', '.join(f'{n} {c}' for c, n in sorted(tally.window_causes.items()))})",
              f"attempts charged during outages: {tally.attempts_by_outage}",
              f"attempts charged by a local failure: {tally.attempts_by_local}",
              tally.standby]
    for site in result.sites:
        if site.name == "webhook":
            lines.append(f"webhook: {len(site.rejected)} requests failing verification, "
                         f"{site.repeats} sent again under the id the receiver had "
                         f"({sum(tally.webhook_windows.values())} after a SIGKILL once it "
                         "stored the call), calls under two ids: "
                         f"{sum(site.duplicated.values())}")
    if tally.runs_raised:
        lines.append(f"runs that raised instead of returning: {len(tally.runs_raised)}")
    return "\n".join(lines)


def findings(result: Result) -> list[str]:
    """Every broken promise, one line each (empty when the suite passes)."""
    found = list(result.tally.problems)
    for site in result.sites:
        found += [f"{site.name}: lost {key}" for key in site.lost]
        found += [f"{site.name}: wrong {text}" for text in site.wrong]
        found += [f"{site.name}: outgoing/internal call delivered: {key}"
                  for key in site.not_incoming_delivered]
        found += [f"{site.name}: recording lost: {key}" for key in site.recordings_lost]
        found += [f"{site.name}: {text}" for text in site.wrong_length]
        found += [f"{site.name}: WAV deleted before its upload: {key}"
                  for key in site.deleted_early]
        found += [f"{site.name}: parked by an outage: {key}" for key in site.parked_by_outage]
        found += [f"{site.name}: not done after the clean run: {text}" for text in site.not_done]
        found += [f"{site.name}: request failed verification: {text}" for text in site.rejected]
    found += [f"duplicate outside the stated window: {text}"
              for text in result.unexplained_duplicates]
    if result.tally.attempts_by_outage:
        found.append(f"{result.tally.attempts_by_outage} attempts charged during outages")
    if result.tally.attempts_by_local:
        found.append(f"{result.tally.attempts_by_local} attempts charged by a local failure")
    found += [f"run raised: {text}" for text in result.tally.runs_raised]
    return found
