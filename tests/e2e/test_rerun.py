"""Re-runs on the embedded devnet: a cheating node's result is rejected, the job runs again elsewhere.

The cheating nodes are the verifier suite's node (tests/verifier/verifier_nodes.py: the real model,
fingerprint and result assembly) running the "no adapter" attack: the job asks for an adapter, the
cheater generates with the base model alone and proves that. Each cheater is a real NATS client with the
`inference` role: it heartbeats into KV `nodes`, pulls `work.<id>` through its durable, publishes its
signed result on `results.<id>` and its `result` event, exactly as services/inference does. Every other
service is the devnet's own process (scheduler, verifier, settlement, datastore, the chain process).
Cheaters are named `a-cheater-*` so that, idle and with every adapter hot, they win routing's tie-break
over the devnet's `node-0` (equal load: lowest node id): the first attempt goes to a cheater.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import nats
import pytest

from loranet import codec, topology
from loranet import protocol as p
from loranet.client import Client
from loranet.signing import Identity, sign
from loranet_ops.demo import build_catalogue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verifier"))
from verifier_nodes import HonestNode  # noqa: E402  (the verifier suite's node: real model and proof)

pytestmark = pytest.mark.timeout(900)


class CheatingNode:
    """A registered node that answers every job it gets with the base model only ("no adapter"), or, with
    `adapter`, with the job's adapter on whatever model its HonestNode holds (a cheaper copy)."""

    def __init__(self, node: HonestNode, url: str, adapter: bool = False) -> None:
        self.node = node
        self.url = url
        self.adapter = adapter
        self.jobs: list[tuple[str, int]] = []  # (job id, attempt) it answered
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> CheatingNode:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        self.kv = await self.js.key_value(p.NODES_BUCKET)
        await self._heartbeat()
        spec = p.node_work(self.node.node_id)
        self.sub = await self.js.pull_subscribe(
            spec.filter_subject, durable=spec.durable, stream=spec.stream, config=topology.consumer_config(spec)
        )
        self._tasks = [asyncio.ensure_future(self._beat()), asyncio.ensure_future(self._work())]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.kv.delete(self.node.node_id)  # gone from the registry: no more work for it
        finally:
            await self.nc.close()

    async def _heartbeat(self) -> None:
        hb = self.node.heartbeat().model_copy(update={"slots_total": 16, "slots_free": 16, "at": time.time()})
        await self.kv.put(self.node.node_id, codec.encode(sign(hb, self.node.identity)))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(2)
            await self._heartbeat()

    async def _work(self) -> None:
        while True:
            try:
                msgs = await self.sub.fetch(1, timeout=1)
            except Exception:
                continue
            for msg in msgs:
                batch = p.WORK_ALL.decode(msg.data)
                for job in (j for segment in batch.segments for j in segment.jobs):
                    attempt = batch.attempt_of(job.job_id)
                    # the attack: no adapter, or the adapter on cheaper weights
                    gen = await asyncio.to_thread(self.node.generate, job, None, False if self.adapter else None)
                    # the scheduler's signed assignment, carried as any node carries it
                    result = self.node.result(job, gen, attempt=attempt, assignment=batch.assignment_of(job.job_id))
                    if job.streams_tokens:  # its text goes out as "generated", like any node's
                        delta = p.TokenDelta(
                            job_id=job.job_id,
                            node_id=self.node.node_id,
                            attempt=attempt,
                            seq=0,
                            text=result.output_text or "?",
                            tokens=len(result.output_tokens),
                            done=True,
                            at=time.time(),
                        )
                        await self.nc.publish(p.job_tokens(job.client_key, job.job_id), p.JOB_TOKENS_ALL.encode(delta))
                    suffix = f":{attempt}" if attempt else ""
                    await self.js.publish(
                        p.results(self.node.node_id),
                        codec.encode(result),
                        headers={"Nats-Msg-Id": f"{job.job_id}:{self.node.node_id}{suffix}"},
                    )
                    event = p.JobEvent(
                        job_id=job.job_id,
                        stage="result",
                        service="inference",
                        node_id=self.node.node_id,
                        body=codec.encode(result),
                        at=time.time(),
                        attempt=attempt,
                    )
                    await self.js.publish(
                        p.job_events(job.client_key, job.job_id),
                        codec.encode(event),
                        headers={"Nats-Msg-Id": f"{job.job_id}:result:{self.node.node_id}{suffix}"},
                    )
                    self.jobs.append((job.job_id, attempt))
                await msg.ack()


