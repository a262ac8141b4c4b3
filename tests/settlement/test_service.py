"""The settlement service over real NATS and the in-process EVM: verdict in, receipt out, paid once."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from loranet import codec
from loranet import protocol as p
from loranet.runtime import Runtime
from loranet.signing import Identity, sign
from services.settlement.devchain import DevChain
from services.settlement.handlers import SettlementService
from services.settlement.journal import Journal
from services.settlement.settings import SettlementSettings
from tests import factories


async def _wait_stage(js, job_id: str, stage: str, timeout: float = 30) -> p.JobEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await factories.job_events(js, job_id):
            if event.stage == stage:
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {stage} event for {job_id}")


@pytest.fixture(scope="module")
def chain():
    return DevChain.open()


async def test_verdicts_settle_once_refund_and_forgeries(nats_server, chain):
    client = chain.new_account()
    # max_reruns=0: a rejected result is refunded at once (re-runs: test_rejected_result_is_rerun_…)
    settings = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.3, epoch_max_jobs=8, max_reruns=0)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        await asyncio.to_thread(chain.fund, client.address, 10**18)
        await asyncio.to_thread(chain.deposit, client.key, 10**16)
        jobs = [factories.job(adapter_id="", client_address=client.address, max_fee=10**15) for _ in range(3)]
        verdicts = [factories.verdict(factories.result(j)) for j in jobs]
        for v in verdicts + verdicts[:1]:  # one duplicate delivery of the first verdict
            await rt.js.publish(p.verdicts(v.job_id), codec.encode(v))
        receipts = [codec.decode(p.Receipt, (await _wait_stage(rt.js, j.job_id, "settled")).body) for j in jobs]
        for receipt in receipts:
            assert receipt.status == "settled" and sum(x.amount for x in receipt.payouts) == receipt.fee > 0
        assert {r.epoch for r in receipts} == {1}  # one epoch, one transaction
        charged = sum(r.fee for r in receipts)
        assert chain.escrow_of(client.address) == 10**16 - charged
        # A rejecting verdict refunds: nothing charged, the job can never be paid later.
        bad = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        rejected = sign(
            factories.verdict(factories.result(bad)).model_copy(update={"accepted": False}), factories.VERIFIER
        )
        await rt.js.publish(p.verdicts(bad.job_id), codec.encode(rejected))
        await _wait_stage(rt.js, bad.job_id, "refunded")
        assert chain.job_state(bad.job_id) == "refunded"
        # A forged verdict (signed by an unknown key claiming the verifier's) is dead-lettered.
        forged_job = factories.job(adapter_id="", client_address=client.address)
        forged = sign(factories.verdict(factories.result(forged_job)), Identity.generate())
        await rt.js.publish(p.verdicts(forged_job.job_id), codec.encode(forged))
        deadline = time.monotonic() + 20
        while rt.stats["verdicts"].dead_lettered < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert rt.stats["verdicts"].dead_lettered == 1
        assert chain.job_state(forged_job.job_id) == "unknown"
        assert chain.escrow_of(client.address) == 10**16 - charged


async def test_one_unpayable_job_does_not_block_its_epoch(nats_server, chain):
    rich, poor = chain.new_account(), chain.new_account()
    for account, amount in ((rich, 10**16), (poor, 6 * 10**14)):
        await asyncio.to_thread(chain.fund, account.address, amount)
        await asyncio.to_thread(chain.deposit, account.key, amount)
    settings = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.5, epoch_max_jobs=16)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        # The poor client's two jobs each fit its escrow alone, but not together.
        jobs = [factories.job(adapter_id="", client_address=rich.address, max_fee=10**15)] + [
            factories.job(adapter_id="", client_address=poor.address, max_fee=10**15) for _ in range(2)
        ]
        results = []
        for j in jobs:
            r = factories.result(j)
            r = sign(r.model_copy(update={"prompt_tokens": [1] * 100, "output_tokens": [2] * 100}), factories.NODE)
            results.append(r)
        for r in results:
            await rt.js.publish(p.verdicts(r.job_id), codec.encode(factories.verdict(r)))
        # fee per job = 100 prompt * 1e12 + 100 output * 4e12 = 5e14: each poor job fits alone, not both.
        assert (await _wait_stage(rt.js, jobs[0].job_id, "settled")).stage == "settled"
        deadline = time.monotonic() + 30
        states: list[str] = []
        while time.monotonic() < deadline:
            states = sorted(chain.job_state(j.job_id) for j in jobs[1:])
            if states == ["refunded", "settled"]:
                break
            await asyncio.sleep(0.2)
        assert states == ["refunded", "settled"]
        refunded = next(j for j in jobs[1:] if chain.job_state(j.job_id) == "refunded")
        assert "escrow" in (await _wait_stage(rt.js, refunded.job_id, "refunded")).reason
        assert chain.escrow_of(poor.address) == 6 * 10**14 - 5 * 10**14


async def test_only_registered_verifiers_decide_jobs(nats_server, chain):
    """Issue 18: with registered_verifiers_only, a verdict signed by a key that no active verifier bound in
    the Registry is dead-lettered and changes nothing; once the key is staked and registered (paying the
    address its verdicts name), the same verdict settles the job."""
    client = chain.new_account()
    await asyncio.to_thread(chain.fund, client.address, 10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**16)
    settings = SettlementSettings(
        nats_url=nats_server.url, epoch_max_s=0.3, registered_verifiers_only=True, verifier_cache_s=0.1
    )
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        job = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        verdict = factories.verdict(factories.result(job))
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(verdict))
        deadline = time.monotonic() + 20
        while rt.stats["verdicts"].dead_lettered < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert rt.stats["verdicts"].dead_lettered == 1
        assert chain.job_state(job.job_id) == "unknown" and chain.escrow_of(client.address) == 10**16
        staker = chain.new_account(open_tokens=2 * chain.min_stake())
        await asyncio.to_thread(chain.stake, staker.key, chain.min_stake(), factories.VERIFIER.public, factories.ADDR)
        await asyncio.to_thread(chain.register_verifier, staker.key)
        stake = await rt.request(p.SETTLEMENT_STAKE, p.StakeGet(ed25519_key=factories.VERIFIER.public.hex()))
        assert stake.verifier and stake.address == staker.address
        await asyncio.sleep(0.2)  # past the cache of the first answer
        again = factories.verdict(factories.result(job))
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(again), headers={"Nats-Msg-Id": "again"})
        receipt = codec.decode(p.Receipt, (await _wait_stage(rt.js, job.job_id, "settled")).body)
        assert receipt.status == "settled" and chain.job_state(job.job_id) == "settled"


async def test_stake_endpoint_and_cli(nats_server, chain, tmp_path):
    import json
    import os
    import subprocess
    import sys

    node = chain.new_account(open_tokens=2000 * 10**18)
    ed_key = Identity.generate().public
    await asyncio.to_thread(chain.stake, node.key, 1500 * 10**18, ed_key)
    settings = SettlementSettings(nats_url=nats_server.url)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        stake = await rt.request(p.SETTLEMENT_STAKE, p.StakeGet(address=node.address))
        assert stake.stake == 1500 * 10**18 and stake.active and stake.ed25519_key == ed_key.hex()
        assert stake.payout == node.address and stake.min_stake == chain.min_stake()
        cmd = [
            sys.executable,
            "-m",
            "loranet_ops.cli",
            "--nats",
            nats_server.url,
            "--state-dir",
            str(tmp_path),
            "stake",
            node.address,
            "--json",
        ]
        done = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ)
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["stake"] == str(1500 * 10**18) and out["active"] is True and out["address"] == node.address
        nobody = chain.new_account(eth=0).address
        assert (await rt.request(p.SETTLEMENT_STAKE, p.StakeGet(address=nobody))).stake == 0


async def test_contributors_claim_through_the_service_and_cli(nats_server, chain, tmp_path):
    """A data contributor holds no key and no gas: `loranet balance` shows its claimable balance and
    `loranet claim` has the settler move it into its credit, once."""
    import json
    import os
    import subprocess
    import sys

    from services.settlement.packing import SettleJob

    client = chain.new_account(open_tokens=10 * 10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**18)
    node, developer, contributor = (chain.new_account(eth=0).address for _ in range(3))
    job = SettleJob(
        job_id=bytes.fromhex(p.new_job_id()),
        client=client.address,
        fee=10**17,
        max_fee=10**17,
        node=node,
        developer=developer,
        contributors=((contributor, 10_000),),
    )
    await asyncio.to_thread(chain.settle_batch, chain.last_seq() + 1, [job])
    owed = 10**17 * 2000 // 10_000
    settings = SettlementSettings(nats_url=nats_server.url)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())

        def cli(*args: str) -> dict:
            cmd = [sys.executable, "-m", "loranet_ops.cli", "--nats", nats_server.url, "--state-dir", str(tmp_path)]
            done = subprocess.run(
                [*cmd, *args, "--json"], capture_output=True, text=True, timeout=60, env=dict(os.environ)
            )
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        balance = await asyncio.to_thread(cli, "balance", contributor)
        assert balance["claimable"] == str(owed) and balance["credit"] == "0"
        claimed = await asyncio.to_thread(cli, "claim", contributor)
        assert claimed["amount"] == str(owed) and claimed["credit"] == str(owed) and claimed["tx_hash"]
        again = await rt.request(p.SETTLEMENT_CLAIM, p.ClaimBalance(address=contributor))
        assert again.amount == 0 and again.credit == owed and not again.tx_hash
        assert chain.credit_of(contributor) == owed and chain.claimable(contributor) == 0


async def test_rejected_result_slashes_its_staked_node_once(nats_server, chain):
    # The node that signs factories' results stakes under its Ed25519 key.
    staker = chain.new_account(open_tokens=2000 * 10**18)
    await asyncio.to_thread(chain.stake, staker.key, 2000 * 10**18, factories.NODE.public)
    client = chain.new_account()
    await asyncio.to_thread(chain.fund, client.address, 10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**16)
    treasury_before = chain.balance_of(chain.treasury_address)
    settings = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.2, slash_bps=1000, max_reruns=0)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        bad = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        rejected = sign(
            factories.verdict(factories.result(bad)).model_copy(
                update={"accepted": False, "checks": [p.Check(name="fingerprint", ok=False)]}
            ),
            factories.VERIFIER,
        )
        await rt.js.publish(p.verdicts(bad.job_id), codec.encode(rejected))
        event = await _wait_stage(rt.js, bad.job_id, "refunded")
        assert "fingerprint" in event.reason and "slashed 200000000000000000000 wei" in event.reason
        assert chain.node(staker.address).stake == 1800 * 10**18
        # Registry.slash sends to the Registry's treasury (the devnet uses one treasury for both).
        assert chain.balance_of(chain.treasury_address) - treasury_before == 200 * 10**18
        # The same rejected verdict again (a redelivery, a second verifier): no second slash.
        await rt.js.publish(p.verdicts(bad.job_id), codec.encode(rejected))
        await asyncio.sleep(1.0)
        assert chain.node(staker.address).stake == 1800 * 10**18


async def test_reserve_at_admission_then_settle_or_release(nats_server, chain):
    from loranet.errors import RemoteError

    client = chain.new_account()
    await asyncio.to_thread(chain.fund, client.address, 10**18)
    await asyncio.to_thread(chain.deposit, client.key, 3 * 10**15)
    settings = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.2, reservations=True)
    async with Runtime("settlement", settings) as rt:
        service = await SettlementService.open(rt, settings, chain)
        await rt.mount(service.routes())
        jobs = [factories.job(adapter_id="", client_address=client.address, max_fee=10**15) for _ in range(3)]
        asks: list[str] = []
        inner = service._reserve

        async def counted(req):
            asks.append(req.job_id)
            return await inner(req)

        service._reserve = counted  # type: ignore[method-assign]

        async def reserve(job, max_fee=10**15):
            return await rt.request(
                p.SETTLEMENT_RESERVE, p.Reserve(job_id=job.job_id, client_address=client.address, max_fee=max_fee)
            )

        # Reservations asked together go on chain together; asking again is harmless.
        # A scheduler asking again while its first ask is under way (it timed out) waits for that one.
        first = await asyncio.gather(reserve(jobs[0]), reserve(jobs[1]), reserve(jobs[0]))
        assert {r.state for r in first} == {"reserved"} and sorted(asks) == sorted([jobs[0].job_id, jobs[1].job_id])
        assert (await reserve(jobs[0])).available == 10**15
        with pytest.raises(RemoteError) as refused:
            await reserve(jobs[2], max_fee=2 * 10**15)
        assert refused.value.code == "conflict" and "escrow below reserved" in refused.value.message
        assert chain.reserved_of(client.address) == 2 * 10**15
        # A verified job releases its reservation and pays its fee; a released one pays nothing.
        await rt.js.publish(p.verdicts(jobs[0].job_id), codec.encode(factories.verdict(factories.result(jobs[0]))))
        settled = codec.decode(p.Receipt, (await _wait_stage(rt.js, jobs[0].job_id, "settled")).body)
        released = await rt.request(
            p.SETTLEMENT_RELEASE, p.Release(job_id=jobs[1].job_id, reason="expired", client_key=jobs[1].client_key)
        )
        assert released.status == "refunded" and chain.job_state(jobs[1].job_id) == "refunded"
        assert chain.reserved_of(client.address) == 0
        assert chain.escrow_of(client.address) == 3 * 10**15 - settled.fee
        assert (await rt.request(p.SETTLEMENT_RELEASE, p.Release(job_id=jobs[1].job_id))) == released
        # Without the client key, settlement finds the client from the job's earlier events (their subject)...
        reserved = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        assert (await reserve(reserved)).state == "reserved"
        await rt.emit(reserved.job_id, p.Stage.ADMITTED, body=reserved)
        receipt = await rt.request(p.SETTLEMENT_RELEASE, p.Release(job_id=reserved.job_id, reason="expired"))
        event = await _wait_stage(rt.js, reserved.job_id, "refunded")
        assert receipt.status == "refunded" and codec.decode(p.Receipt, event.body) == receipt
        assert (await rt.js.get_last_msg("EVENTS", p.job_events(reserved.client_key, reserved.job_id))).data
        # ... and refuses, before touching the chain, a job that no event or key names.
        nameless = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        assert (await reserve(nameless)).state == "reserved"
        with pytest.raises(RemoteError) as unknown:
            await rt.request(p.SETTLEMENT_RELEASE, p.Release(job_id=nameless.job_id))
        assert unknown.value.code == "not_found" and chain.job_state(nameless.job_id) == "reserved"


async def test_quorum_votes_survive_a_restart(nats_server, chain):

    client = chain.new_account()
    await asyncio.to_thread(chain.fund, client.address, 10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**16)
    second = Identity.generate()
    job = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
    result = factories.result(job)
    first_vote = factories.verdict(result)
    second_vote = sign(
        first_vote.model_copy(
            update={"verifier_id": "verifier-1", "verifier_key": second.public, "verifier_address": "0x" + "2e" * 20}
        ),
        second,
    )
    settings = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.2, verdict_quorum=2)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(first_vote))
        kv = await rt.js.key_value(p.SETTLEMENT_BUCKET)
        deadline = time.monotonic() + 20
        while True:  # counted and acknowledged, one vote short of the quorum
            try:
                await kv.get(f"votes.{job.job_id}")
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    assert chain.job_state(job.job_id) == "unknown"
    # A new settlement process: the first vote comes back from the journal, the second decides.
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(second_vote))
        receipt = codec.decode(p.Receipt, (await _wait_stage(rt.js, job.job_id, "settled")).body)
        assert sorted(x.address.lower() for x in receipt.payouts if x.party == "verifier") == sorted(
            [factories.ADDR, "0x" + "2e" * 20]
        )
        journal = Journal(await rt.js.key_value(p.SETTLEMENT_BUCKET))
        deadline = time.monotonic() + 10
        while (await journal.votes(job.job_id)).verdicts:  # cleared once the job is final
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


# -- re-runs: a finally rejected result's job goes to another node; paid once, at the end -------------


def _result_by(node_id: str, identity: Identity, address: str, job: p.JobRequest, attempt: int) -> p.InferenceResult:
    r = factories.result(job).model_copy(
        update={"node_id": node_id, "node_key": identity.public, "node_address": address, "attempt": attempt}
    )
    return sign(r, identity)


def _verdict_on(result: p.InferenceResult, accepted: bool, verifier_id: str = "verifier-0") -> p.Verdict:
    v = factories.verdict(result).model_copy(
        update={"verifier_id": verifier_id, "accepted": accepted, "checks": [p.Check(name="fingerprint", ok=accepted)]}
    )
    return sign(v, factories.VERIFIER)


async def _reruns(js, want: int, timeout: float = 20) -> list[p.RerunRequest]:
    """The re-runs settlement asked for, as the scheduler's durable would get them."""
    from loranet import topology

    spec = p.SCHEDULER_RERUNS
    sub = await js.pull_subscribe(
        spec.filter_subject, durable=spec.durable, stream=spec.stream, config=topology.consumer_config(spec)
    )
    out: list[p.RerunRequest] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(8, timeout=1)
            except Exception:
                continue
            for m in msgs:
                out.append(codec.decode(p.RerunRequest, m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


@contextlib.asynccontextmanager
async def _settlement_with_reserved_job(nats_server, chain, **settings):
    """A settlement service with re-runs configured by `settings`, and one job reserved in a funded escrow."""
    from loranet import topology

    client = chain.new_account()
    await asyncio.to_thread(chain.fund, client.address, 10**18)
    await asyncio.to_thread(chain.deposit, client.key, 10**16)
    cfg = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.2, **settings)
    async with Runtime("settlement", cfg) as rt:
        await topology.ensure_topology(rt.js)
        await rt.mount((await SettlementService.open(rt, cfg, chain)).routes())
        job = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        await rt.request(
            p.SETTLEMENT_RESERVE, p.Reserve(job_id=job.job_id, client_address=client.address, max_fee=job.max_fee)
        )
        yield rt, job, client


async def test_rejected_result_is_rerun_elsewhere_and_only_the_honest_node_is_paid(nats_server, chain):
    cheater, cheater_id = chain.new_account(open_tokens=2000 * 10**18), Identity.generate()
    await asyncio.to_thread(chain.stake, cheater.key, 2000 * 10**18, cheater_id.public)
    honest_id = Identity.generate()
    honest = chain.new_account(eth=0)
    async with _settlement_with_reserved_job(nats_server, chain, slash_bps=1000, max_reruns=2) as (rt, job, client):
        bad = _result_by("node-0", cheater_id, cheater.address, job, attempt=0)  # the staked cheater
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_verdict_on(bad, False)))
        event = await _wait_stage(rt.js, job.job_id, "rerun")
        assert event.attempt == 1 and event.node_id == "node-0" and "slashed" in event.reason
        [rerun] = await _reruns(rt.js, 1)
        assert rerun.attempt == 1 and rerun.exclude == ["node-0"] and rerun.request == job  # client's signature intact
        assert chain.node(cheater.address).stake == 1800 * 10**18
        assert chain.job_state(job.job_id) == "reserved" and chain.reserved_of(client.address) == job.max_fee
        # Late verdicts on the rejected attempt change nothing: the same rejection again (no second slash,
        # no second re-run), and an acceptance of the cheater's result by another verifier (never paid).
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_verdict_on(bad, False)))
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_verdict_on(bad, True, "verifier-9")))
        await asyncio.sleep(1.5)
        assert chain.job_state(job.job_id) == "reserved" and chain.node(cheater.address).stake == 1800 * 10**18
        assert await _reruns(rt.js, 1, timeout=2) == []
        # The re-run on another node is accepted: settled once, the honest node paid, the reservation released.
        good = _result_by("node-1", honest_id, honest.address, job, attempt=1)
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_verdict_on(good, True)))
        receipt = codec.decode(p.Receipt, (await _wait_stage(rt.js, job.job_id, "settled")).body)
        node_pay = [x for x in receipt.payouts if x.party == "node"]
        assert [x.address for x in node_pay] == [honest.address] and node_pay[0].amount > 0
        assert cheater.address not in {x.address for x in receipt.payouts}
        assert chain.earned(honest.address) == node_pay[0].amount and chain.earned(cheater.address) == 0
        assert chain.job_state(job.job_id) == "settled" and chain.reserved_of(client.address) == 0
        assert chain.escrow_of(client.address) == 10**16 - receipt.fee
        assert sum(x.amount for x in receipt.payouts) == receipt.fee


async def test_reruns_are_bounded_then_refunded(nats_server, chain):
    async with _settlement_with_reserved_job(nats_server, chain, max_reruns=1) as (rt, job, client):
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_verdict_on(factories.result(job), False)))
        await _wait_stage(rt.js, job.job_id, "rerun")
        second = _result_by("node-1", Identity.generate(), chain.new_account(eth=0).address, job, attempt=1)
        await rt.js.publish(p.verdicts(job.job_id), codec.encode(_verdict_on(second, False)))
        event = await _wait_stage(rt.js, job.job_id, "refunded")
        assert "every attempt rejected" in event.reason and "node-0, node-1" in event.reason
        assert [e.stage for e in await factories.job_events(rt.js, job.job_id)].count("rerun") == 1
        assert chain.job_state(job.job_id) == "refunded" and chain.reserved_of(client.address) == 0
        assert chain.escrow_of(client.address) == 10**16
        await _reruns(rt.js, 1, timeout=2)  # drain the re-run this test's missing scheduler never took
