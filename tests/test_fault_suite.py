"""The fault suite's short form (tests/fault_suite.py, where the long form runs too): a PBX
workload delivered over and over while every fault of issue 9 is injected, then one clean run
and the audit of the three targets (easla, the archive, a webhook receiver)."""

from __future__ import annotations

import pytest
from fault_suite import SEED, run_suite
from faults.audit import findings, table
from faults.suite import LABELS, SHORT


@pytest.mark.slow
def test_nothing_lost_nothing_twice_whatever_fails(mysql_server: str) -> None:
    result = run_suite(SHORT, SEED)
    print(table(result))
    missing = [kind for kind in LABELS if not result.tally.injected[kind]]
    assert not missing, f"faults never injected: {missing}\n{table(result)}"
    easla, archive, webhook = result.sites
    for site in result.sites:
        assert site.expected > 50 and site.recordings_expected > 20, table(result)
        assert not site.lost and not site.recordings_lost, table(result)
        assert not site.parked_by_outage, table(result)
        assert not site.not_incoming_delivered, table(result)
    assert easla.wavs_deleted == easla.recordings_attached, table(result)  # after_upload
    assert not result.unexplained_duplicates, table(result)
    # a repeated delivery always carries the webhook-id the receiver already had
    assert not webhook.duplicated and not webhook.rejected, table(result)
    assert webhook.repeats >= 1, table(result)  # the faults did cause repeats
    assert findings(result) == [], table(result)
