"""The webhook target against a loopback receiver that verifies every request with
`standardwebhooks`: the calls, their MP3s and incidents, the ids, and whose fault each failure
is."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys

import pytest
from standardwebhooks.webhooks import Webhook
from support import ROOT, call_json
from webhook_receiver import WebhookReceiver

from poller.config.load import from_mapping
from poller.config.schema import WebhookConfig, signing_key
from poller.errors import ConfigError, DeliveryError, ExitCode
from poller.targets.keepalive import Reply
from poller.targets.webhook.body import json_body, multipart_body
from poller.targets.webhook.replies import WebhookUnavailable, judge, retry_after
from poller.targets.webhook.signing import message_id, signature
from poller.targets.webhook.target import WebhookTarget

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


# -- the pure parts


def test_signature_is_the_one_standardwebhooks_makes():
    body = json_body({"type": "call.received", "call": {"key": "1.1", "name": "Пётр"}})
    data = b"".join(body.parts())
    when = dt.datetime(2026, 11, 26, 6, 38, 27, tzinfo=dt.UTC)
    ours = signature(signing_key(SECRET), "msg_1", int(when.timestamp()), body.parts)
    assert ours == Webhook(SECRET).sign("msg_1", when, data)


def test_multipart_signature_covers_the_exact_bytes_streamed(tmp_path):
    mp3 = tmp_path / "a.mp3"
    mp3.write_bytes(bytes(range(256)) * 5000)
    body = multipart_body({"type": "call.received", "call": {"key": "k"}}, mp3, "k.mp3")
    data = b"".join(body.parts())
    assert len(data) == body.length
    assert data.count(mp3.read_bytes()) == 1
    headers = {"webhook-id": "msg_x", "webhook-timestamp": str(int(dt.datetime.now(
        dt.UTC).timestamp()))}
    headers["webhook-signature"] = signature(signing_key(SECRET), "msg_x",
                                             int(headers["webhook-timestamp"]), body.parts)
    Webhook(SECRET).verify(data, headers, json_parse=False)  # raises if not


def test_message_ids_are_stable_per_call_and_event_and_never_shared():
    assert message_id("call.received", "1.1") == message_id("call.received", "1.1")
    ids = {message_id("call.received", "1.1"), message_id("call.received", "1.2"),
           message_id("incident.opened", "1.1"), message_id("incident.joined", "1.1", "1.2"),
           message_id("incident.joined", "1.1", "1.3")}
    assert len(ids) == 5
    assert all(i.startswith("msg_") and len(i) == 36 for i in ids)


@pytest.mark.parametrize(("value", "seconds"), [
    ("", None), ("120", 120.0), ("0", None), ("abc", None), ("99999", 3600.0),
    ("Thu, 26 Nov 2026 10:01:30 GMT", 90.0), ("Thu, 26 Nov 2026 09:00:00 GMT", None),
])
def test_retry_after(value, seconds):
    assert retry_after(value, dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)) == seconds


@pytest.mark.parametrize(("status", "verdict"), [
    (200, None), (202, None), (204, None),
    (500, WebhookUnavailable), (502, WebhookUnavailable), (503, WebhookUnavailable),
    (408, WebhookUnavailable), (429, WebhookUnavailable),
    (400, DeliveryError), (404, DeliveryError), (409, DeliveryError), (413, DeliveryError),
    (422, DeliveryError), (401, DeliveryError),
    (301, ConfigError), (307, ConfigError), (308, ConfigError),
])
def test_whose_fault_a_reply_says(status, verdict):
    reply = Reply(status, "Reason", (("Location", "https://new.example/h"),), b"body text")
    if verdict is None:
        judge(reply, "call 1")
        return
    with pytest.raises(verdict) as raised:
        judge(reply, "call 1")
    if verdict is DeliveryError:
        assert not isinstance(raised.value, WebhookUnavailable)
        assert f"HTTP {status} Reason: body text" in str(raised.value)
    if verdict is ConfigError:
        assert "https://new.example/h" in str(raised.value)


def test_a_reply_echoing_a_credential_never_shows_it():
    reply = Reply(400, "Bad Request", (), b"bad header Authorization: Bearer s3cr3t-token")
    with pytest.raises(DeliveryError) as raised:
        judge(reply, "call 1", hidden=("Bearer s3cr3t-token",))
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.parametrize(("secret", "problem"), [
    ("", "target.webhook.secret is required"),
    ("whsec_abc", "too short"),
    ("whsec_not base64!", "not a Standard Webhooks secret"),
])
def test_secret_problems_never_show_the_value(secret, problem):
    data = {"source": {"url": "sqlite:///x.db"}, "target": {"kind": "webhook", "webhook": {
        "url": "https://helpdesk.example/hooks/a-secret-path", "secret": secret}}}
    with pytest.raises(ConfigError) as raised:
        from_mapping(data, env={})
    assert problem in str(raised.value)
    if secret:
        assert secret not in str(raised.value)
    assert "a-secret-path" not in str(raised.value)


def test_secret_from_the_environment_wins():
    data = {"source": {"url": "sqlite:///x.db"}, "target": {"kind": "webhook", "webhook": {
        "url": "https://helpdesk.example/h", "secret": "whsec_abc"}}}
    config = from_mapping(data, env={"POLLER_WEBHOOK_SECRET": SECRET})
    assert config.target.webhook.secret == SECRET
    assert SECRET not in repr(config)


def test_headers_the_poller_sets_cannot_be_configured():
    data = {"source": {"url": "sqlite:///x.db"}, "target": {"kind": "webhook", "webhook": {
        "url": "https://helpdesk.example/h", "secret": SECRET,
        "headers": {"webhook-id": "x", "Bad Name": "y", "X-Ok": "a\r\nInjected: 1"}}}}
    with pytest.raises(ConfigError) as raised:
        from_mapping(data, env={})
    text = str(raised.value)
    assert "headers.webhook-id: set by the poller" in text
    assert "not a header name: 'Bad Name'" in text
    assert "headers.X-Ok: a control character" in text and "Injected" not in text


def test_world_readable_config_with_the_secret_is_warned_about(tmp_path, caplog):
    from poller.config.load import load

    path = tmp_path / "poller.toml"
    path.write_text(f'[source]\nurl = "sqlite:///x.db"\n[target]\nkind = "webhook"\n'
                    f'[target.webhook]\nurl = "https://h.example/h"\nsecret = "{SECRET}"\n')
    path.chmod(0o644)
    load(path, env={})
    assert "readable by every user" in caplog.text
    assert SECRET not in caplog.text


# -- against the receiver


def _target(receiver: WebhookReceiver, **options) -> WebhookTarget:
    return WebhookTarget(WebhookConfig(url=receiver.url, secret=receiver.secret,  # type: ignore[arg-type]
                                       **options))


def test_opening_pings_and_keeps_one_connection():
    with WebhookReceiver() as receiver:
        target = _target(receiver)
        try:
            assert receiver.seen.pings == 1
            assert target.answers()
            assert target.answers()
        finally:
            target.close()
        assert receiver.seen.pings == 3
        assert receiver.seen.connections == 1
        assert not receiver.seen.rejected


def test_a_receiver_refusing_the_signed_ping_is_a_config_error():
    with WebhookReceiver() as receiver:
        config = WebhookConfig(url=receiver.url, secret=SECRET)  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as raised:
            WebhookTarget(config)
        assert "HTTP 401" in str(raised.value)
        assert receiver.path not in str(raised.value)  # the URL's path may be a credential


def test_a_redirect_is_not_followed_and_names_the_location():
    with WebhookReceiver() as receiver:
        receiver.redirect = "https://moved.example/hooks"
        with pytest.raises(ConfigError) as raised:
            _target(receiver)
        assert "https://moved.example/hooks" in str(raised.value)
        assert not receiver.seen.requests


def test_nothing_listening_is_an_outage():
    receiver = WebhookReceiver()
    config = WebhookConfig(url="http://127.0.0.1:9/h", secret=receiver.secret)  # type: ignore[arg-type]
    with pytest.raises(WebhookUnavailable):
        WebhookTarget(config)


def test_extra_headers_are_sent():
    with WebhookReceiver() as receiver:
        target = _target(receiver, headers={"Authorization": "Bearer t", "X-Pbx": "office"})
        target.close()
        assert receiver.seen.last_ping is not None
        headers = dict(receiver.seen.last_ping.headers)
        assert headers["Authorization"] == "Bearer t" and headers["X-Pbx"] == "office"
        assert headers["User-Agent"] == "asterisk-cdr-poller"


CLIENT = """
import json, re, sys
from pathlib import Path
from poller.config.schema import WebhookConfig
from poller.model import Call
from poller.targets.webhook.target import WebhookTarget
def rss(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
url, secret, mp3, call = sys.argv[1:]
target = WebhookTarget(WebhookConfig(url=url, secret=secret, timeout=30.0))
call = Call.from_json(json.loads(call))
before = rss("VmRSS")
target.create(call, call.record(call.key + ".mp3", None), Path(mp3))
print(json.dumps({"before_kb": before, "peak_kb": rss("VmHWM")}))
"""


@pytest.mark.slow  # uploads 30 MB
def test_a_30_mb_recording_is_sent_with_memory_flat(tmp_path):
    """The client grows by less than the file: the body is signed and sent from disk."""
    mp3 = tmp_path / "big.mp3"
    with open(mp3, "wb") as handle:
        for _ in range(30):
            handle.write(bytes(range(256)) * 4096)  # 1 MiB
    call = call_json()
    with WebhookReceiver() as receiver:
        out = subprocess.run([sys.executable, "-c", CLIENT, receiver.url, receiver.secret,
                              str(mp3), json.dumps(call)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        growth_mb = (figures["peak_kb"] - figures["before_kb"]) / 1024
        assert growth_mb < 30, f"a 30 MB recording grew the client by {growth_mb:.0f} MB"
        (message,) = receiver.of_type("call.received")
        assert message.recording == mp3.read_bytes()
        assert not receiver.seen.rejected
        print(f"30 MB recording: client peak RSS +{growth_mb:.1f} MB")


def test_check_sends_a_signed_ping_and_says_what_was_answered(tmp_path):
    from poller.ops.check import _target

    with WebhookReceiver() as receiver:
        data = {"source": {"url": "sqlite:///x.db"}, "state": {"dir": str(tmp_path)},
                "target": {"kind": "webhook", "webhook": {"url": receiver.url,
                                                          "secret": receiver.secret}}}
        (result,) = _target(from_mapping(data, env={}))
        assert result.outcome == "ok" and receiver.seen.pings == 1
        assert result.detail.startswith(f"webhook at http://127.0.0.1:{receiver.url[17:22]}")
        assert 'a signed ping answered HTTP 200 OK: {"pong":true}' in result.detail
        assert receiver.path not in result.detail


@pytest.mark.slow  # the demo encodes its recordings
def test_the_demo_delivers_to_a_receiver_as_well(tmp_path):
    from poller.ops.demo import run_demo

    with WebhookReceiver() as receiver:
        report, lines = run_demo(tmp_path / "demo", "poller", receiver.url, receiver.secret)
        assert report.exit_code == ExitCode.OK, lines
        records = list((tmp_path / "demo" / "archive").rglob("*.json"))
        calls = receiver.calls()
        archived = {json.loads(p.read_text())["key"]: json.loads(p.read_text())
                    for p in records if not p.name.endswith(".incident.json")}
        assert calls == archived and len(calls) >= 10
        assert receiver.of_type("incident.opened") and not receiver.seen.rejected
        assert any(line.startswith("webhook http://127.0.0.1:") for line in lines)
        config = (tmp_path / "demo" / "poller-webhook.toml").read_text()
        assert receiver.secret not in config and 'kind = "webhook"' in config
