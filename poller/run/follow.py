"""Follow mode: one long-running process that polls, for a systemd service.

The interpreter's start-up and imports are paid once instead of 1,440 times a day. The lock is
held only while a batch is worked, so `poller retry` and a cron-started backfill can run between
polls. SIGTERM (systemctl stop) lets the call in hand finish, then ends the process.

An outage (the cdr database, the target, the recordings' folder, a folder of the poller's own)
is said when it starts, once an hour while it lasts and when it ends, with its length: at a
15 s interval one line per poll would be 240 an hour saying the same thing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from poller.config.schema import Config
from poller.errors import ExitCode, LockHeld, ServiceUnavailable
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.run.probe import Probe

log = logging.getLogger("poller")

REMIND_EVERY = 3600.0  # seconds between the lines saying an outage still lasts


@dataclass
class OutageLog:
    """What follow mode says about outages, decided from each poll's problems (pure)."""

    since: float | None = None  # when the current outage began (the clock's seconds)
    said_at: float = 0.0
    first: str = ""  # what the outage began with

    def after_poll(self, problems: Sequence[str], now: float) -> tuple[int, str] | None:
        """The level and line to log after a poll that met `problems`, or None."""
        if problems:
            what = "; ".join(problems)
            if self.since is None:
                self.since, self.said_at, self.first = now, now, what
                return logging.ERROR, (f"outage: {what}; polling on, no call is charged; said "
                                       "again every hour while it lasts")
            if now - self.said_at >= REMIND_EVERY:
                self.said_at = now
                return logging.ERROR, f"outage for {span(now - self.since)}: {what}"
            return None
        if self.since is None:
            return None
        lasted, began = now - self.since, self.first
        self.since = None
        return logging.WARNING, f"outage over after {span(lasted)} (it began with: {began})"


@dataclass
class LockWait:
    """What follow mode says while another run holds the lock, decided per poll (pure): a
    standby host finds the active one's lock at every full poll, at least once a minute, so
    the wait is said when it starts (or another holder takes the lock) and when it ends; the
    polls in between say it at DEBUG."""

    waiting: bool = False
    host: str | None = None  # the holder's, when the lock said it

    def held(self, host: str | None) -> int:
        """The level of the line for a poll that found the lock held by `host`."""
        level = logging.DEBUG if self.waiting and host == self.host else logging.INFO
        self.waiting, self.host = True, host
        return level

    def got(self) -> str | None:
        """The line for a poll that took the lock, or None when it did not wait for it."""
        if not self.waiting:
            return None
        self.waiting = False
        if self.host is None:
            return "the run lock is free again: polling on"
        return f"took over the run lock from host {self.host}"


def span(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m"
    return f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


def follow(config: Config, interval: float, metrics_file: str | None = None,
           stop: threading.Event | None = None,
           clock: Callable[[], float] = time.monotonic) -> ExitCode:
    """Poll until stopped; returns the exit code of the last poll."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        def request_stop(signum: int, frame: Any) -> None:
            log.info("stopping after the call in hand (signal %d)", signum)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    log.info("following the cdr table every %gs", interval)
    code = ExitCode.OK
    outage, lock = OutageLog(), LockWait()
    probe = Probe(config) if Probe.applies(config) else None
    try:
        while not stop.is_set():
            if probe is not None and probe.quiet(clock()):
                stop.wait(interval)  # nothing new, nothing due: no full poll
                continue
            if probe is not None:
                probe.before_full(clock())
            code = _poll(config, interval, metrics_file, stop, clock, (outage, lock), code)
    finally:
        if probe is not None:
            probe.close()
    return code


def _poll(config: Config, interval: float, metrics_file: str | None, stop: threading.Event,
          clock: Callable[[], float], said_by: tuple[OutageLog, LockWait],
          code: ExitCode) -> ExitCode:
    """One full poll, then the wait for the next; the exit code it leaves."""
    outage, lock = said_by
    problems: Sequence[str]
    try:
        report = run_once(config, RunOptions(should_stop=stop.is_set,
                                             metrics_file=metrics_file, follow=True))
    except LockHeld as exc:
        log.log(lock.held(exc.host), "%s; polling again later", exc)
        stop.wait(interval)  # that poll learnt nothing of an outage
        return code
    except ServiceUnavailable as exc:  # a local outage (ledger, state.dir): poll on
        code, problems = ExitCode.PARTIAL, [str(exc)]
    else:
        code, problems = report.exit_code, report.unavailable
        took = lock.got()
        if took is not None:
            log.info("%s", took)
        if report.new_calls or report.delivered_count or report.failures:
            log.info("run: %s", report.summary())
        else:
            log.debug("run: %s", report.summary())
    said = outage.after_poll(problems, clock())
    if said is not None:
        log.log(*said)
    stop.wait(interval)
    return code
