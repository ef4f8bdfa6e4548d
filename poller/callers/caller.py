"""A known caller, and the call fields a directory row gives a call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Caller:
    """A known caller: the directory row of one E.164 number."""

    number: str  # E.164
    name: str
    id: str | None = None
    extra: Mapping[str, str | None] | None = None  # callers.fields → value
    written: str = field(default="", compare=False)  # the number as the directory wrote it

    def fields(self, names: Sequence[str]) -> dict[str, str | None]:
        """The call fields `caller_id`, `caller_name`, `caller_<column>`."""
        return caller_fields(self, names)


def caller_fields(caller: Caller | None, names: Sequence[str]) -> dict[str, str | None]:
    """The caller fields of a call: all null for an unknown caller."""
    extra = (caller.extra or {}) if caller else {}
    values: dict[str, str | None] = {
        "caller_id": caller.id if caller else None,
        "caller_name": caller.name if caller else None,
    }
    for name in names:
        values[f"caller_{name}"] = extra.get(name) if caller else None
    return values
