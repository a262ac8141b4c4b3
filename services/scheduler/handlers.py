"""Scheduler handlers: jobs.submit → admission → routing queue → work.<node_id>; dead nodes' work re-dispatched.

- `on_job` (pull route on the shared durable `scheduler`) admits a job, puts a
  ticket in the routing queue and holds its admission slot until a plan sends
  it: with every node full, slots fill and further jobs wait in JetStream.
- `dispatch_loop` plans the queue (domain.RoutingQueue) every window and
  publishes one work batch per assignment, then records `dispatched` events.
- `track_events` follows jobs.events.* (core NATS, every replica sees all) to
  count each node's dispatched-and-unanswered jobs: the load routing uses.
- `failover` (failover.py) re-dispatches the work of nodes that stopped
  heartbeating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError

from loranet import codec, topology
from loranet import protocol as p
from loranet.codec import DecodeError
from loranet.errors import Refused, RemoteError
from loranet.ratelimit import RateLimiter
from loranet.runtime import Delivery, Pull, Runtime
from loranet.signing import Identity, SignatureInvalid, sign

from . import domain
from .failover import Failover
from .settings import SchedulerSettings


class NodeRegistryView:
    """The live nodes as last read from the `nodes` KV bucket (heartbeats with TTL)."""

    def __init__(self, rt: Runtime, settings: SchedulerSettings) -> None:
        self.rt = rt
        self.settings = settings
        self._nodes: list[p.NodeHeartbeat] = []
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        # node key -> (read at, what it declared in the Registry); fetched in the background
        self._declared: dict[bytes, tuple[float, p.Stake | None]] = {}
        self._fetching: set[bytes] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._refused: dict[str, str] = {}  # node id -> why its heartbeat was last refused (logged once)

    async def nodes(self) -> list[p.NodeHeartbeat]:
        async with self._lock:
            now = time.time()
            if now - self._read_at >= self.settings.registry_refresh_s:
                self._nodes = await self._read()
                self._read_at = now
            live = domain.live_nodes(self._nodes, now, self.settings.node_ttl_s)
        if not self.settings.check_declarations:
            return live
        return [hb for hb in live if self._declared_ok(hb)]

    def _declared_ok(self, hb: p.NodeHeartbeat) -> bool:
        entry = self._declared.get(hb.node_key)
        if (entry is None or time.monotonic() - entry[0] > self.settings.declaration_refresh_s) and (
            hb.node_key not in self._fetching
        ):
            self._fetching.add(hb.node_key)
            task = asyncio.ensure_future(self._fetch_declaration(hb.node_key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        problem = domain.declaration_problem(hb, entry[1] if entry else None, self.settings.require_declared)
        if problem is None:
            self._refused.pop(hb.node_id, None)
            return True
        if self._refused.get(hb.node_id) != problem:
            self._refused[hb.node_id] = problem
            self.rt.log.warning("heartbeat.refused", node_id=hb.node_id, why=problem)
        return False

    async def _fetch_declaration(self, key: bytes) -> None:
        try:
            stake = await self.rt.request(p.SETTLEMENT_STAKE, p.StakeGet(ed25519_key=key.hex()), timeout=10)
            self._declared[key] = (time.monotonic(), stake)
        except Exception as exc:  # settlement away: keep what was known, ask again at the next refresh
            previous = self._declared.get(key)
            self._declared[key] = (time.monotonic(), previous[1] if previous else None)
            self.rt.log.info("declaration.unavailable", key=key.hex()[:16], error=repr(exc)[:200])
        finally:
            self._fetching.discard(key)

    async def _read(self) -> list[p.NodeHeartbeat]:
        kv = await self.rt.js.key_value(p.NODES_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        out = []
        for key in keys:
            try:
                entry = await kv.get(key)
                out.append(codec.decode(p.NodeHeartbeat, entry.value or b""))
            except (KeyNotFoundError, DecodeError):
                continue
        return out


class SchedulerService:
    def __init__(self, rt: Runtime, settings: SchedulerSettings, identity: Identity | None = None) -> None:
        self.rt = rt
        self.settings = settings
        # signs each job's assignment to its node (verifiers check it against KV `schedulers`)
        self.identity = identity or Identity.load_or_create(
            settings.key_file or Path(settings.state_dir) / f"{settings.scheduler_id}.key"
        )
        self.registry = NodeRegistryView(rt, settings)
        self.limiter = RateLimiter(settings.client_rate_per_s, settings.client_burst)
        self.queue = domain.RoutingQueue(
            settings.max_batch_jobs,
            settings.aging_s,
            settings.adapter_bytes,
            settings.node_devices,
            settings.cold_penalty,
        )
        self.affinity = domain.AffinityMap(settings.node_adapter_slots)
        self.outstanding = domain.Outstanding()
        self._waiting: dict[domain.Ticket, asyncio.Future[str | None]] = {}
        self._wake = asyncio.Event()
        self._heartbeat_at: dict[str, float] = {}
        self._adapters: dict[str, tuple[float, p.AdapterManifest | None]] = {}
        self._models: dict[str, tuple[float, p.ModelManifest | None]] = {}
        self.started_at = time.time()
        self.failover = Failover(self)
        self.batches_sent = 0

    def routes(self) -> Sequence[Pull]:
        return [
            Pull("jobs", p.SCHEDULER_JOBS, self.on_job, slots=self.settings.admission_slots),
            Pull("reruns", p.SCHEDULER_RERUNS, self.on_rerun, slots=self.settings.admission_slots),
        ]

    async def start(self) -> None:
        """Background work beside the routes: event tracking, dispatching, failover."""
        await self.rt.subscribe(p.JOB_EVENTS_ALL.pattern, self._on_event)
        await self.announce()
        self.rt.spawn(self.dispatch_loop(), name="dispatch")
        self.rt.spawn(self.failover.loop(), name="failover")

    async def announce(self) -> None:
        """This scheduler's signed key in KV `schedulers` (key: the key in hex; no expiry, so the assignments
        of a scheduler that stopped stay checkable)."""
        kv = await topology.ensure_bucket(self.rt.js, p.SCHEDULERS_BUCKET, self.settings.js_replicas)
        announcement = p.SchedulerAnnouncement(
            scheduler_id=self.settings.scheduler_id, scheduler_key=self.identity.public, at=time.time()
        )
        await kv.put(self.identity.public.hex(), codec.encode(sign(announcement, self.identity)))

    def assign(self, batch: p.WorkBatch) -> p.WorkBatch:
        """The batch with the scheduler's signed assignment of each of its jobs (this attempt) to its node."""
        assignments = [
            sign(
                p.Assignment(
                    job_id=job.job_id,
                    node_id=batch.node_id,
                    attempt=batch.attempt_of(job.job_id),
                    batch_id=batch.batch_id,
                    scheduler_id=self.settings.scheduler_id,
                    scheduler_key=self.identity.public,
                    at=batch.dispatched_at,
                ),
                self.identity,
            )
            for segment in batch.segments
            for job in segment.jobs
        ]
        return batch.model_copy(update={"assignments": assignments})

    # -- look-ups -----------------------------------------------------------

    async def _registry_get(
        self, cache: dict[str, tuple[float, Any]], key: str, subject: p.Request[Any, Any], message: p.Wire
    ) -> Any:
        """A registry record from the datastore (None when unknown), cached for adapter_cache_s."""
        now = time.time()
        cached = cache.get(key)
        if cached and now - cached[0] < self.settings.adapter_cache_s:
            return cached[1]
        try:
            record = await self.rt.request(subject, message)
        except RemoteError as exc:
            if exc.code != "not_found":
                raise
            record = None
        cache[key] = (now, record)
        return record

    async def adapter(self, adapter_id: str) -> p.AdapterManifest | None:
        return await self._registry_get(
            self._adapters, adapter_id, p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=adapter_id)
        )

    async def model(self, model_id: str) -> p.ModelManifest | None:
        return await self._registry_get(self._models, model_id, p.DATASTORE_MODEL_GET, p.ModelGet(model=model_id))

    async def escrow(self, address: str) -> int:
        balance = await self.rt.request(p.SETTLEMENT_BALANCE, p.BalanceGet(address=address))
        return balance.escrow

    async def reserve(self, job: p.JobRequest) -> str:
        """Lock the job's max fee in its client's escrow on chain: 'reserved', or the final state
        ('settled'/'refunded') of a job seen before; raises AdmissionRefused when the escrow cannot cover it."""
        reserve = p.Reserve(job_id=job.job_id, client_address=job.client_address, max_fee=job.max_fee)
        try:
            # Asked again (idempotent at settlement) when no answer comes in time: a request taken by a
            # settlement process that was killed is never answered, and the job would wait out one long
            # timeout. The waits grow (8, 16, 32 s): a settlement that is only slow sees at most three asks,
            # and settlement answers an ask that repeats one under way from the first.
            for attempt, wait in enumerate((8, 16, 32)):
                try:
                    reply = await self.rt.request(p.SETTLEMENT_RESERVE, reserve, timeout=wait)
                    break
                except TimeoutError:
                    if attempt == 2:
                        raise
        except RemoteError as exc:
            if exc.code == "conflict":
                raise domain.AdmissionRefused(
                    f"escrow of {job.client_address} cannot cover max_fee {job.max_fee}: "
                    f"deposit more OPEN ({exc.message})"
                ) from None
            raise
        return reply.state

    async def release(self, job_id: str, reason: str, client_key: bytes = b"") -> None:
        """Refund a reserved job that will not run (expired, failed); idempotent at settlement."""
        if not self.settings.reserve_escrow:
            return
        try:
            await self.rt.request(
                p.SETTLEMENT_RELEASE, p.Release(job_id=job_id, reason=reason[:1024], client_key=client_key), timeout=60
            )
        except Exception as exc:  # another replica released it, or settlement is down: the job stays reserved
            self.rt.log.warning("job.release_failed", job_id=job_id, error=repr(exc))

    async def stages(self, job: p.JobRequest, attempts: list[int] | None = None) -> list[str]:
        """Stages of a job's events in stream order, up to the first one past dispatch of its current
        attempt (a `rerun` starts a new one) or a final one; `attempts` gets each event's attempt."""
        out: list[str] = []
        seq = 1
        while True:
            try:
                msg = await self.rt.js.get_msg(
                    "EVENTS", seq=seq, subject=p.job_events(job.client_key, job.job_id), next=True
                )
            except NotFoundError:
                return out
            try:
                event = codec.decode(p.JobEvent, msg.data or b"")
                out.append(event.stage)
                if attempts is not None:
                    attempts.append(event.attempt)
            except DecodeError:
                pass
            if out and out[-1] in p.TERMINAL_STAGES:
                return out
            if not domain.needs_node(out) and attempts is None:
                return out  # a later `rerun` would make it need a node again: read on only when asked
            seq = (msg.seq or seq) + 1

    async def views(self) -> list[domain.NodeView]:
        # A node being drained takes no work: its subject feeds the drain until it ends.
        heartbeats = [hb for hb in await self.registry.nodes() if not self.failover.draining(hb.node_id)]
        for hb in heartbeats:
            if hb.at > self._heartbeat_at.get(hb.node_id, 0.0):
                self._heartbeat_at[hb.node_id] = hb.at
                self.affinity.heartbeat(hb.node_id, hb.adapters_hot, hb.at)
        return [
            domain.node_view(hb, self.outstanding.count(hb.node_id), self.affinity, self.settings.node_jobs_per_slot)
            for hb in heartbeats
        ]

    # -- admission ------------------------------------------------------------

    async def on_job(self, job: p.JobRequest, delivery: Delivery) -> None:
        try:
            domain.check_signature(job)
        except SignatureInvalid as exc:
            # The job id is not authenticated, so no event is written for it.
            raise Refused(f"forged or unsigned job: {exc}") from None
        if delivery.deliveries > 1 and (past := set(await self.stages(job)) - {"admitted"}):
            # A replica stopped after dispatching it (or refusing it): nothing left to do.
            self.rt.log.info("job.redelivered_done", job_id=job.job_id, stages=sorted(past))
            return
        if not self.limiter.allow(job.client_key):
            await self.rt.emit(
                job.job_id,
                p.Stage.REJECTED,
                client_key=job.client_key,
                reason=(
                    f"rate limit: client {job.client_key.hex()[:16]} may submit "
                    f"{self.settings.client_rate_per_s:g} jobs/s "
                    f"(bursts of {self.settings.client_burst}); retry in "
                    f"{self.limiter.retry_after(job.client_key):.1f}s"
                ),
            )
            return
        try:
            domain.check_prompt(job)
            domain.check_timing(job, time.time(), self.settings.max_clock_skew_s)
            domain.check_adapter(job, await self.adapter(job.adapter_id) if job.adapter_id else None)
            if job.tokenizer_id:
                domain.check_tokenizer(job, await self.model(job.model_id))
            if self.settings.reserve_escrow:
                if await self.reserve(job) != "reserved":
                    return  # already settled or refunded: a redelivery of a finished job
            elif self.settings.require_escrow:
                domain.check_escrow(job, await self.escrow(job.client_address))
        except domain.AdmissionRefused as refusal:
            await self.rt.emit(job.job_id, p.Stage.REJECTED, reason=refusal.reason, client_key=job.client_key)
            return
        # The event is sent (in order on this connection, before any `dispatched`) while the job
        # is routed; its ack is awaited before the job is acknowledged.
        admitted = asyncio.ensure_future(self.rt.emit(job.job_id, p.Stage.ADMITTED, body=job))
        await asyncio.sleep(0)
        try:
            # Back-pressure: the ticket holds this admission slot (the runtime keeps the message
            # alive with in_progress) until a node has room for it.
            node_id = await self.route(domain.Ticket.of(job, time.time()))
        finally:
            await admitted
        if node_id is None:
            reason = "expired before any node could take it"
            if job.node_id:  # a confidential job can only run on the node its prompt is sealed to
                live = any(hb.node_id == job.node_id for hb in await self.registry.nodes())
                reason = (
                    f"expired before node {job.node_id}, the one it names, could take it "
                    f"({'busy or not serving it' if live else 'unknown or dead'})"
                )
            await self.rt.emit(job.job_id, p.Stage.REJECTED, reason=reason, client_key=job.client_key)
            await self.release(job.job_id, reason, job.client_key)

    async def on_rerun(self, rerun: p.RerunRequest, delivery: Delivery) -> None:
        """Settlement finally rejected an attempt's result: run the client's signed request again on a node
        that has not failed it.  Its escrow stays reserved; if no node can take it, it is released
        (refunded) with why."""
        job = rerun.request
        try:
            domain.check_signature(job)
        except SignatureInvalid as exc:
            raise Refused(f"re-run of a forged or unsigned job: {exc}") from None
        if job.job_id != rerun.job_id:
            raise Refused(f"re-run {rerun.job_id} carries job {job.job_id}")
        attempts: list[int] = []
        seen = await self.stages(job, attempts)
        if any(s in p.TERMINAL_STAGES for s in seen) or any(
            s in ("dispatched", "result", "verdict", "failed") and a >= rerun.attempt for s, a in zip(seen, attempts)
        ):
            self.rt.log.info("job.rerun_done_already", job_id=job.job_id, attempt=rerun.attempt)
            return  # a redelivery, or a re-published re-run already under way or final
        live = await self.registry.nodes()
        avoid = domain.rerun_avoid(rerun, live)
        reason = ""
        if job.node_id:
            reason = f"the job is sealed to node {job.node_id}, which failed it: it cannot run elsewhere"
        elif not any(
            job.model_id in hb.model_ids and hb.node_id not in avoid and (not job.region or hb.region == job.region)
            for hb in live
        ):
            reason = (
                f"no live node serves it besides {', '.join(sorted(avoid))} "
                "(the nodes that failed it and their operators' other nodes)"
            )
        elif job.expires_at <= time.time():
            reason = "the job expired"
        if not reason:
            node_id = await self.route(domain.Ticket.of(job, time.time(), attempt=rerun.attempt, avoid=avoid))
            if node_id is not None:
                return
            reason = "the job expired before another node could take it"
        reason = f"re-run (attempt {rerun.attempt}) not possible: {reason}"
        await self.release(job.job_id, reason, job.client_key)

    async def route(self, ticket: domain.Ticket) -> str | None:
        """Queue `ticket` and wait until it is dispatched: the node id, or None if it expired first."""
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = fut
        self.queue.push(ticket)
        self._wake.set()
        try:
            return await fut
        finally:
            if not fut.done():  # cancelled (shutdown): the message goes back to JetStream
                self.queue.discard(ticket)
            self._waiting.pop(ticket, None)

    # -- dispatch -------------------------------------------------------------

    async def dispatch_loop(self) -> None:
        window = self.settings.batch_window_ms / 1000.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.no_node_retry_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if not len(self.queue):
                continue
            await asyncio.sleep(window)  # let the window's jobs join their groups
            try:
                await self.dispatch_once()
            except Exception as exc:
                self.rt.log.error("dispatch.failed", error=repr(exc))
                await asyncio.sleep(self.settings.no_node_retry_s)

    async def dispatch_once(self) -> int:
        """One routing plan, published; the number of jobs sent."""
        now = time.time()
        for ticket in self.queue.expire(now):
            self._resolve(ticket, None)
        plan = self.queue.plan(await self.views(), now)
        if not plan:
            return 0
        await asyncio.gather(*(self._send(a) for a in plan))
        return sum(len(a.tickets) for a in plan)

    async def _send(self, assignment: domain.Assignment) -> None:
        node_id = assignment.node_id
        jobs = [t.payload for t in assignment.tickets]
        batch_id = p.new_job_id()
        attempts = {t.job_id: (t.attempt, t.avoid) for t in assignment.tickets if t.attempt}
        batch = self.assign(
            domain.assemble_batch(
                node_id, assignment.model_id, jobs, batch_id, self.settings.scheduler_id, time.time(), attempts
            )
        )
        try:
            await self.rt.publish(p.work(node_id), batch, msg_id=batch_id)
        except Exception as exc:
            self.rt.log.warning("dispatch.publish_failed", node_id=node_id, jobs=len(jobs), error=repr(exc))
            for ticket in assignment.tickets:
                self.queue.push(ticket)  # tried again next plan
            return
        self.batches_sent += 1
        now = time.time()
        for ticket in assignment.tickets:
            self.outstanding.dispatched(ticket.job_id, node_id, now)
            self.affinity.routed(node_id, ticket.adapter_id, now)
        await asyncio.gather(*(self._emit_dispatched(t, node_id) for t in assignment.tickets))
        for ticket in assignment.tickets:
            self._resolve(ticket, node_id)

    async def _emit_dispatched(self, ticket: domain.Ticket, node_id: str) -> None:
        reason = f"re-dispatched from node {ticket.origin}" if ticket.origin else ""
        if ticket.attempt:
            reason = f"re-run (attempt {ticket.attempt}), not on {', '.join(sorted(ticket.avoid))}" + (
                f"; {reason}" if reason else ""
            )
        try:
            await self.rt.emit(
                ticket.job_id,
                p.Stage.DISPATCHED,
                node_id=node_id,
                dedup=node_id,
                reason=reason,
                client_key=ticket.payload.client_key,
                attempt=ticket.attempt,
            )
        except Exception as exc:  # the work is out; a missing event must not hold it back
            self.rt.log.warning("dispatch.event_failed", job_id=ticket.job_id, node_id=node_id, error=repr(exc))

    def _resolve(self, ticket: domain.Ticket, node_id: str | None) -> None:
        fut = self._waiting.get(ticket)
        if fut is not None and not fut.done():
            fut.set_result(node_id)

    # -- load tracking ----------------------------------------------------------

    async def _on_event(self, msg: Any) -> None:
        # Only three fields are needed; skip full validation (bodies can be large).
        try:
            event = msgpack.unpackb(msg.data, raw=False)
            job_id, stage = event["job_id"], event["stage"]
            node_id, at = event.get("node_id", ""), float(event.get("at", time.time()))
        except Exception:
            return
        if not isinstance(job_id, str) or not isinstance(stage, str):
            return
        self.outstanding.on_event(job_id, stage, node_id if isinstance(node_id, str) else "", at)
        if stage == "failed" and self.settings.reserve_escrow:
            # A node could not run the job: give the client its reservation back.
            try:
                client_key = bytes.fromhex(p.parse_job_events(msg.subject)[0])
            except ValueError:
                return
            self.rt.spawn(
                self.release(job_id, f"failed on node {node_id}: {event.get('reason', '')}"[:1024], client_key),
                name="release",
            )
        if stage not in domain.UNFINISHED_STAGES and len(self.queue):
            self._wake.set()  # room freed on a node
