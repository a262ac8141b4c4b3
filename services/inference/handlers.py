"""Inference node handlers: work.<node_id> → generate → results.<node_id>."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from loranet import codec, protocol as p, topology
from loranet.model import TOKENIZER_ID
from loranet.model.content import ContentHashMismatch
from loranet.runtime import Delivery, Pull, RemoteError, Runtime
from loranet.signing import Identity, devnet_address, sign

from . import domain
from .engine import Engine, ensure_dir
from .settings import InferenceSettings


def load_identity(settings: InferenceSettings) -> Identity:
    path = Path(settings.key_file or Path(settings.state_dir) / f"{settings.node_id}.key")
    if path.exists():
        return Identity.from_file(path)
    ensure_dir(str(path.parent))
    identity = Identity.generate()
    identity.save(path)
    return identity


class InferenceNode:
    def __init__(self, rt: Runtime, settings: InferenceSettings, engine: Engine, identity: Identity) -> None:
        self.rt = rt
        self.settings = settings
        self.engine = engine
        self.identity = identity
        self.address = settings.payout_address or devnet_address(settings.node_id)
        self._seq = time.time_ns()
        self._busy = 0
        self._tokens = 0
        self._tokens_since = time.monotonic()

    def routes(self) -> Sequence[Pull]:
        return [Pull("work", topology.node_consumer(self.settings.node_id), p.WorkBatch, self.on_batch,
                     slots=self.settings.batch_slots, max_bytes=p.MAX_BYTES[p.WORK_ALL])]

    # -- heartbeats ------------------------------------------------------

    def heartbeat(self) -> p.NodeHeartbeat:
        elapsed = max(time.monotonic() - self._tokens_since, 1e-3)
        hb = p.NodeHeartbeat(
            node_id=self.settings.node_id, node_key=self.identity.public, payout_address=self.address,
            model_ids=[self.engine.model_id], device=self.settings.device,
            memory_free=torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0,
            adapters_hot=self.engine.adapters_hot[:4096], slots_total=self.settings.batch_slots,
            slots_free=max(self.settings.batch_slots - self._busy, 0), queue_depth=self._busy,
            tokens_per_s=self._tokens / elapsed, region=self.settings.region, at=time.time(),
        )
        return sign(hb, self.identity, p.DOMAIN_HEARTBEAT)

    async def heartbeat_loop(self) -> None:
        kv = await self.rt.js.key_value(p.NODES_BUCKET)
        while True:
            try:
                await kv.put(self.settings.node_id, codec.encode(self.heartbeat()))
            except Exception as exc:
                self.rt.log.warning("heartbeat.failed", error=repr(exc))
            if time.monotonic() - self._tokens_since > 30:
                self._tokens, self._tokens_since = 0, time.monotonic()
            await asyncio.sleep(self.settings.heartbeat_s)

    # -- work --------------------------------------------------------------

    async def ensure_adapter(self, adapter_id: str) -> None:
        if not adapter_id or self.engine.has_adapter(adapter_id):
            return
        blob = await self.rt.request(p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=adapter_id), p.AdapterBlob, timeout=30)
        await asyncio.to_thread(self.engine.install_adapter, adapter_id, blob.config, blob.weights)
        self.rt.log.info("adapter.loaded", adapter_id=adapter_id)

    async def on_batch(self, batch: p.WorkBatch, delivery: Delivery) -> None:
        self._busy += 1
        try:
            for segment in batch.segments:
                try:
                    await self.ensure_adapter(segment.adapter_id)
                except (RemoteError, ContentHashMismatch, ValueError) as exc:
                    for job in segment.jobs:
                        await self.rt.emit(job.job_id, "failed", reason=f"adapter {segment.adapter_id}: {exc}",
                                           node_id=self.settings.node_id, dedup=self.settings.node_id)
                    continue
                for job in segment.jobs:
                    await self.run_job(job, batch.model_id)
        finally:
            self._busy -= 1

    async def run_job(self, job: p.JobRequest, model_id: str) -> None:
        started = time.time()
        if model_id != self.engine.model_id or job.model_id != self.engine.model_id:
            await self.rt.emit(job.job_id, "failed", reason=f"node {self.settings.node_id} does not serve model {job.model_id}",
                               node_id=self.settings.node_id, dedup=self.settings.node_id)
            return
        try:
            params = domain.sampler_params(job)
            gen = await asyncio.to_thread(self.engine.generate, job.prompt, job.adapter_id, job.max_tokens, params,
                                          job.sampling.seed, self.settings.max_prompt_tokens)
        except (domain.BadJob, ValueError) as exc:
            await self.rt.emit(job.job_id, "failed", reason=str(exc), node_id=self.settings.node_id,
                               dedup=self.settings.node_id)
            return
        self._seq += 1
        self._tokens += len(gen.output_tokens)
        result = domain.build_result(
            job=job, node_id=self.settings.node_id, node_key=self.identity.public, node_address=self.address,
            node_seq=self._seq, model_id=self.engine.model_id, tokenizer_id=TOKENIZER_ID,
            prompt_tokens=gen.prompt_tokens, output_tokens=gen.output_tokens, output_text=gen.output_text,
            finish_reason=gen.finish_reason, chunks=gen.chunks, started_at=started, finished_at=time.time(),
        )
        result = sign(result, self.identity, p.DOMAIN_RESULT)
        await self.rt.publish(p.results(self.settings.node_id), result, msg_id=f"{job.job_id}:{self.settings.node_id}")
        await self.rt.emit(job.job_id, "result", body=result, node_id=self.settings.node_id, dedup=self.settings.node_id)
