"""A re-dispatched job can come back twice (the "dead" node's late result and the new node's):
settlement pays it once.  Real NATS, the settlement service in-process, the in-process EVM."""

from __future__ import annotations

import asyncio
import time

from loranet import codec
from loranet import protocol as p
from loranet.runtime import Runtime
from loranet.signing import Identity, sign
from services.settlement.devchain import DevChain
from services.settlement.handlers import SettlementService
from services.settlement.settings import SettlementSettings
from tests import factories


def result_from(job: p.JobRequest, node_id: str, identity: Identity, address: str) -> p.InferenceResult:
    res = factories.result(job).model_copy(
        update={"node_id": node_id, "node_key": identity.public, "node_address": address}
    )
    return sign(res, identity)


def verdict_by(res: p.InferenceResult, verifier_id: str, identity: Identity) -> p.Verdict:
    v = factories.verdict(res).model_copy(update={"verifier_id": verifier_id, "verifier_key": identity.public})
    return sign(v, identity)


async def stream_count(js, stream: str, subject: str) -> int:
    sub = await js.pull_subscribe(subject, stream=stream)
    try:
        return len(await sub.fetch(20, timeout=1))
    except Exception:
        return 0
    finally:
        await sub.unsubscribe()


async def test_a_job_resulted_by_two_nodes_is_paid_once(nats_server):
    chain = await asyncio.to_thread(DevChain.open)
    client = chain.new_account()
    node_a, node_b = chain.new_account().address, chain.new_account().address
    settings = SettlementSettings(nats_url=nats_server.url, epoch_max_s=0.3, epoch_max_jobs=8)
    async with Runtime("settlement", settings) as rt:
        await rt.mount((await SettlementService.open(rt, settings, chain)).routes())
        await asyncio.to_thread(chain.fund, client.address, 10**18)
        await asyncio.to_thread(chain.deposit, client.key, 10**16)
        job = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
        late = result_from(job, "node-a", Identity.generate(), node_a)  # the node declared dead
        redone = result_from(job, "node-b", Identity.generate(), node_b)  # the node it was re-dispatched to
        # Two verifier replicas each verdict one of them; both verdicts arrive together, and again.
        verdicts = [
            verdict_by(late, "verifier-0", Identity.generate()),
            verdict_by(redone, "verifier-1", Identity.generate()),
        ]
        for v in verdicts + verdicts:
            await rt.js.publish(p.verdicts(v.job_id), codec.encode(v))
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(chain.job_state, job.job_id) != "settled":
            assert time.monotonic() < deadline, "job not settled"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # several more epochs: a second payment would have happened by now
        credits = [await asyncio.to_thread(chain.credit_of, a) for a in (node_a, node_b)]
        assert sorted(c > 0 for c in credits) == [False, True], credits
        receipts = await stream_count(rt.js, "RECEIPTS", p.receipts(job.job_id))
        assert receipts == 1
        fee_charged = 10**16 - await asyncio.to_thread(chain.escrow_of, client.address)
        assert fee_charged > 0 and max(credits) == fee_charged // 2  # the node's half of one fee, once
