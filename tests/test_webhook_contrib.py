"""contrib/webhook-receiver/receiver.py, the receiver people start from: it takes what the
webhook target sends, stores each message once, and refuses what is not signed."""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, call_json

from poller.config.schema import WebhookConfig
from poller.model import Call
from poller.targets.webhook.signing import message_id
from poller.targets.webhook.target import WebhookTarget

CALL = call_json(name="Соколов")


def _receiver_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "receiver", ROOT / "contrib" / "webhook-receiver" / "receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    folder = tmp_path / "calls"
    server = _receiver_module().serve(0, folder, secret)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", secret, folder
    finally:
        server.shutdown()
        server.server_close()


def test_calls_and_incidents_are_stored_once(receiver, tmp_path):
    url, secret, folder = receiver
    mp3 = tmp_path / "a.mp3"
    mp3.write_bytes(b"\xff\xfb" + bytes(range(256)) * 100)
    call = Call.from_json(CALL)
    target = WebhookTarget(WebhookConfig(url=url, secret=secret))  # type: ignore[arg-type]
    try:
        webhook_id = target.create(call, call.record(f"{call.key}.mp3", None), mp3)
        target.create(call, call.record(f"{call.key}.mp3", None), mp3)  # a repeat
        target.create_incident(call, webhook_id, {"title": "Missed call"}, [])
        target.update_incident("x", call, {"title": "Missed call"}, ["1795675200.4"])
    finally:
        target.close()
    assert webhook_id == message_id("call.received", call.key)
    stored = sorted(path.name for path in folder.iterdir())
    assert len(stored) == 4 and f"{webhook_id}.mp3" in stored  # one call, its MP3, 2 events
    assert (folder / f"{webhook_id}.mp3").read_bytes() == mp3.read_bytes()
    record = json.loads((folder / f"{webhook_id}.json").read_text(encoding="utf-8"))
    assert record == {"type": "call.received", "call": call.record(f"{call.key}.mp3", None)}
    types = sorted(json.loads(p.read_text())["type"] for p in folder.glob("*.json"))
    assert types == ["call.received", "incident.joined", "incident.opened"]


def test_unsigned_or_badly_signed_requests_are_refused(receiver):
    url, _, folder = receiver
    request = urllib.request.Request(url, data=b'{"type": "call.received"}', headers={
        "Content-Type": "application/json", "webhook-id": "msg_1",
        "webhook-timestamp": "1790000000", "webhook-signature": "v1,AAAA"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    raised.value.close()
    assert raised.value.code == 401
    assert not list(folder.iterdir())
