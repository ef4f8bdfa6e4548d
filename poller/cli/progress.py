"""A backfill's progress bar on a terminal: one line at the bottom, log lines printed above it.

The bar shows the share of the backfill's range read so far (by time: an empty day moves it
too), never goes back, and ends at 100 % when the range is done. Under cron and systemd there is
no terminal and no bar: log lines say it instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from poller.logs import console_handlers
from poller.run.options import Progress

WIDTH = 30
EVERY = 0.2  # seconds between redraws: a terminal is slower than a fast read
CLEAR = "\r\x1b[K"  # to the line's start, then erase it


class ProgressBar:
    """Called with each Progress of a backfill; draws on `stream` (standard error)."""

    def __init__(self, stream: TextIO, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.line = ""
        self.fraction = 0.0
        self.drawn_at: float | None = None
        self.handlers = console_handlers()
        for handler in self.handlers:
            handler.live = self

    def __call__(self, progress: Progress) -> None:
        # positions within a day may step back (a read starts a lookback early): the bar does not
        self.fraction = max(self.fraction, progress.fraction)
        self.line = (f"[{'#' * int(self.fraction * WIDTH):.<{WIDTH}}] {self.fraction:4.0%}  "
                     f"{progress.position:%Y-%m-%d %H:%M}  {progress.rows:,} rows  "
                     f"{progress.new_calls:,} new calls")
        now = self.clock()
        if self.fraction >= 1.0 or self.drawn_at is None or now - self.drawn_at >= EVERY:
            self.drawn_at = now
            self.redraw()

    def redraw(self) -> None:
        if self.line:
            self.stream.write(CLEAR + self.line)
            self.stream.flush()

    def clear(self) -> None:
        if self.line:
            self.stream.write(CLEAR)
            self.stream.flush()

    def finish(self) -> None:
        """Leave the last state on its own line; log lines go below it from now on."""
        for handler in self.handlers:
            handler.live = None
        if self.line:
            self.redraw()
            self.stream.write("\n")
            self.stream.flush()


def progress_bar() -> ProgressBar | None:
    """A progress bar only on a terminal."""
    return ProgressBar(sys.stderr) if sys.stderr.isatty() else None
