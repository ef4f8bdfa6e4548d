"""Master.csv's lines: where one ends, which columns it holds, and the leg it is.

Pure functions over bytes. cdr_csv writes each CDR as one line of quoted fields (a `"` inside
a value doubled) and the numbers unquoted; a value may hold a newline (a `lastdata` with one),
so a line ends at the first newline after which its quotes are balanced.
"""

from __future__ import annotations

import csv
import datetime as dt
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
    text = decode_text(raw.replace(b"\x00", b"").rstrip(b"\r"), legacy_encoding)
    return next(csv.reader([text]), [])


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


def leg_of(fields: Sequence[str], columns: Sequence[str], position: int) -> Leg:
    """The leg a line is; ValueError when its start is not a date-time."""
    values = dict(zip(columns, fields, strict=True))
    start = values["start"].strip()
    return Leg(
        calldate=dt.datetime.fromisoformat(start).replace(tzinfo=None, microsecond=0),
        uniqueid=values.get("uniqueid", ""), linkedid=values.get("linkedid", ""),
        sequence=_integer(values.get("sequence", "")), clid=values["clid"], src=values["src"],
        dst=values["dst"], dcontext=values["dcontext"], channel=values["channel"],
        dstchannel=values["dstchannel"], lastapp=values["lastapp"],
        duration=_integer(values["duration"]), billsec=_integer(values["billsec"]),
        disposition=values["disposition"], accountcode=values["accountcode"],
        userfield=values.get("userfield", ""), cursor=position)


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