@pytest.fixture(scope="module")
def node_model(devnet):
    """The devnet's own base model and demo adapters (same cache), as the verifier suite's node runs them."""
    from loranet.model.generate import ReferenceModel

    config, _ = devnet
    resolved, adapters = build_catalogue(config.model, config.demo_adapters, config.cache_dir or None)
    model = ReferenceModel.from_path(resolved.path, resolved.model_id)
    for name, adapter_path, adapter_id, _ in adapters:
        model.add_adapter(name, adapter_path, adapter_id)
    return model, {adapter_id: name for name, _, adapter_id, _ in adapters}


async def _wait_recorded(client: Client, job_id: str, status: str, timeout: float = 30) -> p.JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = await client.job(job_id)
        if record.status == status or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.2)


async def test_a_cheaters_result_is_rerun_on_an_honest_node_and_paid_once(devnet, node_model):
    from services.settlement.devchain import DevChain

    config, state = devnet
    model, adapter_names = node_model
    chain = DevChain.open(state["rpc_url"])
    cheater = HonestNode("a-cheater", model, adapter_names)
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        # The cheater is a staked node (its Ed25519 key bound in the Registry): slashable. Its OPEN comes
        # from settlement's faucet (the deployer's nonce is settlement's to keep), its gas from setBalance.
        staker = await asyncio.to_thread(chain.new_account)
        await client._request(p.SETTLEMENT_FAUCET, p.Faucet(address=staker.address, amount=2000 * 10**18))
        await asyncio.to_thread(chain.stake, staker.key, 2000 * 10**18, cheater.identity.public, cheater.address)
        stake_before = chain.node(staker.address).stake
        await client.faucet(10**20, 10**19)
        escrow_before = (await client.balance()).escrow
        async with CheatingNode(cheater, config.url_for("inference")) as cheat:
            await asyncio.sleep(2.0)  # the scheduler's registry view refreshes
            seen: list[p.JobEvent] = []
            job_id = await client.submit("demo-1", "Verify me twice", 12)
            out = await client.wait(job_id, 400, on_event=seen.append)
        assert cheat.jobs == [(job_id, 0)], cheat.jobs  # the first attempt went to the cheater, only that one
        # The client saw the rejection, the re-run and the settled end.
        stages = [e.stage for e in seen]
        assert stages[:2] == ["admitted", "dispatched"] and stages[-1] == "settled", stages
        rerun = next(e for e in seen if e.stage == "rerun")
        assert rerun.attempt == 1 and rerun.node_id == "a-cheater" and "slashed" in rerun.reason
        rejected = [e for e in seen if e.stage == "verdict" and e.attempt == 0]
        assert rejected and rejected[0].reason.startswith("failed:")
        redispatched = [e for e in seen if e.stage == "dispatched" and e.attempt == 1]
        assert [e.node_id for e in redispatched] == ["node-0"] and "not on a-cheater" in redispatched[0].reason
        # A verified, settled answer from the honest node.
        assert out.status == "settled", out
        # both runs decided by a committee of the devnet's two verifiers: two verdicts each
        assert out.verdict["accepted"] and out.verdict["audited"] and out.verdict["verdicts"] == 4
        assert out.output and out.node_id == "node-0"
        assert out.stages == [
            "admitted",
            "dispatched",
            "result",
            "verdict",
            "rerun",
            "dispatched",
            "result",
            "verdict",
            "settled",
        ], out.stages
        record = await _wait_recorded(client, job_id, "settled")
        assert record.attempt == 1 and record.result.attempt == 1 and record.result.node_id == "node-0"
        # each run decided by a committee of both verifiers
        assert sorted((v.result.attempt, v.accepted) for v in record.verdicts) == [(0, False)] * 2 + [(1, True)] * 2
        assert record.request.signature == record.verdicts[0].result.request.signature  # the client's, intact
        # The honest node paid through the normal split, the cheater slashed and paid nothing.
        receipt = record.receipt
        node_pay = [x for x in receipt.payouts if x.party == "node"]
        assert [x.address.lower() for x in node_pay] == [record.result.node_address.lower()]
        assert cheater.address.lower() not in {x.address.lower() for x in receipt.payouts}
        assert chain.credit_of(cheater.address) == 0
        assert chain.node(staker.address).stake == stake_before - stake_before // 10  # slash_bps 1000
        # Credits == fees; the reservation held across both attempts and released once.
        assert sum(x.amount for x in receipt.payouts) == receipt.fee == out.fee > 0
        assert chain.job_state(job_id) == "settled"
        assert (await client.balance()).escrow == escrow_before - receipt.fee
        assert chain.reserved_of(client.address) == 0
        nc = await nats.connect(config.url_for("admin"))
        try:
            info = await nc.jetstream().stream_info("RECEIPTS", subjects_filter=p.receipts(job_id))
            assert sum((info.state.subjects or {}).values()) == 1  # one receipt
        finally:
            await nc.close()


