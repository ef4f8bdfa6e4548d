"""Master.csv's lines: where one ends, which columns it holds, and the leg it is.

Pure functions over bytes. cdr_csv writes each CDR as one line of quoted fields (a `"` inside
a value doubled) and the numbers unquoted; a value may hold a newline (a `lastdata` with one),
so a line ends at the first newline after which its quotes are balanced.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from poller.config.schema import CSV_BASE_COLUMNS
from poller.model import Leg
from poller.source.text import decode_text

NEWCDRCOLUMNS = ("peeraccount", "linkedid", "sequence")
# a line with unbalanced quotes longer than this is a broken line, not a value holding newlines
# (cdr_csv builds a line in a buffer of a few kilobytes)
LONGEST = 64 * 1024
# `1795675107.1`, or `pbx1-1795675107.1` when asterisk.conf sets systemname
_UNIQUEID = re.compile(r"^(?:.+-)?\d{9,11}\.\d+$")


def _column_sets() -> dict[int, tuple[tuple[str, ...], ...]]:
    sets: dict[int, list[tuple[str, ...]]] = {}
    for logged in ((), ("uniqueid",), ("userfield",), ("uniqueid", "userfield")):
        for newer in ((), NEWCDRCOLUMNS):
            columns = (*CSV_BASE_COLUMNS, *logged, *newer)
            sets.setdefault(len(columns), []).append(columns)
    # where two sets have as many fields, the one with uniqueid first
    return {n: tuple(sorted(found, key=lambda c: "uniqueid" not in c)) for n, found in
            sets.items()}


# field count -> the column sets cdr_csv writes with that many (17 and 20 fields: two each)
COLUMN_SETS = _column_sets()


@dataclass(frozen=True)
class Line:
    """One complete line: where it starts (a position along the source) and its bytes,
    without the newline."""

    position: int
    raw: bytes

    @property
    def end(self) -> int:
        """The position just after its newline."""
        return self.position + len(self.raw) + 1


def split_lines(buffer: bytes, position: int) -> tuple[list[Line], int]:
    """The complete lines at the start of `buffer` (which begins at `position`, a line's
    start), and how many bytes they take; the rest is a line not finished yet."""
    lines: list[Line] = []
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            return lines, start
        while buffer.count(b'"', start, end) % 2:
            # the newline is inside a quoted value, unless the line was cut short (a crash
            # mid-write) and another line followed: then the next one is whole on its own
            following = buffer.find(b"\n", end + 1)
            if following < 0:
                if len(buffer) - start > LONGEST:
                    break  # never finished: broken
                return lines, start
            if _whole_line(buffer, end + 1, following) or following - start > LONGEST:
                break
            end = following
        lines.append(Line(position + start, buffer[start:end]))
        start = end + 1


def _whole_line(buffer: bytes, start: int, end: int) -> bool:
    """Whether buffer[start:end] looks like a line of its own: it opens with a quoted field,
    its quotes are balanced, and it has the fields cdr_csv always writes."""
    return (buffer.startswith(b'"', start) and buffer.count(b'"', start, end) % 2 == 0
            and buffer.count(b",", start, end) >= len(CSV_BASE_COLUMNS) - 1)


def fields_of(raw: bytes, legacy_encoding: str) -> list[str]:
    """A line's values (NUL bytes, which a crash can leave in a file, removed)."""
    return fields_of_many([raw], legacy_encoding)[0]


def fields_of_many(raws: Sequence[bytes], legacy_encoding: str) -> list[list[str]]:
    """The values of many lines, parsed by one csv reader (a reader a line costs more than
    the parse); a line whose quotes do not balance (a broken one) is parsed on its own, so
    that it cannot swallow the next."""
    texts = [decode_text(raw.replace(b"\x00", b"").rstrip(b"\r"), legacy_encoding)
             for raw in raws]
    whole = [text.count('"') % 2 == 0 for text in texts]
    parsed = csv.reader(text for text, fine in zip(texts, whole, strict=True) if fine)
    return [next(parsed, []) if fine else next(csv.reader([text]), [])
            for text, fine in zip(texts, whole, strict=True)]


