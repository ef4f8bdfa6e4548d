"""What the poller and its encoder child say to each other: a job per line, and the exit codes
that tell the poller whose fault a failed encode is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXIT_UNREADABLE, EXIT_NO_DECODER = 3, 4
# the MP3 could not be written (state.dir/tmp refuses writes: full, read-only, not ours)
EXIT_CANNOT_WRITE = 5


@dataclass(frozen=True)
class Job:
    """One call's recordings to encode into `output`."""

    output: Path
    inputs: list[Path]
    call_seconds: float | None = None  # the call's duration: bounds each recording's length

    @classmethod
    def from_line(cls, line: bytes) -> Job:
        data = json.loads(line)
        seconds = data.get("call_seconds")
        return cls(Path(data["output"]), [Path(p) for p in data["inputs"]],
                   None if seconds is None else float(seconds))

    def to_line(self) -> bytes:
        return json.dumps({"output": str(self.output), "inputs": [str(p) for p in self.inputs],
                           "call_seconds": self.call_seconds}).encode() + b"\n"
