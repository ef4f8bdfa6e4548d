"""`poller.toml(5)`, the configuration's manual page, written from the schema itself: every
key with its type and default as `poller.config.schema` declares them, and the meaning the
README's key table gives it. `python -m poller.cli.tomlpage > man/poller.toml.5` (a test
compares the two, so a key added to the schema without its line in the README fails)."""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from poller import __version__
from poller.cli.manpage import ENVIRONMENT, roff
from poller.config import schema
from poller.config.schema import Config, Seconds, Secret

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| `([\w.]+)` \| [^|]* \| (?:[^|\\]|\\\|)* \| (.*) \|$", re.M)
# the README's typography, as roff's own characters: man renders them on any terminal
_GLYPHS = {"…": "...", "→": "\\(->", "—": "\\(em", "–": "\\(en", "≥": "\\(>=", "≤": "\\(<=",
           "μ": "\\(*m", "×": "\\(mu", "−": "\\-"}
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))

MODE = ("The file holds passwords (or the webhook's secret): install it mode 0640, owner root, "
        "group poller (install -o root -g poller -m 0640), so that the service user reads it "
        "and cannot change it, and nobody else reads it. Secrets may come from the "
        "environment instead, which wins over the file.")


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key as the schema declares it."""

    path: str
    kind: str
    default: str


def keys(cls: type = Config, prefix: str = "") -> Iterator[Key]:
    """Every key of the schema, in declaration order."""
    hints = typing.get_type_hints(cls, vars(schema))
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            yield from keys(typing.cast(type, kind), f"{prefix}{item.name}.")
            continue
        factory: Any = item.default_factory
        value = item.default if item.default is not dataclasses.MISSING else factory()
        yield Key(prefix + item.name, _kind(kind), _toml(value))


def _kind(kind: Any) -> str:
    if kind is Seconds:
        return "duration"
    if kind is Secret:
        return "string (secret)"
    names = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if kind in names:
        return names[kind]
    origin = typing.get_origin(kind)
    if origin is tuple:
        return "list of strings"
    if origin in (dict, Mapping):
        return "table"
    return " or ".join(_kind(part) for part in typing.get_args(kind))


def _toml(value: Any) -> str:
    """A default as it would be written in the file."""
    if isinstance(value, Seconds):
        for unit, size in _UNITS:
            if value >= size and value % size == 0:
                return f'"{int(value // size)}{unit}"'
        return f'"{int(value * 1000)}ms"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{name} = {_toml(item)}" for name, item in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def meanings(readme: str) -> dict[str, str]:
    """The README's key table: key → its meaning, as plain text."""
    found = {}
    for match in _ROW.finditer(readme):
        text = re.sub(r"\[([^]]+)\]\([^)]*\)", r"\1", match.group(2))  # links: their words
        found[match.group(1)] = text.replace("\\|", "|").replace("`", "")
    return found


def _glyphs(text: str) -> str:
    for glyph, escape in _GLYPHS.items():
        text = text.replace(glyph, escape)
    return text


def render(readme: str) -> str:
    """The whole page, in man(7) macros."""
    told = meanings(readme)
    lines = [f'.TH POLLER.TOML 5 "" "asterisk-cdr-poller {__version__}" "File Formats"',
             ".SH NAME", "poller.toml \\- the configuration of poller(1)",
             ".SH SYNOPSIS", "\\fI/etc/poller/poller.toml\\fR",
             ".SH DESCRIPTION", ".PP",
             roff("One TOML file, read by every poller command (--config PATH, else "
                  "$POLLER_CONFIG, else /etc/poller/poller.toml) and validated before anything "
                  "runs: an unknown key, a wrong type or a missing required value stops with "
                  "exit code 2 and a message naming the key. Durations are strings: "
                  '"250ms", "90s", "10m", "4h", "1d". A key left out takes its default.'),
             ".PP", roff(MODE), ".SH KEYS"]
    section = None
    for key in keys():
        table, _, name = key.path.rpartition(".")
        if table != section:
            section = table
            lines.append(f".SS [{roff(table)}]")
        lines += [".TP", f"\\fB{roff(name)}\\fR = {roff(key.default)}",
                  _glyphs(roff(f"{key.kind.capitalize()}. {told.get(key.path, '')}".strip()))]
    lines.append(".SH ENVIRONMENT")
    for term, text in ENVIRONMENT:
        lines += [".TP", f"\\fB{roff(term)}\\fR", roff(text)]
    lines += [".SH SEE ALSO", "\\fBpoller\\fR(1)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(README.read_text(encoding="utf-8")))