def columns_for(fields: Sequence[str], configured: str | tuple[str, ...]) -> tuple[str, ...] | None:
    """The columns of a line: the configured list, or (`auto`) the set cdr_csv writes with
    that many fields; where two have as many, a uniqueid-shaped value tells. None: no set."""
    if not isinstance(configured, str):
        return configured if len(fields) == len(configured) else None
    found = COLUMN_SETS.get(len(fields), ())
    if len(found) == 2 and not _UNIQUEID.match(fields[len(CSV_BASE_COLUMNS)].strip()):
        return found[1]
    return found[0] if found else None


def settings_of(columns: Sequence[str]) -> str:
    """The cdr.conf [csv] settings a column set comes from, for messages."""
    said = [f"{name} = {'yes' if on else 'no'}" for name, on in (
        ("loguniqueid", "uniqueid" in columns), ("loguserfield", "userfield" in columns),
        ("newcdrcolumns", "linkedid" in columns))]
    return f"{len(columns)} fields ({', '.join(said)})"


# the Leg fields a line fills, in Leg's order after calldate; a column the set lacks is ""
_LEG_TEXT = ("uniqueid", "linkedid", "sequence", "clid", "src", "dst", "dcontext", "channel",
             "dstchannel", "lastapp", "duration", "billsec", "disposition")


@functools.lru_cache(maxsize=32)
def _plan(columns: tuple[str, ...]) -> tuple[int, tuple[int, ...], int, int]:
    """Where a column set keeps start, the Leg fields, accountcode and userfield."""
    def at(name: str) -> int:
        return columns.index(name) if name in columns else -1

    return at("start"), tuple(at(name) for name in _LEG_TEXT), at("accountcode"), \
        at("userfield")


def leg_of(fields: Sequence[str], columns: tuple[str, ...], position: int,
           pbx: str = "") -> Leg:
    """The leg a line is (of the PBX named `pbx`); ValueError when its start is not a
    date-time."""
    start, at, account, user = _plan(columns)
    v = [fields[i] if i >= 0 else "" for i in at]
    return Leg(dt.datetime.fromisoformat(fields[start].strip()), v[0], v[1], _integer(v[2]),
               v[3], v[4], v[5], v[6], v[7], v[8], v[9], _integer(v[10]), _integer(v[11]), v[12],
               accountcode=fields[account] if account >= 0 else "",
               userfield=fields[user] if user >= 0 else "", cursor=position, pbx=pbx)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


# cdr_csv's AMA flag names (a table holds their numbers)
AMAFLAGS = {1: "OMIT", 2: "BILLING", 3: "DOCUMENTATION"}


def cdr_csv_line(row: Mapping[str, Any]) -> str:
    """A cdr row as cdr_csv writes it with loguniqueid, loguserfield and newcdrcolumns: text
    quoted with `"` doubled, numbers and a never-answered `answer` bare. A table keeps whole
    seconds only, so `end` (start + duration) may read a second early, as may `answer`."""
    start = row["calldate"]
    end = start + dt.timedelta(seconds=row["duration"])
    answered = row["billsec"] > 0 or row["disposition"] == "ANSWERED"
    answer = _quoted(f"{end - dt.timedelta(seconds=row['billsec']):%Y-%m-%d %H:%M:%S}") \
        if answered else ""
    fields = [_quoted(row.get(name, "")) for name in CSV_BASE_COLUMNS[:9]]
    fields += [_quoted(f"{start:%Y-%m-%d %H:%M:%S}"), answer, _quoted(f"{end:%Y-%m-%d %H:%M:%S}"),
               str(row["duration"]), str(row["billsec"]), _quoted(row["disposition"]),
               _quoted(AMAFLAGS.get(row.get("amaflags", 3), "DOCUMENTATION"))]
    fields += [_quoted(row.get(name, "")) for name in ("uniqueid", "userfield", "peeraccount",
                                                       "linkedid")]
    return ",".join([*fields, str(row.get("sequence", 0))]) + "\n"


def _quoted(value: Any) -> str:
    return '"' + str(value).replace('"', '""') + '"'
