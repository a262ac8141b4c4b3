"""Scheduler handlers: jobs.submit → admission → routing → work.<node_id>."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from nats.js.errors import KeyNotFoundError, NoKeysError

from loranet import codec, protocol as p, topology
from loranet.batching import WindowBatcher
from loranet.codec import DecodeError
from loranet.runtime import Delivery, Pull, Reject, RemoteError, Runtime
from loranet.signing import SignatureInvalid

from . import domain
from .settings import SchedulerSettings


class NodeRegistryView:
    """The live nodes as last read from the `nodes` KV bucket (heartbeats with TTL)."""

    def __init__(self, rt: Runtime, refresh_s: float, ttl_s: float) -> None:
        self.rt = rt
        self.refresh_s = refresh_s
        self.ttl_s = ttl_s
        self._nodes: list[p.NodeHeartbeat] = []
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def nodes(self) -> list[p.NodeHeartbeat]:
        async with self._lock:
            now = time.time()
            if now - self._read_at >= self.refresh_s:
                self._nodes = await self._read()
                self._read_at = now
            return domain.live_nodes(self._nodes, now, self.ttl_s)

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


class Scheduler:
    def __init__(self, rt: Runtime, settings: SchedulerSettings) -> None:
        self.rt = rt
        self.settings = settings
        self.registry = NodeRegistryView(rt, settings.registry_refresh_s, settings.node_ttl_s)
        self.batcher: WindowBatcher[tuple[str, str], p.JobRequest, str] = WindowBatcher(
            self._send_batch, settings.batch_window_ms / 1000.0, settings.max_batch_jobs)
        self.in_flight: dict[str, int] = {}  # node_id -> jobs queued here, not yet in a heartbeat
        self._adapters: dict[str, tuple[float, p.AdapterManifest | None]] = {}

    def routes(self) -> Sequence[Pull]:
        return [
            Pull("jobs", topology.SCHEDULER, p.JobRequest, self.on_job, slots=self.settings.admission_slots,
                 max_bytes=p.MAX_BYTES[p.JOBS_SUBMIT]),
        ]

    async def _send_batch(self, key: tuple[str, str], jobs: list[p.JobRequest]) -> list[str]:
        node_id, model_id = key
        batch_id = p.new_job_id()
        batch = domain.assemble_batch(node_id, model_id, jobs, batch_id, self.settings.scheduler_id, time.time())
        await self.rt.publish(p.work(node_id), batch, msg_id=batch_id)
        return [batch_id] * len(jobs)

    async def adapter(self, adapter_id: str) -> p.AdapterManifest | None:
        now = time.time()
        cached = self._adapters.get(adapter_id)
        if cached and now - cached[0] < self.settings.adapter_cache_s:
            return cached[1]
        try:
            manifest: p.AdapterManifest | None = await self.rt.request(
                p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=adapter_id), p.AdapterManifest)
        except RemoteError as exc:
            if exc.code != "not_found":
                raise
            manifest = None
        self._adapters[adapter_id] = (now, manifest)
        return manifest

    async def escrow(self, address: str) -> int:
        balance = await self.rt.request(p.SETTLEMENT_BALANCE, p.BalanceGet(address=address), p.Balance)
        return balance.escrow

    async def on_job(self, job: p.JobRequest, delivery: Delivery) -> None:
        try:
            domain.check_signature(job)
        except SignatureInvalid as exc:
            # The job id is not authenticated, so no event is written for it.
            raise Reject(f"forged or unsigned job: {exc}") from None
        try:
            domain.check_timing(job, time.time(), self.settings.max_clock_skew_s)
            domain.check_adapter(job, await self.adapter(job.adapter_id) if job.adapter_id else None)
            if self.settings.require_escrow:
                domain.check_escrow(job, await self.escrow(job.client_address))
        except domain.Refusal as refusal:
            await self.rt.emit(job.job_id, "rejected", reason=refusal.reason)
            return
        await self.rt.emit(job.job_id, "admitted", body=job)
        while (node_id := domain.choose_node(job, await self.registry.nodes(), self.in_flight)) is None:
            # Back-pressure: this job holds one admission slot (the runtime keeps it
            # alive with in_progress); with every slot waiting, no more are fetched and
            # later jobs wait in JetStream, not in memory.
            if time.time() >= job.expires_at:
                await self.rt.emit(job.job_id, "rejected", reason="expired before any node could take it")
                return
            self.rt.log.info("job.no_node", job_id=job.job_id)
            await asyncio.sleep(self.settings.no_node_retry_s)
        self.in_flight[node_id] = self.in_flight.get(node_id, 0) + 1
        try:
            await self.batcher.add((node_id, job.model_id), job)
        finally:
            self.in_flight[node_id] -= 1
        await self.rt.emit(job.job_id, "dispatched", node_id=node_id, dedup=node_id)