async def test_reruns_are_bounded_when_every_node_cheats(devnet, node_model):
    """Three cheaters take the first attempt and both re-runs (settlement's default max_reruns is 2):
    then the client is refunded in full, with why."""
    config, _ = devnet
    model, adapter_names = node_model
    cheaters = [HonestNode(f"a-cheater-{k}", model, adapter_names) for k in range(3)]
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        await client.faucet(10**20, 10**19)
        escrow_before = (await client.balance()).escrow
        async with (
            CheatingNode(cheaters[0], config.url_for("inference")) as c0,
            CheatingNode(cheaters[1], config.url_for("inference")) as c1,
            CheatingNode(cheaters[2], config.url_for("inference")) as c2,
        ):
            await asyncio.sleep(1.0)
            job_id = await client.submit("demo-0", "Nobody here is honest", 8)
            out = await client.wait(job_id, 400)
        assert sorted(c0.jobs + c1.jobs + c2.jobs, key=lambda ja: ja[1]) == [(job_id, 0), (job_id, 1), (job_id, 2)]
        assert out.status == "refunded", out
        assert "every attempt rejected" in out.reason and all(c.node_id in out.reason for c in cheaters), out.reason
        assert out.stages.count("rerun") == 2 and out.fee == 0
        assert (await client.balance()).escrow == escrow_before


async def test_a_stream_withdraws_a_rejected_answer_and_the_rerun_follows(devnet, node_model):
    """Through the gateway with `stream: true`: the cheater's provisional text, a visible withdrawal when its
    result is rejected, the honest node's provisional text (attempt 1), then the verdict and receipt."""
    from services.gateway.settings import GatewaySettings
    from tests.gateway.conftest import GatewayThread

    config, _ = devnet
    model, adapter_names = node_model
    key = "sk-rerun-stream-0123456789"
    gateway = GatewayThread(
        GatewaySettings(
            nats_url=config.url_for("gateway"),
            gateway_client_nats_url=config.nats_url,
            gateway_keys={key: "streamer"},
            gateway_host="127.0.0.1",
            gateway_port=0,
            log_level="WARNING",
            job_timeout_s=400,
        )
    ).start()
    cheater = HonestNode("a-cheater-stream", model, adapter_names)
    try:
        async with CheatingNode(cheater, config.url_for("inference")) as cheat:
            await asyncio.sleep(2.0)  # the scheduler's registry view refreshes

            def stream() -> list:
                openai = gateway.client(key)
                return list(
                    openai.chat.completions.create(
                        model=next(m.id for m in openai.models.list() if m.id.endswith(":demo-1")),
                        messages=[{"role": "user", "content": "Stream me twice"}],
                        max_tokens=12,
                        stream=True,
                    )
                )

            chunks = await asyncio.to_thread(stream)
        assert [a for _, a in cheat.jobs] == [0]
    finally:
        gateway.close()
    marks = [c.model_extra.get("loranet") or {} for c in chunks]
    kinds = [
        "cheater" if m.get("node_id") == "a-cheater-stream" else "honest" if m.get("provisional") else m.get("event")
        for m in marks
        if m.get("provisional") or m.get("event")
    ]
    assert kinds[0] == "cheater" and "withdrawn" in kinds and kinds.index("withdrawn") < kinds.index("honest"), kinds
    withdrawn = next(m for m in marks if m.get("event") == "withdrawn")
    assert withdrawn["attempt"] == 1 and "rejected" in withdrawn["reason"]
    final = marks[-1]
    assert final["verified"] and final["status"] == "settled" and final["node_id"] == "node-0"
    assert final["verdict"]["accepted"] and final["verdict"]["verdicts"] == 4  # a committee of two, twice
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "failed verification" in text  # a plain OpenAI client sees the withdrawal too


