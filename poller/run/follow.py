"""Follow mode: one long-running process that polls, for a systemd service.

The interpreter's start-up and imports are paid once instead of 1,440 times a day. The lock is
held only while a batch is worked, so `poller retry` and a cron-started backfill can run between
polls. SIGTERM (systemctl stop) lets the call in hand finish, then ends the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from poller.config.schema import Config
from poller.errors import ExitCode, LockHeld
from poller.run.options import RunOptions
from poller.run.pipeline import run_once

log = logging.getLogger("poller")


def follow(config: Config, interval: float, metrics_file: str | None = None,
           stop: threading.Event | None = None) -> ExitCode:
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
    while not stop.is_set():
        try:
            report = run_once(config, RunOptions(should_stop=stop.is_set,
                                                 metrics_file=metrics_file))
        except LockHeld as exc:
            log.info("%s; polling again later", exc)
        else:
            code = report.exit_code
            if report.new_calls or sum(report.delivered.values()) or report.failures:
                log.info("run: %s", report.summary())
            else:
                log.debug("run: %s", report.summary())
        stop.wait(interval)
    return code
