"""Benchmark: the cost of one call to easla end to end, against a raw HTTP POST of the same bytes.

    python bench/easla.py

Starts the loopback SOAP test server in a process of its own (so only the client's CPU is
counted), then measures per call: createObjectref through the poller's client vs a raw keep-alive
POST of the same envelope; and per MB of MP3: the poller's streamed addFile vs a raw POST of the
same envelope vs plain suds (default transport, envelope built in memory). Prints a table.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT))

SERVER = """
import sys, time
sys.path.insert(0, %r)
from easla_server import EaslaServer
with EaslaServer() as server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


def rss_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(field + r":\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def timed(work, repeat: int = 1) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per repetition."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        work()
    return ((time.perf_counter() - wall) / repeat, (time.process_time() - cpu) / repeat)


def raw_post(url: str, body: bytes | Callable[[], bytes], cookie: str, action: str,
             repeat: int) -> tuple[float, float]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action,
               "Cookie": cookie}

    def once() -> None:
        conn.request("POST", parts.path, body=body() if callable(body) else body,
                     headers=headers)
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 200, reply.status

    result = timed(once, repeat)
    conn.close()
    return result


def main() -> None:
    from poller.config.schema import EaslaConfig, Secret
    from poller.model import Call
    from poller.targets.easla.target import PLACEHOLDER, EaslaTarget

    server = subprocess.Popen([sys.executable, "-c", SERVER % str(TESTS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as state:
            config = EaslaConfig(url=url, login="poller", password=Secret("secret"))
            target = EaslaTarget(config, state)
            call = Call.from_json({
                "key": "1795675107.0", "start": "2026-11-26T09:38:27+03:00",
                "end": "2026-11-26T09:38:36+03:00", "number": "+79161002301", "name": "",
                "did": "74951230001", "duration": 9, "talk_time": 6, "wait_time": 3,
                "status": "answered", "answered_by": "201", "incoming": True,
                "recordings": [], "expects_recording": True,
                "first_calldate": "2026-11-26T09:38:27",
                "last_calldate": "2026-11-26T09:38:27"})
            record = call.record(None, None)
            n = 300
            target.create(call, record)  # warm up
            ours = timed(lambda: target.create(call, record), n)
            target.client.options.nosend = True
            ctx = target.client.service.createObjectref(
                objectdef=target.objectdef, parent=None,
                attributes={"item": [{"key": k, "values": {"item": [v]}} for k, v in
                                     (("incoming_call_key", call.key),
                                      ("incoming_call_number", call.number),
                                      ("incoming_call_time", "0:00:09"),
                                      ("status", "incoming_call_answered"))]})
            target.client.options.nosend = False
            cookie = "; ".join(f"{k}={v}" for k, v in target.transport.cookies.items())
            action = target.client.service.createObjectref.method.soap.action
            raw = raw_post(url, ctx.envelope, cookie, action, n)
            rows.append(("createObjectref, no recording", ours, raw, "per call"))

            uploads = []
            for megabytes in (10, 30):  # the poller's uploads first: raw ones raise the peak
                mp3 = Path(state) / f"{megabytes}.mp3"
                with open(mp3, "wb") as handle:  # a MiB at a time: no peak before we measure
                    for _ in range(megabytes):
                        handle.write(bytes(range(256)) * 4096)
                object_id = target.create(call, record)
                before = rss_kb("VmRSS")
                ours = timed(lambda o=object_id, m=mp3: target.attach(o, call, m))
                uploads.append((megabytes, mp3, object_id, ours,
                                (rss_kb("VmHWM") - before) / 1024))
            for megabytes, mp3, object_id, ours, growth in uploads:
                target.client.options.nosend = True
                ctx = target.client.service.addFile(
                    objectref=int(object_id), attribute="incoming_call_file",
                    file={"item": [{"key": "srcname", "value": "x.mp3"},
                                   {"key": "content", "value": PLACEHOLDER}]})
                target.client.options.nosend = False
                prefix, _, suffix = ctx.envelope.partition(PLACEHOLDER.encode())
                action = target.client.service.addFile.method.soap.action
                # by hand: read the file, base64 it, join the envelope, POST it
                raw = raw_post(url, lambda p=prefix, m=mp3, s=suffix:
                               p + base64.b64encode(m.read_bytes()) + s, cookie, action, 1)
                per_mb = tuple(x / megabytes for x in ours)
                raw_mb = tuple(x / megabytes for x in raw)
                rows.append((f"addFile {megabytes} MB (RSS +{growth:.0f} MB)", per_mb, raw_mb,
                             "per MB"))
            target.close()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)

    print(f"{'operation':<36} {'poller ms':>10} {'cpu ms':>8} {'raw ms':>8} {'cpu ms':>8} "
          f"{'wall x':>7} {'cpu x':>6}")
    for name, (w, c), (rw, rc), unit in rows:
        print(f"{name:<36} {w * 1e3:>10.2f} {c * 1e3:>8.2f} {rw * 1e3:>8.2f} {rc * 1e3:>8.2f} "
              f"{w / rw:>7.2f} {c / rc if rc else float('nan'):>6.2f}  {unit}")
    print(json.dumps({"note": "client CPU only; the server runs in another process"}))


if __name__ == "__main__":
    main()
