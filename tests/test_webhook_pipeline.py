"""Whole runs into the loopback webhook receiver (every request verified with
`standardwebhooks`): the sample corpus arrives with the archive's call fields, and under every
fault of the receiver nothing is lost, nothing charged for an outage, no call under two ids."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import (
    DIRECT_ANSWERED,
    IVR_NOBODY,
    QUEUE_ABANDON,
    RING_GROUP_ANSWERED,
    archived,
    clone_call,
    entry_of,
    is_mp3,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
    open_ledger,
    run_cli,
    write_config,
)
from webhook_receiver import WebhookReceiver

from poller.errors import ConfigError, ExitCode, LockHeld
from poller.model import Stage
from poller.ops import status
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

FIRST = msk("2026-11-26 10:00")
NOW = msk("2026-11-26 12:00")
CUSTOMER = "+79161234567"


def sections(tmp_path: Path, recordings: Path, **changes: Any) -> dict[str, Any]:
    directory = tmp_path / "callers.csv"
    directory.write_text("number,name,id,inn\n8 (916) 123-45-67,ООО «Ромашка»,17,7701234567\n",
                         encoding="utf-8")
    return {"recordings": {"dir": str(recordings)},
            "callers": {"country": "RU", "csv": str(directory), "fields": ["inn"]},
            "incidents": {"statuses": ["unanswered", "busy"], "fold": "30m",
                          "attributes": {"title": "Missed call from {caller_name} {number}"}},
            **changes}


def webhook_site(tmp_path: Path, url: str, receiver: WebhookReceiver, recordings: Path,
                 **changes: Any) -> Any:
    folder = tmp_path / "webhook"
    target = {"kind": "webhook", "webhook": {"url": receiver.url, "secret": receiver.secret,
                                             "timeout": "1s"}}
    return make_config(folder, url, target=target, **sections(tmp_path, recordings, **changes))


def archive_site(tmp_path: Path, url: str, recordings: Path) -> Any:
    return make_config(tmp_path / "archive-site", url, **sections(tmp_path, recordings))


def from_customer(sample_rows: list[dict[str, Any]], uniqueid: str, when: str,
                  **options: Any) -> list[dict[str, Any]]:
    return clone_call(legs_of(sample_rows, uniqueid), local(when), src=CUSTOMER, cnum=CUSTOMER,
                      clid=f'"" <{CUSTOMER}>', **options)


def run(config: Any, now: dt.datetime = NOW, **options: Any) -> Any:
    return run_once(config, RunOptions(now=now, **options))


def assert_verified_and_one_id_per_call(receiver: WebhookReceiver) -> None:
    assert not receiver.seen.rejected
    two = {key: ids for key, ids in receiver.ids_by_call().items() if len(ids) > 1}
    assert not two, f"calls under two ids: {two}"


def test_the_corpus_arrives_with_the_archives_fields(tmp_path, cdr_db, sample_rows,
                                                     recordings_dir):
    """Every outcome of the samples, late inserts, a backfill beside a cron run, recordings,
    callers and incidents: the receiver holds what the archive holds."""
    cdr_db.insert(sample_rows)
    with WebhookReceiver() as receiver:
        config = webhook_site(tmp_path, cdr_db.url, receiver, recordings_dir)
        assert run(config, FIRST).exit_code == ExitCode.OK
        # inserted after the first run: a long call that began before its watermark, a
        # customer ringing three times (an incident, two joins), one recorded call
        late = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), local("2026-11-26 09:20"),
                          duration=2390, billsec=2380, monitor=recordings_dir)
        customer = [from_customer(sample_rows, IVR_NOBODY, "2026-11-26 10:10"),
                    from_customer(sample_rows, QUEUE_ABANDON, "2026-11-26 10:20"),
                    from_customer(sample_rows, IVR_NOBODY, "2026-11-26 10:31")]
        recorded = clone_call(legs_of(sample_rows, RING_GROUP_ANSWERED),
                              local("2026-11-26 10:40"), monitor=recordings_dir)
        cdr_db.insert(late + customer[0] + recorded)
        assert run(config, msk("2026-11-26 10:50")).exit_code == ExitCode.OK
        cdr_db.insert(customer[1])
        assert run(config, msk("2026-11-26 10:55")).exit_code == ExitCode.OK
        cdr_db.insert(customer[2])
        # history before source.start, for a backfill, and a cron run working beside it
        history = [clone_call(legs_of(sample_rows, uniqueid), local(f"2026-11-26 08:{m}"),
                              monitor=recordings_dir)
                   for uniqueid, m in ((DIRECT_ANSWERED, 10), (RING_GROUP_ANSWERED, 20))]
        cdr_db.insert([row for rows in history for row in rows])
        # cron runs every moment while the backfill works (each gives way or delivers, the
        # backfill releases the lock between days)
        done = threading.Event()
        outcomes: list[str] = []

        def cron() -> None:
            while not done.is_set():
                try:
                    outcomes.append(run(config).exit_code.name)
                except LockHeld:
                    outcomes.append("gave way")
                time.sleep(0.02)

        beside = threading.Thread(target=cron)
        beside.start()
        try:
            backfill = run(config, since=local("2026-11-26 08:00"))
        finally:
            done.set()
            beside.join(timeout=120)
        assert backfill.exit_code == ExitCode.OK and backfill.delivered_count >= 2  # history
        assert outcomes and set(outcomes) <= {"OK", "gave way"}
        assert run(config).exit_code == ExitCode.OK

        archive = archive_site(tmp_path, cdr_db.url, recordings_dir)
        assert run(archive, since=local("2026-11-26 08:00")).exit_code == ExitCode.OK
        records = archived(tmp_path / "archive-site")
        calls = receiver.calls()
        assert len(calls) == len(records) == 23 + 4 + 1 + 2
        assert calls == records  # every field, caller and incident fields included
        assert_verified_and_one_id_per_call(receiver)
        assert len(receiver.seen.requests) == len(receiver.seen.messages)  # no repeat at all

        messages = {m.payload["call"]["key"]: m for m in receiver.of_type("call.received")}
        with_mp3 = {key for key, record in records.items() if record["recording"]}
        assert {key for key, m in messages.items() if m.recording} == with_mp3
        assert len(with_mp3) >= 10
        for key in with_mp3:
            message = messages[key]
            assert message.filename == f"{key}.mp3" == records[key]["recording"]
            mp3 = next((tmp_path / "archive-site" / "archive").rglob(f"{key}.mp3"))
            assert message.recording == mp3.read_bytes()
        assert is_mp3(mp3)

        (opened,) = receiver.of_type("incident.opened")
        incident = opened.payload["incident"]
        assert incident["key"] == key_of(customer[0])
        assert incident["attributes"] == {"title": f"Missed call from ООО «Ромашка» {CUSTOMER}"}
        joined = [m.payload for m in receiver.of_type("incident.joined")]
        assert [p["call"] for p in joined] == [key_of(customer[1]), key_of(customer[2])]
        assert joined[-1]["incident"]["joined"] == [key_of(customer[1]), key_of(customer[2])]
        assert calls[key_of(customer[2])]["incident"] == key_of(customer[0])


def test_faults_of_the_receiver_lose_nothing_and_charge_no_call_for_an_outage(
        tmp_path, cdr_db, sample_rows, recordings_dir):
    """500, 429 with Retry-After, a reset before the body is read, a reply lost after the
    call was stored, a receiver slower than the timeout, a 400 for one call; then clean runs."""
    cdr_db.insert(sample_rows)
    keys = sorted({key_of([row]) for row in sample_rows})
    with WebhookReceiver() as receiver:
        config = webhook_site(tmp_path, cdr_db.url, receiver, recordings_dir,
                              retry={"max_attempts": 3, "backoff": "1m", "max_backoff": "1m"})
        # 500: the run stops, nobody charged, it exits 1 and says the target is down
        receiver.fail_next("http500", event="call.received")
        report = run(config, FIRST)
        assert report.exit_code == ExitCode.PARTIAL and report.target_down_since
        assert report.failures == 0 and not receiver.calls()
        # 429 with Retry-After: 2 minutes: no request before then, nobody charged
        receiver.fail_next("http429", retry_after="120")
        report = run(config, FIRST + dt.timedelta(minutes=1))
        assert report.exit_code == ExitCode.PARTIAL and report.failures == 0
        overview = status.collect(config, FIRST + dt.timedelta(minutes=2))
        assert status.to_json(overview)["target"]["not_before"] == \
            "2026-11-26T10:03:00+03:00"
        assert "it asked for no request before 2026-11-26 10:03:00 +03:00" in \
            status.render(overview)
        requests = len(receiver.seen.requests) + receiver.seen.pings
        report = run(config, FIRST + dt.timedelta(minutes=2))
        assert report.exit_code == ExitCode.PARTIAL
        assert "no request before" in report.unavailable[0]
        assert len(receiver.seen.requests) + receiver.seen.pings == requests
        with open_ledger(config) as ledger:
            assert all(e.attempts == 0 for e in ledger.entries([Stage.SEEN], limit=100))
        # a reply lost after the receiver stored the call, a reset before a body was read,
        # a receiver slower than the timeout, and one call the receiver refuses for good
        refused = keys[3]
        receiver.refuse(refused)
        receiver.fail_next("lost_reply", event="call.received")
        receiver.fail_next("reset")
        receiver.fail_next("slow", event="call.received", delay=1.5)
        clock = FIRST + dt.timedelta(minutes=4)
        for _ in range(6):
            run(config, clock)
            clock += dt.timedelta(minutes=2)
        assert {kind for kind, _ in receiver.seen.switched} == {
            "http500", "http429", "lost_reply", "reset", "slow", "http400"}
        # charged: the call the receiver refused (parked, its reply in `status`), and at most
        # those whose request was cut while the receiver answered otherwise (reset, lost
        # reply, slow) -- never a call for an outage
        with open_ledger(config) as ledger:
            charged = {e.key: e for e in ledger.entries(list(Stage), limit=100) if e.attempts}
        assert charged[refused].stage == Stage.FAILED and len(charged) <= 4
        assert "HTTP 400 Bad Request: {\"error\": \"no customer for call" in \
            (charged[refused].last_error or "")
        receiver.clear_failures()
        with open_ledger(config) as ledger:  # `poller retry KEY`, the receiver fixed
            ledger.requeue_failed([refused])
        report = run(config, clock + dt.timedelta(minutes=5))
        assert report.exit_code == ExitCode.OK, report.summary()

        delivered = receiver.calls()
        incoming = {k for k in keys if entry_of(config, k).stage == Stage.DONE}
        assert set(delivered) == incoming and len(incoming) == 23  # nothing lost
        assert_verified_and_one_id_per_call(receiver)
        # the repeats are the lost reply's and the slow reply's calls, under the same id
        repeats = len(receiver.seen.requests) - len(receiver.seen.messages)
        assert 1 <= repeats <= 2


def test_a_redirect_stops_the_run_as_a_config_error(tmp_path, cdr_db, sample_rows,
                                                    recordings_dir):
    cdr_db.insert(legs_of(sample_rows, DIRECT_ANSWERED))
    with WebhookReceiver() as receiver:
        config = webhook_site(tmp_path, cdr_db.url, receiver, recordings_dir)
        receiver.redirect = "https://helpdesk.example/new-hook"
        with pytest.raises(ConfigError) as raised:
            run(config, FIRST)
        assert "https://helpdesk.example/new-hook" in str(raised.value)
        assert entry_of(config, key_of(legs_of(sample_rows, DIRECT_ANSWERED))).attempts == 0


def test_no_secret_in_any_output(tmp_path, cdr_db, sample_rows, recordings_dir):
    """The secret, the URL's secret path and a credential header appear in no log line (debug
    included), `check`, `status`, the ledger or the metrics, whatever the receiver answers."""
    cdr_db.insert(sample_rows)
    with WebhookReceiver() as receiver:
        token = "Bearer Tk9-credential-Qz4"
        config = write_config(tmp_path, cdr_db.url, recordings={"dir": str(recordings_dir)},
                              target={"kind": "webhook", "webhook": {
                                  "url": receiver.url, "secret": receiver.secret,
                                  "timeout": "1s", "headers": {"Authorization": token}}})
        receiver.refuse(key_of(legs_of(sample_rows, DIRECT_ANSWERED)))
        receiver.fail_next("lost_reply", event="call.received")
        receiver.fail_next("http500")
        outputs = [run_cli("-v", "--config", str(config), *command) for command in (
            ["run", "--metrics-file", str(tmp_path / "state" / "poller.prom")], ["check"],
            ["status"], ["status", "--json"])]
        assert [o.exit_code for o in outputs] == [1, 0, 0, 0], [o.output for o in outputs]
        texts = [o.output for o in outputs]
        texts += [p.read_bytes().decode("utf-8", "replace")
                  for p in (tmp_path / "state").rglob("*") if p.is_file()]
        text = "\n".join(texts)
        assert "HTTP 400 Bad Request" in text and "HTTP 500" in text  # the failures are shown
        secret = receiver.secret.removeprefix("whsec_")
        for hidden in (secret, receiver.path, "Tk9-credential-Qz4"):
            assert hidden not in text
