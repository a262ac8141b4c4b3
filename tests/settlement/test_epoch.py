"""Pure pieces of crash-safe settlement: planning an epoch against the chain's view, the journal record."""

from __future__ import annotations

import os

import pytest

from services.settlement.domain import Decision, plan_epoch
from services.settlement.journal import PendingCommit
from services.settlement.packing import SettleJob

A, B, NODE, DEV = ("0x" + c * 40 for c in "abcd")


def job(client: str, fee: int) -> SettleJob:
    return SettleJob(
        job_id=os.urandom(16),
        client=client,
        fee=fee,
        max_fee=fee * 2,
        node=NODE,
        developer=DEV,
        verifiers=(NODE,),
        contributors=((A, 6000), (B, 4000)),
    )


def test_plan_epoch_splits_by_chain_state_and_escrow():
    j1, j2, j3, j4 = job(A, 10), job(A, 10), job(B, 5), job(B, 50)
    decisions = [Decision(j.job_id.hex(), j) for j in (j1, j2, j3, j4)]
    decisions += [Decision("11" * 16, None, "fingerprint"), Decision("22" * 16, None, "late")]
    states = ["unknown", "unknown", "settled", "reserved", "unknown", "refunded"]
    settles, refunds, final = plan_epoch(decisions, states, {j1.client: 15, j3.client: 0})
    # A covers its first job only; B's reserved job is covered by its reservation; j3 is already final.
    assert settles == [j1, j4]
    assert refunds == [(j2.job_id.hex(), "client escrow 5 below fee 10"), ("11" * 16, "fingerprint")]
    assert [d.job_id for d in final] == [j3.job_id.hex(), "22" * 16]
    with pytest.raises(ValueError):
        plan_epoch(decisions, states[:2], {})


def test_journal_record_round_trip():
    jobs = (job(A, 10**27), job(B, 7))
    commit = PendingCommit(seq=42, settles=jobs, refunds=(("33" * 16, "why"),), clients={"33" * 16: "ab" * 32})
    back = PendingCommit.decode(commit.encode())
    assert back == commit
    with pytest.raises(ValueError, match="version"):
        PendingCommit.decode(b'{"v": 2}')
    # a record written before job events were keyed by client reads back with no clients
    old = b'{"v":1,"seq":1,"created_at":0,"settles":[],"refunds":[["' + b"33" * 16 + b'","why"]]}'
    assert PendingCommit.decode(old).clients == {}


def test_quorum_counts_acceptance_per_result():
    from loranet import protocol as p
    from services.settlement.domain import Quorum
    from tests import factories

    base = factories.verdict()

    def vote(verifier: str, accepted: bool = True, result_hash: str = base.result_hash) -> p.Verdict:
        return base.model_copy(update={"verifier_id": verifier, "accepted": accepted, "result_hash": result_hash})

    quorum = Quorum(2)
    assert quorum.add(vote("a")) is None
    assert quorum.add(vote("a")) is None  # the same verifier twice is one vote
    assert quorum.add(vote("b", result_hash="e" * 64)) is None  # accepting another result
    assert quorum.add(vote("c")) == "settle" and {v.verifier_id for v in quorum.agreed} == {"a", "c"}
    rejected = Quorum(2)
    assert rejected.add(vote("a", False)) is None and rejected.add(vote("b", False)) == "refund"
    assert len(rejected.votes()) == 2
