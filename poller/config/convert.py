"""Turning a parsed TOML document into the config dataclasses: each value checked against
its field's type, unknown keys and wrong types reported as problems naming the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from poller.config.schema import Seconds, Secret, parse_duration

MAX_SECONDS = 3650 * 86400


def build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"[{prefix}] must be a table")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for unknown in sorted(set(data) - names):
        problems.append(f"unknown key {_join(prefix, unknown)!r}")
    values = {}
    for name in names & set(data):
        values[name] = _convert(hints[name], data[name], _join(prefix, name), problems)
    try:
        return cls(**values)
    except TypeError:  # only reached when a problem was already recorded
        return cls()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, problems)  # type: ignore[arg-type]
    if hint is Seconds:
        if not isinstance(value, str):
            problems.append(f"{key} must be a duration string such as \"10m\"")
            return Seconds(0)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
            return Seconds(0)
        if seconds > MAX_SECONDS:  # later sums with dates would overflow
            problems.append(f"{key}: {value!r} is more than ten years (3650d)")
            return Seconds(0)
        return Seconds(seconds)
    if hint is Secret:
        if not isinstance(value, str):
            # never echo a secret, even a mistyped one (`password = 12345678` unquoted)
            problems.append(f"{key} must be a string (quote it; value not shown)")
            return Secret("")
        return Secret(value)
    if hint is bool:
        return _expect(value, bool, key, problems, False)
    if hint is int:
        if isinstance(value, bool):
            problems.append(f"{key} must be an integer")
            return 0
        return _expect(value, int, key, problems, 0)
    if hint is str:
        return _expect(value, str, key, problems, "")
    if isinstance(hint, types.UnionType):  # `str | tuple[str, ...]`: a word or a list of them
        if isinstance(value, str):
            return value
        return _convert(tuple[str, ...], value, key, problems)
    if typing.get_origin(hint) is tuple:
        items = _expect(value, list, key, problems, [])
        if any(not isinstance(item, str) for item in items):
            problems.append(f"{key} must be a list of strings")
            return ()
        return tuple(items)
    if typing.get_origin(hint) is Mapping:
        table = _expect(value, dict, key, problems, {})
        bad = [k for k, v in table.items() if not isinstance(v, str)]
        for name in bad:
            # a value may be a credential (an Authorization header): never echoed
            problems.append(f"{key}.{name} must be a string")
        kind = typing.get_args(hint)[1]  # str, or Secret for values that may be credentials
        return {k: kind(v) for k, v in table.items() if isinstance(v, str)}
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not a user one


def _expect(value: Any, kind: type, key: str, problems: list[str], fallback: Any) -> Any:
    if isinstance(value, kind):
        return value
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
             dict: "a table"}
    problems.append(f"{key} must be {names.get(kind, kind.__name__)}, not {value!r}")
    return fallback
