"""Test doubles for the scheduler's service tests: a fake inference node and a job factory.

The fake node heartbeats into KV `nodes`, pulls `work.<node_id>` through its
durable exactly as services/inference does, and for each job publishes a
`result` event (no model: the scheduler only reads stages).  `die()` stops it
the way a crash would: no more heartbeats, no ack for the batch in hand.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import FetchTimeoutError

from loranet import codec, topology
from loranet import protocol as p
from loranet.signing import Identity, devnet_address, sign

MODEL = "ab" * 32


def job(
    client: Identity, adapter_id: str = "", max_tokens: int = 8, ttl_s: float = 300.0, node_id: str = ""
) -> p.JobRequest:
    now = time.time()
    req = p.JobRequest(
        job_id=p.new_job_id(),
        client_key=client.public,
        client_address=devnet_address(client.key_id),
        model_id=MODEL,
        adapter_id=adapter_id,
        prompt="hello",
        max_tokens=max_tokens,
        max_fee=10**15,
        created_at=now,
        expires_at=now + ttl_s,
        node_id=node_id,
    )
    return sign(req, client)


async def submit(nc: NATS, jobs: list[p.JobRequest]) -> None:
    js = nc.jetstream()
    for j in jobs:
        await js.publish(p.JOBS_SUBMIT.pattern, codec.encode(j), headers={"Nats-Msg-Id": j.job_id})


@dataclass
class FakeNode:
    nc: NATS
    node_id: str
    slots: int = 2
    job_s: float = 0.0  # time per job
    adapters_hot: list[str] = field(default_factory=list)
    # Process this many jobs, then crash (None: never).
    crash_after: int | None = None
    # Process this many jobs, then freeze for pause_s: no heartbeat, no work (a SIGSTOP).
    pause_after: int | None = None
    pause_s: float = 0.0
    _paused_until: float = 0.0
    work: bool = True  # False: heartbeats only, takes no work (until `take_work()`)
    identity: Identity = field(default_factory=Identity.generate)
    batches: list[p.WorkBatch] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    crashed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def heartbeat(self) -> p.NodeHeartbeat:
        hb = p.NodeHeartbeat(
            node_id=self.node_id,
            node_key=self.identity.public,
            payout_address=devnet_address(self.node_id),
            model_ids=[MODEL],
            device="cpu",
            memory_free=0,
            adapters_hot=self.adapters_hot,
            slots_total=self.slots,
            slots_free=self.slots,
            queue_depth=0,
            tokens_per_s=0.0,
            at=time.time(),
        )
        return sign(hb, self.identity)

    LIVE: ClassVar[list[FakeNode]] = []

    async def start(self) -> FakeNode:
        FakeNode.LIVE.append(self)
        js = self.nc.jetstream()
        kv = await js.key_value(p.NODES_BUCKET)
        await kv.put(self.node_id, codec.encode(self.heartbeat()))
        self._tasks = [asyncio.ensure_future(self._heartbeats(kv))]
        if self.work:
            self.take_work()
        return self

    def take_work(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._work()))

    async def _heartbeats(self, kv) -> None:
        while not self.nc.is_closed:
            await asyncio.sleep(0.2)
            if time.monotonic() >= self._paused_until:
                await kv.put(self.node_id, codec.encode(self.heartbeat()))

    async def _work(self) -> None:
        js = self.nc.jetstream()
        spec = p.node_work(self.node_id)
        sub = await js.pull_subscribe(
            spec.filter_subject, durable=spec.durable, stream=spec.stream, config=topology.consumer_config(spec)
        )
        while True:
            try:
                msgs = await sub.fetch(1, timeout=0.5)
            except (TimeoutError, FetchTimeoutError, NatsTimeoutError):
                continue
            except Exception:
                if self.nc.is_closed:
                    return
                await asyncio.sleep(0.2)  # durable deleted while we were away: the scheduler restores it
                continue
            for msg in msgs:
                batch = codec.decode(p.WorkBatch, msg.data)
                self.batches.append(batch)
                for segment in batch.segments:
                    for j in segment.jobs:
                        if self.crash_after is not None and len(self.done) >= self.crash_after:
                            self.crashed.set()
                            await self.die()
                            return
                        if self.pause_after is not None and len(self.done) == self.pause_after:
                            self.pause_after = None
                            self._paused_until = time.monotonic() + self.pause_s
                            await asyncio.sleep(self.pause_s)
                        await asyncio.sleep(self.job_s)
                        await self.result(j.job_id, j.client_key)
                await msg.ack()

    async def result(self, job_id: str, client_key: bytes) -> None:
        event = p.JobEvent(job_id=job_id, stage="result", service="inference", node_id=self.node_id, at=time.time())
        await self.nc.jetstream().publish(
            p.job_events(client_key, job_id),
            codec.encode(event),
            headers={"Nats-Msg-Id": f"{job_id}:result:{self.node_id}"},
        )
        self.done.append(job_id)

    async def die(self) -> None:
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()

    @classmethod
    async def stop_all(cls) -> None:
        for node in cls.LIVE:
            await node.die()
        tasks = [t for node in cls.LIVE for t in node._tasks]
        cls.LIVE.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    def jobs_received(self) -> list[str]:
        return [j.job_id for b in self.batches for s in b.segments for j in s.jobs]


async def events(nc: NATS, stage: str | None = None) -> list[p.JobEvent]:
    """Every event in the EVENTS stream (optionally of one stage)."""
    js = nc.jetstream()
    sub = await js.subscribe(p.JOB_EVENTS_ALL.pattern, ordered_consumer=True)
    out: list[p.JobEvent] = []
    info = await js.stream_info("EVENTS")
    while len(out) < info.state.messages:
        try:
            msg = await sub.next_msg(timeout=2)
        except Exception:
            break
        out.append(codec.decode(p.JobEvent, msg.data))
    await sub.unsubscribe()
    return [e for e in out if stage is None or e.stage == stage]


def per_job(evts: list[p.JobEvent]) -> Counter:
    return Counter(e.job_id for e in evts)
