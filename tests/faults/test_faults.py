"""Short fault runs in the default suite: kill -9 settlement, or the chain process, mid-load on a devnet.

The full table (every process, 1,000 jobs each) is `make faults`.
"""

from __future__ import annotations

import pytest

from tests.faults import harness


@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", ["kill_settlement", "kill_chain"])
async def test_kill_mid_load_loses_and_duplicates_nothing(tmp_path, scenario):
    [report] = await harness.run([scenario], n_jobs=30, rate=8, root=tmp_path, settle_timeout=300, adapters=4)
    assert report.admitted == 30
    assert (report.lost, report.duplicated, report.credit_minus_fee) == (0, 0, 0), report
    assert report.settled == 30 and report.serving_after, report
    if scenario == "kill_chain":
        # The chain process came back from its journal: escrow, reservations and settled batches intact.
        log = (tmp_path / "kill_chain" / "logs" / "chain.log").read_text()
        assert log.count('"event":"service.started"') == 2 and '"event":"chain.restored"' in log
