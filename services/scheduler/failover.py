"""Scheduler failover: a dead node's work goes to live nodes.

`Failover.loop` finds durables `node-<id>` on WORK whose node stopped heartbeating
with work still on them, deletes the durable and drains its messages through the
shared durable `redispatch-<id>` (one scheduler replica gets each batch), sending
the jobs not yet answered to live nodes.  A node that comes back gets its durable
again, empty: new work only.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import FetchTimeoutError, NotFoundError

from loranet import protocol as p
from loranet import topology
from loranet.codec import DecodeError

from . import domain

if TYPE_CHECKING:
    from .handlers import SchedulerService

NODE_DURABLE = "node-"
REDISPATCH_DURABLE = "redispatch-"


def redispatch_consumer(node_id: str) -> p.Consumer:
    """The durable through which scheduler replicas share a dead node's leftover batches."""
    return p.Consumer(
        p.WORK_ALL, f"{REDISPATCH_DURABLE}{node_id}", ack_wait_s=30, max_deliver=5, filter=p.work(node_id)
    )


class Failover:
    """Watches WORK's node durables and drains the dead nodes' ones (one per scheduler replica)."""

    def __init__(self, service: SchedulerService) -> None:
        self.service = service
        self.rt = service.rt
        self.settings = service.settings
        self._draining: dict[str, asyncio.Task[None]] = {}
        self.redispatched = 0  # jobs sent to another node

    @property
    def busy(self) -> bool:
        """Whether a drain is in progress on this replica."""
        return bool(self._draining)

    def draining(self, node_id: str) -> bool:
        """Whether this replica is draining `node_id` (routing leaves it out meanwhile)."""
        return node_id in self._draining

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.failover_check_s)
            try:
                await self.once()
            except Exception as exc:
                self.rt.log.warning("failover.check_failed", error=repr(exc))

    async def once(self) -> list[str]:
        """Start draining every dead node that still has work on WORK; give live nodes back their durable."""
        live = {hb.node_id for hb in await self.service.registry.nodes()}
        self.service.outstanding.prune(time.time())
        consumers = {ci.name: ci for ci in await self.rt.js.consumers_info("WORK")}
        started = []
        grace_over = time.time() - self.service.started_at > self.settings.node_ttl_s
        for name, info in consumers.items():
            if name.startswith(NODE_DURABLE):
                node_id = name[len(NODE_DURABLE) :]
                if (info.num_pending or 0) + (info.num_ack_pending or 0) == 0:
                    # Reconcile the load view with the durable: results missed on core NATS don't leak.
                    self.service.outstanding.node_idle(node_id, time.time() - self.settings.idle_reconcile_s)
                if node_id in live or node_id in self._draining or not grace_over:
                    continue
                if (info.num_pending or 0) + (info.num_ack_pending or 0) == 0:
                    continue
            elif name.startswith(REDISPATCH_DURABLE):
                node_id = name[len(REDISPATCH_DURABLE) :]  # left by a replica that stopped mid-drain
                if node_id in self._draining:
                    continue
            else:
                continue
            self._draining[node_id] = self.rt.spawn(self._drain(node_id), name=f"drain-{node_id}")
            started.append(node_id)
        for node_id in live - set(self._draining):
            if f"{NODE_DURABLE}{node_id}" not in consumers and f"{REDISPATCH_DURABLE}{node_id}" not in consumers:
                await self._restore_durable(node_id)
        return started

    async def _restore_durable(self, node_id: str) -> None:
        # Same config the node's own runtime creates; creating an identical consumer is idempotent.
        spec = p.node_work(node_id)
        config = topology.consumer_config(spec)
        config.name = spec.durable
        try:
            await self.rt.js.add_consumer(spec.stream, config=config)
            self.rt.log.info("node.durable_restored", node_id=node_id)
        except Exception as exc:
            self.rt.log.warning("node.durable_restore_failed", node_id=node_id, error=repr(exc))

    async def _drain(self, node_id: str) -> None:
        try:
            await self._drain_node(node_id)
        finally:
            self._draining.pop(node_id, None)

    async def _live(self, node_id: str) -> bool:
        return any(hb.node_id == node_id for hb in await self.service.registry.nodes())

    async def _drain_node(self, node_id: str) -> None:
        js = self.rt.js
        self.rt.log.warning("node.dead", node_id=node_id)
        self.service.affinity.forget(node_id)
        try:
            # Its unacknowledged batches stay in the work-queue stream; a new durable delivers them again.
            await js.delete_consumer("WORK", f"{NODE_DURABLE}{node_id}")
        except NotFoundError:
            pass
        spec = redispatch_consumer(node_id)
        sub = await js.pull_subscribe(
            spec.filter_subject, durable=spec.durable, stream=spec.stream, config=topology.consumer_config(spec)
        )
        came_back = False
        # Batches are re-dispatched side by side: one whose job can only run on this node (sealed
        # to it) waits for it or for its expiry without holding up the others.
        batches: set[asyncio.Task[bool]] = set()
        try:
            while not self.rt.stopping.is_set():
                if await self._live(node_id) or any(
                    t.done() and not t.cancelled() and t.exception() is None and not t.result() for t in batches
                ):
                    came_back = True
                    break
                batches = {t for t in batches if not t.done()}
                try:
                    msgs = await sub.fetch(8, timeout=1.0)
                except (TimeoutError, FetchTimeoutError, NatsTimeoutError):
                    info = await js.consumer_info(spec.stream, spec.durable)
                    if not batches and info.num_pending == 0 and info.num_ack_pending == 0:
                        break
                    continue
                batches |= {asyncio.ensure_future(self._redispatch(node_id, msg)) for msg in msgs}
        finally:
            for task in batches:
                task.cancel()  # unacknowledged: the batch stays for the node or for a later drain
            if batches:
                await asyncio.wait(batches)
            await sub.unsubscribe()
        if self.rt.stopping.is_set():
            return  # the drain durable stays; a replica (or this one, restarted) resumes it
        try:
            # Batches not re-dispatched (the node came back) stay in the stream for its durable.
            await js.delete_consumer(spec.stream, spec.durable)
        except NotFoundError:
            pass
        if came_back:
            self.rt.log.info("node.back", node_id=node_id)
            await self._restore_durable(node_id)
        else:
            self.rt.log.info("node.drained", node_id=node_id)

    async def _redispatch(self, node_id: str, msg: Any) -> bool:
        """Send a dead node's batch's unfinished jobs elsewhere; False if the node came back first."""
        try:
            batch = p.WORK_ALL.decode(msg.data)
        except DecodeError as exc:
            await self.rt.dead_letter("redispatch", msg, str(exc))
            return True
        jobs = [job for segment in batch.segments for job in segment.jobs]
        reruns = {a.job_id: a for a in batch.attempts}
        stages = await asyncio.gather(*(self.service.stages(job, [] if job.job_id in reruns else None) for job in jobs))
        todo = [job for job, seen in zip(jobs, stages) if domain.needs_node(seen)]
        now = time.time()
        routes = [
            asyncio.ensure_future(
                self.service.route(
                    domain.Ticket.of(
                        job,
                        now,
                        origin=node_id,
                        attempt=reruns[job.job_id].attempt if job.job_id in reruns else 0,
                        avoid=reruns[job.job_id].exclude if job.job_id in reruns else (),
                    )
                )
            )
            for job in todo
        ]
        keep_alive = asyncio.ensure_future(self._keep_alive(msg))
        try:
            while routes and not all(r.done() for r in routes):
                await asyncio.wait(routes, timeout=self.settings.failover_check_s)
                if not all(r.done() for r in routes) and await self._live(node_id):
                    return False  # back before its jobs found another node: it gets this batch again
        finally:
            keep_alive.cancel()
            for r in routes:
                r.cancel()  # no-op for the dispatched; the others leave the queue
            if routes:
                await asyncio.wait(routes)
        nodes = [r.result() for r in routes]
        for job, to in zip(todo, nodes):
            if to is None:
                reason = f"node {node_id} died and the job expired before another could take it"
                await self.rt.emit(job.job_id, p.Stage.REJECTED, reason=reason, client_key=job.client_key)
                await self.service.release(job.job_id, reason, job.client_key)
        self.redispatched += sum(1 for n in nodes if n)
        self.rt.log.info(
            "batch.redispatched",
            node_id=node_id,
            batch_id=batch.batch_id,
            jobs=len(todo),
            done_already=len(jobs) - len(todo),
        )
        await msg.ack()
        return True

    @staticmethod
    async def _keep_alive(msg: Any) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                await msg.in_progress()
            except Exception:
                return
