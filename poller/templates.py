"""The configuration's two kinds of text template, each with its own rules.

A recording name (`recordings.name`) is `str.format` over a leg's cdr columns, format specs
allowed (`{calldate:%Y/%m/%d}`); an incident attribute (`[incidents.attributes]`) is plain
`{field}` over a call's record fields, nothing else. Pure functions: the config check and the
run use the same ones, so a template that loads is one the run can fill.
"""

from __future__ import annotations

import functools
import os
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

from poller.model import Leg

# the cdr columns a recording name may use
RECORDING_COLUMNS = (
    "calldate", "uniqueid", "linkedid", "recordingfile", "src", "dst", "did", "cnum",
    "accountcode", "userfield",
)
# ... of which only FreePBX's cdr table has these (Master.csv and Asterisk's own schemas lack them)
TABLE_ONLY_COLUMNS = ("did", "recordingfile", "cnum")
# the one wildcard a recording name may hold, in its file name: FreePBX names its files
# `in-<did>-<src>-<date>-<time>-<uniqueid>.wav`, and Master.csv has no did to fill in
WILDCARD = "*"


@functools.lru_cache(maxsize=16)  # asked once or twice per call built: parse a template once
def recording_fields(template: str) -> frozenset[str]:
    """The cdr columns a `recordings.name` template uses; ValueError if it is malformed."""
    fields = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"bad field {{{name}}} in {template!r}")
        fields.add(name)
    if not fields:
        raise ValueError(f"{template!r} names no cdr column")
    return frozenset(fields)


def wildcards(template: str) -> int:
    """How many `*` the template's own text holds (a value filled in may hold more)."""
    return sum(literal.count(WILDCARD) for literal, _, _, _ in string.Formatter().parse(template))


def is_pattern(name: str) -> bool:
    """Whether a rendered recording name is a pattern (one `*`, in its file name)."""
    return name.count(WILDCARD) == 1 and "/" not in name.split(WILDCARD, 1)[1]


def sample_leg() -> Leg:
    """A leg with a value of its type in every column a recording name may use: what the
    config check renders a template over, so a template that loads is one the run can fill."""
    import datetime as dt

    return Leg(calldate=dt.datetime(2026, 11, 26, 9, 38, 27),  # noqa: DTZ001 - as calldate is
               uniqueid="1795675107.1",
               linkedid="1795675107.0", sequence=1, clid='"" <+79161002301>',
               src="+79161002301", dst="201", dcontext="from-did-direct",
               channel="PJSIP/provider-00000001", dstchannel="PJSIP/201-00000002",
               lastapp="Dial", duration=9, billsec=6, disposition="ANSWERED",
               did="74951230001", cnum="+79161002301",
               recordingfile="in-74951230001-+79161002301-20261126-093827-1795675107.1.wav",
               accountcode="acct", userfield="field")


def render_recording_name(template: str, leg: Leg) -> str | None:
    """The file a leg names under the template, or None when a column it needs is empty."""
    values: dict[str, object] = {}
    for name in recording_fields(template):
        value = getattr(leg, name, "")
        if isinstance(value, str) and not value.strip():
            return None
        values[name] = value.strip() if isinstance(value, str) else value
    recordingfile = str(values.get("recordingfile", ""))
    if os.path.isabs(recordingfile):
        # older FreePBX stores an absolute path; it is used as it is (and checked later)
        return recordingfile
    name = template.format(**values)
    if wildcards(template) and not is_pattern(name):
        return None  # a value holding `*` (a caller "*97") would make the pattern mean another
    return name


class _SafeFormatter(string.Formatter):
    """str.format limited to plain `{field}`: no attribute or index access (`{key.__class__}`
    would reach into Python objects), no conversions and no format specs — a spec such as
    `{duration:d}` would fail per call at render time, on a value that may be null, instead of
    once at load time."""

    def parse(self, format_string: str) -> Any:
        for literal, name, spec, conversion in super().parse(format_string):
            if name is not None:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    raise ValueError(f"{{{name}}}: only plain field names, e.g. {{number}}")
                if spec or conversion:
                    raise ValueError(f"{{{name}}}: no conversion or format spec allowed")
            yield literal, name, spec, conversion

    def format_field(self, value: Any, format_spec: str) -> str:
        return "" if value is None else str(value)


_FORMATTER = _SafeFormatter()


def attribute_fields(template: str) -> frozenset[str]:
    """The field names a template uses; ValueError for a malformed or unsafe template."""
    try:
        return frozenset(name for _, name, _, _ in _FORMATTER.parse(template) if name is not None)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def check_attribute_templates(templates: Mapping[str, str], fields: Iterable[str]) -> list[str]:
    """Problems with `[incidents.attributes]` (attribute → template) for the config loader."""
    known = set(fields)
    problems = []
    for attribute, template in templates.items():
        try:
            used = attribute_fields(template)
        except ValueError as exc:
            problems.append(f"incidents.attributes.{attribute}: {exc}")
            continue
        for name in sorted(used - known):
            problems.append(f"incidents.attributes.{attribute}: unknown field {{{name}}}")
    return problems


def render_attributes(templates: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, str]:
    """The incident's attributes: each template filled from the call's fields, null as ""."""
    return {attribute: _FORMATTER.vformat(template, (), fields)
            for attribute, template in templates.items()}
