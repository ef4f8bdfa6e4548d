"""A standby poller (design §13): two hosts run one config against one MariaDB ledger and the
loopback easla, `poller run` started on both at once, again and again, either SIGKILLed at a
random moment. Every call is created exactly once (bar a kill in the lost-reply window), and
the standby takes over in its first run after the active host is killed mid-batch."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from easla_server import EaslaServer
from faults.standby import Standby
from support import (
    DIRECT_ANSWERED,
    IVR_NOBODY,
    MSK,
    QUEUE_ANSWERED,
    cdr_table,
    clone_call,
    legs_of,
)

CALLS = 24
ROUNDS = 12  # both hosts started together; in every third the active one is killed instead


def workload(sample_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CALLS settled calls of the last few hours, in Moscow time as the PBX writes it."""
    now = dt.datetime.now(MSK).replace(tzinfo=None, microsecond=0)
    templates = [legs_of(sample_rows, uid) for uid in (DIRECT_ANSWERED, QUEUE_ANSWERED,
                                                       IVR_NOBODY)]
    return [row for number in range(CALLS)
            for row in clone_call(templates[number % 3],
                                  now - dt.timedelta(hours=3) + dt.timedelta(minutes=7 * number))]


@pytest.mark.slow
@pytest.mark.mariadb
def test_two_hosts_one_config_killed_at_random_create_every_call_once(
        tmp_path, sample_rows, empty_db):
    rng = random.Random(20261126)
    rows = workload(sample_rows)
    with EaslaServer(attributes=None) as easla:
        standby = Standby(tmp_path, empty_db.url + "?charset=utf8mb4",
                          cdr_table(tmp_path, rows), easla)
        try:
            for number in range(ROUNDS):
                if number % 3 == 2:
                    standby.failover(rng)
                else:
                    standby.together(rng)
            standby.settle()
        finally:
            standby.engine.dispose()
        keys = standby.created()
    incoming = {f"kiev:{row['linkedid'] or row['uniqueid']}" for row in rows}
    duplicates = sum(count - 1 for count in keys.values())
    print(f"\nstandby: {len(incoming)} calls, {sum(keys.values())} objects, "
          f"{duplicates} duplicates, {len(standby.kills)} kills "
          f"({standby.window_kills()} in the lost-reply window), "
          f"{standby.takeovers} failovers taken over at once")
    assert standby.problems == []
    assert set(keys) == incoming
    assert duplicates <= standby.window_kills()
    assert standby.kills and standby.takeovers >= 2
