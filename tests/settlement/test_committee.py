"""Issue 18: stake-weighted verifier committees drawn at random per run, over real NATS and the in-process
EVM: only members' audits count, k of n decide, a member contradicting the decision is slashed, and a run
whose committee cannot be drawn waits and is refunded at its deadline."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import pytest

from loranet import codec, topology
from loranet import protocol as p
from loranet.runtime import Runtime
from loranet.signing import Identity, sign
from services.settlement import domain
from services.settlement.handlers import SettlementService
from services.settlement.settings import SettlementSettings
from tests import factories

OPEN = 10**18


@dataclass
class Member:
    verifier_id: str
    identity: Identity
    address: str
    staker: str


def _stake_verifier(chain, verifier_id: str, stake: int) -> Member:
    identity = Identity.generate()
    staker = chain.new_account(open_tokens=stake * OPEN)
    payout = chain.new_account().address
    chain.stake(staker.key, stake * OPEN, identity.public, payout)
    chain.register_verifier(staker.key)
    return Member(verifier_id, identity, payout, staker.address)


async def _announce(js, members: list[Member], model_id: str) -> None:
    kv = await topology.ensure_bucket(js, p.VERIFIERS_BUCKET, ttl=30)
    for m in members:
        announcement = p.VerifierAnnouncement(
            verifier_id=m.verifier_id,
            verifier_key=m.identity.public,
            verifier_address=m.address,
            model_ids=[model_id],
            at=time.time(),
        )
        await kv.put(m.verifier_id, codec.encode(sign(announcement, m.identity)))


async def _settlement_with_committees(rt: Runtime, settings, chain, members: list[Member], model: str) -> None:
    """Settlement serving on `rt`, its committee loop running, `members` announced for `model`."""
    service = await SettlementService.open(rt, settings, chain)
    rt.spawn(service.committee_loop(), name="committees")
    await rt.mount(service.routes())
    await _announce(rt.js, members, model)


def _vote(result: p.InferenceResult, m: Member, accepted: bool) -> p.Verdict:
    checks = [p.Check(name="fingerprint", ok=accepted, detail="" if accepted else "chunk 2 off by 0.4")]
    verdict = factories.verdict(result).model_copy(
        update={
            "verifier_id": m.verifier_id,
            "verifier_key": m.identity.public,
            "verifier_address": m.address,
            "accepted": accepted,
            "audited": True,
            "checks": checks,
        }
    )
    return sign(verdict, m.identity)


async def _receipt(js, job_id: str, timeout: float = 30) -> p.Receipt | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return codec.decode(p.Receipt, (await js.get_last_msg("RECEIPTS", p.receipts(job_id))).data)
        except Exception:
            await asyncio.sleep(0.2)
    return None


def test_draw_is_stake_weighted_distinct_and_refuses_too_few():
    candidates = [domain.Candidate(f"v{i}", bytes([i]) * 32, s) for i, s in enumerate([1, 1, 8, 0])]
    rng = random.Random(7)
    firsts = [domain.draw_committee(candidates, 1, rng)[0].verifier_id for _ in range(4000)]
    assert 0.75 < firsts.count("v2") / 4000 < 0.85 and "v3" not in firsts  # 8 of 10 staked; no stake, no draw
    for _ in range(200):
        drawn = domain.draw_committee(candidates, 3, rng)
        assert len({c.verifier_id for c in drawn}) == 3
    with pytest.raises(domain.CommitteeUnavailable, match="3 eligible verifiers"):
        domain.draw_committee(candidates, 4, rng)


def test_quorum_counts_members_audits_only_and_reports_a_split():
    result = factories.result(factories.job(adapter_id=""))
    a, b, c, outsider = (Member(f"v{i}", Identity.generate(), "0x" + f"{i + 1:02x}" * 20, "") for i in range(4))
    members = {m.verifier_id: m.identity.public for m in (a, b)}
    quorum = domain.Quorum(2)
    assert quorum.add(_vote(result, outsider, True)) is None
    assert quorum.seat(members) is None  # the outsider's acceptance is kept, not counted
    cheap = sign(_vote(result, a, True).model_copy(update={"audited": False}), a.identity)
    assert quorum.add(cheap) is None and quorum.waiting_for() == ["v0", "v1"]  # a cheap acceptance is no audit
    assert quorum.add(_vote(result, a, True)) is None
    assert quorum.add(_vote(result, b, False)) == "split"
    assert [v.verifier_id for v in domain.contradicting(quorum.votes(), "settle", result.result_hash())] == ["v1"]
    forged = sign(_vote(result, c, True).model_copy(update={"verifier_id": "v0"}), c.identity)  # v0's name, c's key
    assert not domain.Quorum(1, members).member(forged)


async def test_a_drawn_committee_decides_and_a_contradicting_member_is_slashed(nats_server, chain):
    client = chain.new_account(open_tokens=10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**16)
    members = [
        await asyncio.to_thread(_stake_verifier, chain, f"cv-{i}", stake) for i, stake in enumerate([150, 200, 300])
    ]
    model = "7" * 64  # these verifiers' model: no other test's announced verifier is eligible
    settings = SettlementSettings(
        nats_url=nats_server.url, epoch_max_s=0.3, committee_size=3, verdict_quorum=2, max_reruns=0
    )
    async with Runtime("settlement", settings) as rt:
        await _settlement_with_committees(rt, settings, chain, members, model)
        job = factories.job(adapter_id="", model_id=model, client_address=client.address, max_fee=10**15)
        result = factories.result(job)
        asked = await rt.js.pull_subscribe("results.audit.*", stream="RESULTS")
        # The first verdict, from a verifier no committee can hold (not registered): an audited acceptance
        # that alone would have settled the job.
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(factories.verdict(result)))
        requests: list[p.AuditRequest] = []
        while len(requests) < 3:
            requests += [codec.decode(p.AuditRequest, m.data) for m in await asked.fetch(3 - len(requests), timeout=10)]
        assert sorted(r.verifier_id for r in requests) == ["cv-0", "cv-1", "cv-2"]
        assert all(
            r.result == result and r.needed == 2 and sorted(r.committee) == ["cv-0", "cv-1", "cv-2"] for r in requests
        )
        rejecter, acceptor, last = members
        staked_before = chain.node(rejecter.staker).stake
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_vote(result, rejecter, False)))
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_vote(result, acceptor, True)))
        await asyncio.sleep(1.5)  # one member each way (the outsider's acceptance does not count): undecided
        assert chain.job_state(job.job_id) == "unknown"
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_vote(result, last, True)))
        receipt = await _receipt(rt.js, job.job_id)
    assert receipt is not None and receipt.status == "settled"
    paid = {x.address for x in receipt.payouts if x.party == "verifier"}
    assert paid == {acceptor.address, last.address}
    assert staked_before == 150 * OPEN and chain.node(rejecter.staker).stake == 135 * OPEN  # verifier_slash_bps 1000
    assert chain.node(acceptor.staker).stake == 200 * OPEN and chain.node(last.staker).stake == 300 * OPEN


async def test_a_run_whose_committee_cannot_be_drawn_is_refunded_at_its_deadline(nats_server, chain):
    client = chain.new_account(open_tokens=10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**16)
    lone = await asyncio.to_thread(_stake_verifier, chain, "lone-0", 150)
    model = "8" * 64
    settings = SettlementSettings(
        nats_url=nats_server.url, epoch_max_s=0.3, committee_size=3, verdict_quorum=2, committee_retry_s=0.5
    )
    async with Runtime("settlement", settings) as rt:
        await _settlement_with_committees(rt, settings, chain, [lone], model)
        now = time.time()
        job = factories.job(
            adapter_id="", model_id=model, client_address=client.address, max_fee=10**15, expires_at=now + 4
        )
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_vote(factories.result(job), lone, True)))
        await asyncio.sleep(2)
        assert chain.job_state(job.job_id) == "unknown"  # waiting: one eligible verifier, three needed
        receipt = await _receipt(rt.js, job.job_id, timeout=20)
        event = [e for e in await factories.job_events(rt.js, job.job_id) if e.stage == "refunded"]
    assert receipt is not None and receipt.status == "refunded" and chain.job_state(job.job_id) == "refunded"
    assert "expired before a verifier committee decided it (fewer than 3 eligible verifiers)" in event[0].reason


async def test_a_node_flagged_by_a_quorum_of_registered_verifiers_is_slashed_once(nats_server, chain):
    """Issue 18: a node whose jobs pass but whose statistics two registered verifiers flagged (signed
    flags.<node_id>) is slashed statistics_slash_bps of its bond, once; one flag is not enough, a flag from
    an unregistered key or with a broken signature changes nothing."""
    node_id = Identity.generate()
    operator = await asyncio.to_thread(chain.new_account, open_tokens=200 * OPEN)
    await asyncio.to_thread(chain.stake, operator.key, 200 * OPEN, node_id.public, operator.address)
    a, b, c = [await asyncio.to_thread(_stake_verifier, chain, f"fv-{i}", 150) for i in range(3)]
    stranger = Identity.generate()
    settings = SettlementSettings(nats_url=nats_server.url, verdict_quorum=2, verifier_cache_s=0.1)

    def flag(m: Member | None, **changes) -> bytes:
        if m is None:
            return codec.encode(factories.node_flag(node_id.public, stranger, "stranger", "0x" + "5a" * 20))
        signed = factories.node_flag(node_id.public, m.identity, m.verifier_id, m.address)
        return codec.encode(signed.model_copy(update=changes) if changes else signed)

    async def stake() -> int:
        return (await asyncio.to_thread(chain.node, operator.address)).stake

    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        for data in (flag(None), flag(a, reason="tampered after signing")):
            await rt.js.publish(p.flags("node-0"), data)
        deadline = time.monotonic() + 20
        while rt.stats["flags"].dead_lettered < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert rt.stats["flags"].dead_lettered == 2
        await rt.js.publish(p.flags("node-0"), flag(a))
        await asyncio.sleep(1.0)
        assert await stake() == 200 * OPEN  # one verifier's flag: nothing taken
        await rt.js.publish(p.flags("node-0"), flag(b))
        while await stake() == 200 * OPEN and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await stake() == 180 * OPEN  # statistics_slash_bps 1000
        await rt.js.publish(p.flags("node-0"), flag(c))  # a third agreeing verifier: slashed once only
        await asyncio.sleep(1.0)
    assert await stake() == 180 * OPEN
