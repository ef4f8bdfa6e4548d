"""A known caller, and the call fields a directory row gives a call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A known caller: the directory row of one E.164 number."""

    number: str  # E.164
    name: str
    id: str | None = None
    extra: Mapping[str, str | None] | None = None  # callers.fields → value
    written: str = field(default="", compare=False)  # the number as the directory wrote it

    def fields(self, names: Sequence[str]) -> dict[str, str | None]:
        """The call fields `caller_id`, `caller_name`, `caller_<column>`."""
        return caller_fields(self, names)


def caller_fields(subscriber: Subscriber | None, names: Sequence[str]) -> dict[str, str | None]:
    """The caller fields of a call: all null for an unknown caller."""
    extra = (subscriber.extra or {}) if subscriber else {}
    values: dict[str, str | None] = {
        "caller_id": subscriber.id if subscriber else None,
        "caller_name": subscriber.name if subscriber else None,
    }
    for name in names:
        values[f"caller_{name}"] = extra.get(name) if subscriber else None
    return values
