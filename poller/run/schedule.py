"""When a call that is not delivered yet is tried: its next attempt after a failure, or parked.

Pure functions of plain values, with table tests of their own (tests/test_marks.py).
"""

from __future__ import annotations

import datetime as dt

from poller.config.schema import RetryConfig
from poller.run.options import RunOptions


def next_attempt(attempts: int, retry: RetryConfig, now: dt.datetime) -> dt.datetime | None:
    """When a call that has now failed `attempts` times is tried again (naive UTC, as `now`);
    None once it has used `retry.max_attempts`: it is parked until `poller retry`.

    The delay doubles from `retry.backoff` per attempt, up to `retry.max_backoff`.
    """
    if attempts >= retry.max_attempts:
        return None
    # the exponent is capped: max_backoff is reached long before, and floats overflow
    delay = min(retry.backoff * 2 ** min(attempts - 1, 40), retry.max_backoff)
    return now + dt.timedelta(seconds=delay)


def due_before(options: RunOptions, now: dt.datetime) -> dt.datetime | None:
    """The moment next attempts are compared with (naive UTC); None (all due) for a backfill,
    which retries the failed calls of its range at once, those backing off included."""
    return None if options.backfill else now
