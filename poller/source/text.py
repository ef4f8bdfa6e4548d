"""Text from the PBX, as bytes or str: UTF-8 where it is, else the site's legacy code page."""

from __future__ import annotations

from typing import Any


def decode_text(raw: Any, legacy_encoding: str) -> str:
    """UTF-8 where the bytes are UTF-8, else the site's legacy code page; never raises."""
    if type(raw) is not bytes:  # bytes is what the binary casts of _select() give: tested first
        if raw is None:
            return ""
        if isinstance(raw, str):
            return raw
        raw = bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode(legacy_encoding, errors="replace")
