"""The scheduler service against a real nats-server, with fake nodes: failover, replicas, fairness, routing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import nats
import pytest

from loranet import protocol as p
from loranet.runtime import Delivery, Runtime
from loranet.signing import Identity
from services.scheduler.handlers import SchedulerService
from services.scheduler.settings import SchedulerSettings

from .fakes import FakeNode, events, job, per_job, submit


@asynccontextmanager
async def scheduler(url: str, **overrides) -> AsyncIterator[SchedulerService]:
    fields = dict(
        nats_url=url,
        require_escrow=False,
        reserve_escrow=False,
        node_ttl_s=1.5,
        registry_refresh_s=0.1,
        failover_check_s=0.3,
        batch_window_ms=5,
        drain_timeout_s=1,
        log_level="WARNING",
    )
    fields.update(overrides)
    settings = SchedulerSettings(**fields)
    async with Runtime("scheduler", settings) as rt:
        sched = SchedulerService(rt, settings, Identity.generate())
        await sched.start()
        await rt.mount(sched.routes())
        yield sched


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def nc(nats_server):
    conn = await nats.connect(nats_server.url)
    yield conn
    await FakeNode.stop_all()
    await conn.close()


async def test_dead_nodes_jobs_complete_elsewhere_exactly_once(nats_server, nc):
    async with scheduler(nats_server.url) as sched:
        a = await FakeNode(nc, "node-a", slots=2, crash_after=2).start()
        client = Identity.generate()
        jobs = [job(client) for _ in range(6)]
        await submit(nc, jobs)
        await until(a.crashed.is_set, 10, "node-a to take work and crash")
        assert len(a.done) == 2
        b = await FakeNode(nc, "node-b").start()
        ids = {j.job_id for j in jobs}
        await until(lambda: set(a.done) | set(b.done) == ids, 20, "every job to complete")
        await asyncio.sleep(0.5)  # let late duplicates, if any, show up
        results = per_job(await events(nc, "result"))
        assert results == Counter({i: 1 for i in ids}), results
        assert set(b.done) == ids - set(a.done)
        assert sched.failover.redispatched == 4
        dispatched = await events(nc, "dispatched")
        assert per_job(dispatched) == Counter({i: 1 if i in a.done else 2 for i in ids})
        assert {e.node_id for e in dispatched if e.job_id in b.done} == {"node-a", "node-b"}
        assert all("re-dispatched from node node-a" in e.reason for e in dispatched if e.node_id == "node-b")
        # The dead node's batch is gone from WORK and the drain durable removed.
        js = nc.jetstream()
        await until(lambda: not sched.failover.busy, 10, "the drain to finish")
        names = {ci.name for ci in await js.consumers_info("WORK")}
        assert "redispatch-node-a" not in names

        # node-a comes back: it gets its durable again, with new work only.
        a2 = await FakeNode(nc, "node-a", identity=a.identity).start()
        await b.die()  # only node-a can take the next jobs
        await asyncio.sleep(2.0)  # node-b's heartbeat goes stale
        more = [job(client) for _ in range(3)]
        await submit(nc, more)
        await until(lambda: {j.job_id for j in more} <= set(a2.done), 15, "node-a to run new jobs")
        assert set(a2.jobs_received()) == {j.job_id for j in more}


async def test_a_job_pinned_to_the_dead_node_does_not_hold_up_the_others(nats_server, nc):
    async with scheduler(nats_server.url) as sched:
        a = await FakeNode(nc, "node-a", slots=4, crash_after=0).start()
        client = Identity.generate()
        pinned = job(client, node_id="node-a", ttl_s=8.0)  # a confidential job sealed to node-a
        free = [job(client) for _ in range(4)]
        for j in [pinned, *free]:  # the pinned job's batch first
            await submit(nc, [j])
            await asyncio.sleep(0.03)
        await until(a.crashed.is_set, 10, "node-a to crash")
        b = await FakeNode(nc, "node-b", slots=4).start()
        started = time.monotonic()
        await until(lambda: {j.job_id for j in free} <= set(b.done), 10, "the free jobs re-dispatched")
        assert time.monotonic() - started < 6  # before the pinned job's expiry, not after it
        assert pinned.job_id not in b.jobs_received()
        rejected = []
        deadline = time.monotonic() + 15
        while not rejected and time.monotonic() < deadline:
            rejected = [e for e in await events(nc, "rejected") if e.job_id == pinned.job_id]
            await asyncio.sleep(0.3)
        assert rejected and "node-a died" in rejected[0].reason, rejected
        await until(lambda: not sched.failover.busy, 10, "the drain to end")


async def test_two_replicas_drain_a_dead_node_once(nats_server, nc):
    async with (
        scheduler(nats_server.url, instance="sched-1") as s1,
        scheduler(nats_server.url, instance="sched-2") as s2,
    ):
        a = await FakeNode(nc, "node-a", slots=4, crash_after=1).start()
        client = Identity.generate()
        jobs = [job(client) for _ in range(10)]
        for j in jobs:  # one by one: several batches on node-a, from both replicas
            await submit(nc, [j])
            await asyncio.sleep(0.03)
        await until(a.crashed.is_set, 10, "node-a to crash")
        b = await FakeNode(nc, "node-b", slots=4).start()
        ids = {j.job_id for j in jobs}
        await until(lambda: set(a.done) | set(b.done) == ids, 20, "every job to complete")
        await asyncio.sleep(0.5)
        assert per_job(await events(nc, "result")) == Counter({i: 1 for i in ids})
        assert Counter(b.jobs_received()) == Counter({i: 1 for i in ids - set(a.done)})
        assert s1.failover.redispatched + s2.failover.redispatched == len(ids) - 1


async def test_a_paused_node_with_no_stand_in_gets_its_work_back(nats_server, nc):
    async with scheduler(nats_server.url) as sched:
        node = await FakeNode(nc, "node-p", pause_after=1, pause_s=3.0).start()  # past the 1.5 s TTL
        client = Identity.generate()
        jobs = [job(client) for _ in range(4)]
        await submit(nc, jobs)
        ids = {j.job_id for j in jobs}
        await until(lambda: set(node.done) >= ids, 20, "every job done after the pause")
        assert sched.failover.redispatched == 0  # no other node: its batch went back to it, not elsewhere
        results = per_job(await events(nc, "result"))
        assert set(results) == ids and max(results.values()) <= 2, results  # a repeat is paid once (test_paid_once)
        more = [job(client) for _ in range(2)]
        await submit(nc, more)
        await until(lambda: {j.job_id for j in more} <= set(node.done), 10, "new work after the pause")


async def test_jobs_wait_in_jetstream_while_every_node_is_full(nats_server, nc):
    async with scheduler(nats_server.url, admission_slots=8) as sched:
        node = await FakeNode(nc, "node-busy", slots=1, work=False).start()  # room for 4 jobs, never answers
        client = Identity.generate()
        jobs = [job(client) for _ in range(20)]
        await submit(nc, jobs)
        await until(
            lambda: sched.outstanding.count("node-busy") == 4 and len(sched.queue) == 8,
            10,
            "4 jobs dispatched and 8 holding the admission slots",
        )
        await asyncio.sleep(0.5)
        info = await nc.jetstream().consumer_info("JOBS", "scheduler")
        assert info.num_pending == 8 and len(sched.queue) == 8  # the rest wait in JetStream, not in memory
        node.take_work()
        await until(lambda: len(node.done) == 20, 15, "all 20 once the node answers")


async def test_a_redelivered_job_already_dispatched_is_not_dispatched_again(nats_server, nc):
    async with scheduler(nats_server.url) as sched:
        node = await FakeNode(nc, "node-r").start()
        first = job(Identity.generate())
        await submit(nc, [first])
        await until(lambda: first.job_id in node.done, 10, "the job done")
        # What a replica that dispatched it and died before its ack would leave: a redelivery.
        await sched.on_job(first, Delivery(p.JOBS_SUBMIT.pattern, 2, None))
        await asyncio.sleep(0.5)
        assert node.jobs_received() == [first.job_id] and sched.batches_sent == 1


async def test_two_replicas_never_double_dispatch(nats_server, nc):
    async with (
        scheduler(nats_server.url, instance="sched-1", admission_slots=8) as s1,
        scheduler(nats_server.url, instance="sched-2", admission_slots=8) as s2,
    ):
        node = await FakeNode(nc, "node-x", slots=50).start()
        client = Identity.generate()
        jobs = [job(client) for _ in range(150)]
        await submit(nc, jobs)
        await until(lambda: len(node.done) >= 150, 40, "150 jobs done")
        await asyncio.sleep(0.3)
        ids = {j.job_id for j in jobs}
        assert Counter(node.jobs_received()) == Counter({i: 1 for i in ids})
        assert per_job(await events(nc, "dispatched")) == Counter({i: 1 for i in ids})
        assert s1.batches_sent > 0 and s2.batches_sent > 0


async def test_flood_from_one_client_does_not_starve_the_others(nats_server, nc):
    async with scheduler(nats_server.url) as sched:
        flooder = Identity.generate()
        others = [Identity.generate() for _ in range(4)]
        flood = [job(flooder) for _ in range(120)]
        small = [job(c) for c in others]
        await submit(nc, flood)
        await submit(nc, small)  # behind the whole flood in JetStream
        await until(lambda: len(sched.queue) == 124, 15, "all jobs admitted and queued (no node yet)")
        node = await FakeNode(nc, "node-f", slots=1, job_s=0.005).start()  # room for 4 jobs at a time
        small_ids = {j.job_id for j in small}
        await until(lambda: small_ids <= set(node.done), 20, "the small clients' jobs")
        order = node.jobs_received()
        positions = sorted(order.index(i) for i in small_ids)
        assert positions[-1] < 8, positions  # in the first two plans, not after 120 flood jobs


async def test_hot_adapter_routing_and_load_balance(nats_server, nc):
    hot, cold = "11" * 32, "22" * 32
    async with scheduler(nats_server.url) as sched:

        async def known(adapter_id: str):
            return p.AdapterManifest(
                adapter_id=adapter_id,
                name="a" + adapter_id[:8],
                base_model_id="ab" * 32,
                owner_address="0x" + "1" * 40,
                rank=8,
                target_modules=["q_proj"],
                contributors=[p.Contributor(contributor_id="c", address="0x" + "2" * 40, weight_bps=10_000)],
            )

        sched.adapter = known  # type: ignore[method-assign]
        n1 = await FakeNode(nc, "node-1", slots=4, adapters_hot=[hot]).start()
        n2 = await FakeNode(nc, "node-2", slots=4).start()
        client = Identity.generate()
        await asyncio.sleep(0.3)
        hot_jobs = [job(client, adapter_id=hot) for _ in range(4)]
        await submit(nc, hot_jobs)
        await until(lambda: len(n1.done) + len(n2.done) >= 4, 10, "hot jobs")
        assert set(n1.done) == {j.job_id for j in hot_jobs}
        # Base-model jobs balance across both nodes.
        base = [job(client) for _ in range(24)]
        await submit(nc, base)
        await until(lambda: len(n1.done) + len(n2.done) >= 28, 15, "base jobs")
        got1 = len(set(n1.done) & {j.job_id for j in base})
        assert 4 <= got1 <= 20, got1
        # A cold adapter lands on one node and then stays there.
        cold_jobs = [job(client, adapter_id=cold) for _ in range(3)]
        for j in cold_jobs:
            await submit(nc, [j])
            await asyncio.sleep(0.1)
        await until(lambda: len(n1.done) + len(n2.done) >= 31, 10, "cold jobs")
        where = {("n1" if j.job_id in n1.done else "n2") for j in cold_jobs}
        assert len(where) == 1, where


async def test_one_client_is_rate_limited_at_admission_others_are_not(nats_server, nc):
    async with scheduler(nats_server.url, client_rate_per_s=0.01, client_burst=3):
        await FakeNode(nc, "node-a").start()
        flooder, other = Identity.generate(), Identity.generate()
        await submit(nc, [job(flooder) for _ in range(5)] + [job(other)])
        deadline = time.monotonic() + 20
        rejected: list[p.JobEvent] = []
        while time.monotonic() < deadline:
            rejected = await events(nc, "rejected")
            if len(rejected) >= 2:
                break
            await asyncio.sleep(0.2)
        assert len(rejected) == 2 and all("rate limit" in e.reason for e in rejected)
        admitted = await events(nc, "admitted")
        assert len(admitted) == 4  # the flooder's burst of 3, and the other client


async def test_a_node_whose_heartbeat_contradicts_its_declaration_gets_no_work(nats_server, nc):
    """Issue 18: the scheduler asks settlement what each node declared in the Registry (here a stand-in
    endpoint answering as the chain would) and sends nothing to a node claiming another region."""
    from loranet.runtime import Endpoint
    from loranet.settings import CommonSettings

    honest = FakeNode(nc, "node-a")
    liar = FakeNode(nc, "node-b")
    declared = {honest.identity.public.hex(): "", liar.identity.public.hex(): "us-east"}  # node-b: us-east

    async def stake(req: p.StakeGet) -> p.Stake:
        return p.Stake(
            address="0x" + "1" * 40,
            stake=1,
            ed25519_key=req.ed25519_key,
            device="cpu",
            memory_mb=1024,
            region=declared[req.ed25519_key],
        )

    async with Runtime("settlement-stub", CommonSettings(nats_url=nats_server.url, log_level="WARNING")) as stub:
        await stub.mount([Endpoint("stake", p.SETTLEMENT_STAKE, stake)])
        async with scheduler(nats_server.url) as sched:
            await honest.start()
            await liar.start()  # heartbeats region "" while it declared "us-east"
            await until(lambda: len(sched.registry._declared) == 2, 10, "both declarations to be read")
            jobs = [job(Identity.generate()) for _ in range(6)]
            await submit(nc, jobs)
            await until(lambda: len(honest.done) == len(jobs), 20, "every job to run on the honest node")
            assert not liar.done
            assert sched.registry._refused["node-b"].startswith("region")
