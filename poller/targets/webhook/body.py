"""The bodies of the webhook's requests: JSON for an event without a file, and
multipart/form-data (the call's JSON, then its MP3 streamed from disk) for a call with one."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 256 * 1024  # bytes of the MP3 read and sent at a time


@dataclass(frozen=True)
class Body:
    """A request body that can be read as often as needed (to sign it, then to send it)
    without being held in memory: its Content-Type, its parts, their length in all."""

    content_type: str
    parts: Callable[[], Iterator[bytes]]
    length: int


def to_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_body(payload: dict[str, Any]) -> Body:
    data = to_json(payload)
    return Body("application/json", lambda: iter((data,)), len(data))


def multipart_body(payload: dict[str, Any], mp3: Path, filename: str) -> Body:
    """A part `call` (the JSON) and a part `recording` (audio/mpeg, `filename`), the file read
    from disk in chunks each time the body is read."""
    boundary = f"poller-{secrets.token_hex(16)}"
    head = (f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="call"\r\n'
            "Content-Type: application/json; charset=utf-8\r\n\r\n").encode()
    head += to_json(payload)
    head += (f"\r\n--{boundary}\r\n"
             f'Content-Disposition: form-data; name="recording"; filename="{filename}"\r\n'
             "Content-Type: audio/mpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = mp3.stat().st_size

    def parts() -> Iterator[bytes]:
        yield head
        with open(mp3, "rb") as handle:
            left = size  # exactly what Content-Length promised, even if the file grew
            while left > 0:
                data = handle.read(min(CHUNK, left))
                if not data:
                    raise OSError(f"{mp3} shrank while it was being sent")
                left -= len(data)
                yield data
        yield tail

    return Body(f"multipart/form-data; boundary={boundary}", parts,
                len(head) + size + len(tail))