async def test_a_node_serving_float16_weights_is_slashed_on_its_statistics_alone(devnet, node_model):
    """Issue 18: a staked node serving the model with its weights rounded to float16 passes per-job checks
    (its tokens are the honest ones), but both verifiers' running statistics of its fingerprints depart from
    honest nodes': each flags it (flags.<node_id>) and settlement slashes it, from the statistics alone; the
    devnet's honest node is never flagged."""
    import copy
    import json

    import torch

    from services.settlement.devchain import DevChain

    config, state = devnet
    model, adapter_names = node_model
    cheap = copy.deepcopy(model)
    with torch.no_grad():
        for module in cheap.base.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.data = module.weight.data.half().float()
    cheater = HonestNode("a-cheater-fp16", cheap, adapter_names)
    chain = DevChain.open(state["rpc_url"])
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        staker = await asyncio.to_thread(chain.new_account)
        await client._request(p.SETTLEMENT_FAUCET, p.Faucet(address=staker.address, amount=2000 * 10**18))
        await asyncio.to_thread(chain.stake, staker.key, 2000 * 10**18, cheater.identity.public, cheater.address)
        await client.faucet(10**20, 10**19)
        async with CheatingNode(cheater, config.url_for("inference"), adapter=True) as cheat:
            await asyncio.sleep(2.0)  # the scheduler's registry view refreshes
            slashed_log = Path(config.state_dir) / "logs" / "settlement.log"
            for i in range(12):
                job_id = await client.submit("demo-1", f"Half precision, job {i}", 24)
                await client.wait(job_id, 300)
                if "node.slashed_on_statistics" in slashed_log.read_text():
                    break
        served = [j for j, _ in cheat.jobs]
    events = [json.loads(line) for line in slashed_log.read_text().splitlines() if "slashed_on_statistics" in line]
    assert events and events[0]["node_id"] == "a-cheater-fp16", served
    who = str(events[0]["verifiers"])  # the log writes the list as text
    assert "verifier-0" in who and "verifier-1" in who and "slashed" in events[0]["outcome"]
    assert chain.node(staker.address).stake < 2000 * 10**18
    admin = await nats.connect(config.url_for("admin"))
    stats = await admin.jetstream().key_value("verifier-stats")
    deadline = time.monotonic() + 20  # each verifier writes its records every few seconds
    for verifier in ("verifier-0", "verifier-1"):
        while True:
            try:
                if json.loads((await stats.get(f"{verifier}.a-cheater-fp16")).value)["flagged"]:
                    break
            except nats.js.errors.KeyNotFoundError:
                pass
            assert time.monotonic() < deadline, f"{verifier} never recorded the flag"
            await asyncio.sleep(0.5)
        try:  # the honest node, where it served jobs of this session's earlier tests
            assert not json.loads((await stats.get(f"{verifier}.node-0")).value)["flagged"]
        except nats.js.errors.KeyNotFoundError:
            pass
    await admin.close()
