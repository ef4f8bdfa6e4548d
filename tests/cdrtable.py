"""Reading cdr rows pasted as `mysql -t` tables (how administrators share them)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

INTEGER_COLUMNS = {"duration", "billsec", "amaflags", "sequence"}


def parse_table(text: str) -> list[dict[str, Any]]:
    """The rows of a `mysql -t` table; values typed as the FreePBX cdr columns are. The table
    may be indented (pasted into a test beside its assertions)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if not lines:
        return []
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip()[1:-1].split(" | ")]
        if len(cells) != len(header):
            raise ValueError(f"{len(cells)} cells for {len(header)} columns: {line}")
        row: dict[str, Any] = {}
        for name, value in zip(header, cells, strict=True):
            if name in INTEGER_COLUMNS:
                row[name] = int(value)
            elif name == "calldate":
                row[name] = dt.datetime.fromisoformat(value)
            else:
                row[name] = value
        rows.append(row)
    return rows


def load_table(path: Path) -> list[dict[str, Any]]:
    return parse_table(path.read_text(encoding="utf-8"))
