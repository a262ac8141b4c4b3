"""Inference node handlers: work.<node_id> → engine (continuous batch) → results.<node_id>.

Every job of a work batch is handed to the engine at once, so jobs of all
batches in flight (and of all their adapters) decode together; each result
is published as soon as its job finishes, with msg_id job_id:node_id (a
redelivered batch de-duplicates, and a recent result is re-sent rather than
recomputed).  On SIGTERM the runtime stops pulling and waits for the handlers:
their jobs finish; a handler still running at the drain timeout is cancelled,
its jobs are dropped from the engine and the message is handed back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from loranet import codec, confidential
from loranet import protocol as p
from loranet.errors import RemoteError
from loranet.model.content import ContentHashMismatch
from loranet.runtime import Delivery, Pull, Runtime
from loranet.signing import Identity, devnet_address, sign

from . import domain, metrics
from .engine import Engine, GenRequest, JobRefused
from .settings import InferenceSettings

HAND_BACK_DELAY_S = 2.0


def load_identity(settings: InferenceSettings) -> Identity:
    return Identity.load_or_create(settings.key_file or Path(settings.state_dir) / f"{settings.node_id}.key")


class TokenStream:
    """A streaming job's text, published to its client as the engine generates it (jobs.tokens.<client>.<job>).

    The engine calls `on_token` on its own thread; tokens cross to the event loop, and one message goes
    out per engine step (a step's tokens coalesce). Best effort and provisional: nothing is retried, and
    the signed result, verdict and receipt decide what the client gets."""

    def __init__(
        self, rt: Runtime, node_id: str, job: p.JobRequest, attempt: int, decode: Callable[[list[int]], str]
    ) -> None:
        self.rt = rt
        self.node_id = node_id
        self.job_id = job.job_id
        self.attempt = attempt
        self.subject = p.job_tokens(job.client_key, job.job_id)
        self.decode = decode
        self.loop = asyncio.get_running_loop()
        self.tokens: list[int] = []
        self.sent = ""
        self.seq = 0
        self.done = False
        self._flush_due = False

    def on_token(self, token: int, finished: bool) -> None:  # the engine's thread
        self.loop.call_soon_threadsafe(self._push, token, finished)

    def _push(self, token: int, finished: bool) -> None:
        self.tokens.append(token)
        self.done = self.done or finished
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        delta = domain.stream_delta(self.decode(self.tokens), self.sent, final=self.done)
        if not delta and not self.done:
            return
        self.sent += delta
        message = p.TokenDelta(
            job_id=self.job_id,
            node_id=self.node_id,
            attempt=self.attempt,
            seq=self.seq,
            text=delta[:16_384],
            tokens=min(len(self.tokens), p.MAX_TOKENS_LIMIT),
            done=self.done,
            at=time.time(),
        )
        self.seq += 1
        self.loop.create_task(self._send(p.JOB_TOKENS_ALL.encode(message)))

    async def _send(self, data: bytes) -> None:
        try:
            await self.rt.nc.publish(self.subject, data)
        except Exception as exc:
            self.rt.log.warning("tokens.publish_failed", job_id=self.job_id, error=repr(exc))


class InferenceService:
    def __init__(self, rt: Runtime, settings: InferenceSettings, engine: Engine, identity: Identity) -> None:
        self.rt = rt
        self.settings = settings
        self.engine = engine
        self.identity = identity
        self.address = settings.payout_address or devnet_address(settings.node_id)
        self._seq = time.time_ns()
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._recent: OrderedDict[tuple[str, int], p.InferenceResult] = OrderedDict()  # (job id, attempt)

    def routes(self) -> Sequence[Pull]:
        return [Pull("work", p.node_work(self.settings.node_id), self.on_batch, slots=self.settings.batch_slots)]

    # -- heartbeats ------------------------------------------------------

    def heartbeat(self) -> p.NodeHeartbeat:
        depth = self.engine.queue_depth
        tps = self.engine.tokens_per_s()
        metrics.TOKENS_PER_S.set(tps)
        total = self.settings.max_running
        hb = p.NodeHeartbeat(
            node_id=self.settings.node_id,
            node_key=self.identity.public,
            payout_address=self.address,
            model_ids=[self.engine.model_id],
            device=self.settings.device,
            memory_free=torch.cuda.mem_get_info()[0] if self.engine.device.type == "cuda" else 0,
            adapters_hot=self.engine.adapters_hot[:4096],
            slots_total=total,
            slots_free=max(total - depth, 0),
            queue_depth=depth,
            tokens_per_s=tps,
            region=self.settings.region,
            at=time.time(),
            dtype=self.settings.dtype,
        )
        return sign(hb, self.identity)

    async def heartbeat_loop(self) -> None:
        kv = await self.rt.js.key_value(p.NODES_BUCKET)
        while True:
            try:
                await kv.put(self.settings.node_id, codec.encode(self.heartbeat()))
            except Exception as exc:
                self.rt.log.warning("heartbeat.failed", error=repr(exc))
            await asyncio.sleep(self.settings.heartbeat_s)

    # -- work --------------------------------------------------------------

    async def ensure_adapter(self, adapter_id: str) -> None:
        """Fetch the adapter's blobs from the datastore once (concurrent callers share the fetch)."""
        if not adapter_id or self.engine.has_adapter(adapter_id):
            return
        task = self._fetching.get(adapter_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch_adapter(adapter_id))
            self._fetching[adapter_id] = task
            task.add_done_callback(lambda _t: self._fetching.pop(adapter_id, None))
        await asyncio.shield(task)

    async def _fetch_adapter(self, adapter_id: str) -> None:
        blob = await self.rt.request(p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=adapter_id), timeout=30)
        await asyncio.to_thread(self.engine.install_adapter, adapter_id, blob.config, blob.weights)
        self.rt.log.info("adapter.loaded", adapter_id=adapter_id)

    async def fail(self, job: p.JobRequest, reason: str, attempt: int = 0) -> None:
        await self.rt.emit(
            job.job_id,
            p.Stage.FAILED,
            reason=reason,
            node_id=self.settings.node_id,
            dedup=self.settings.node_id,
            client_key=job.client_key,
            attempt=attempt,
        )

    async def on_batch(self, batch: p.WorkBatch, delivery: Delivery) -> None:
        try:
            await asyncio.gather(*(self.run_segment(seg, batch.model_id, batch) for seg in batch.segments))
        except asyncio.CancelledError:
            # Hand the batch back ourselves, delayed past the 1 s pull request this stopping replica may still
            # have open at the server: an immediate nak can be redelivered into that dying request and then
            # sit out the whole ack_wait.  (The runtime's own nak is skipped once the message is settled.)
            try:
                await asyncio.shield(delivery.msg.nak(delay=HAND_BACK_DELAY_S))
            except Exception:
                pass
            raise

    async def run_segment(self, segment: p.WorkSegment, model_id: str, batch: p.WorkBatch | None = None) -> None:
        await asyncio.gather(
            *(self.run_job(job, model_id, batch.attempt_of(job.job_id) if batch else 0, batch) for job in segment.jobs)
        )

    async def adapter_problem(self, adapter_id: str) -> str | None:
        """None when the adapter is ready on this node (fetched now if needed), else why it is not."""
        if not adapter_id:
            return None
        bad = self.engine.adapters.bad_reason(adapter_id)
        if bad is not None:
            return bad
        try:
            await self.ensure_adapter(adapter_id)
        except (RemoteError, ContentHashMismatch, ValueError) as exc:
            return str(exc)
        return None

    async def run_job(
        self, job: p.JobRequest, model_id: str, attempt: int = 0, batch: p.WorkBatch | None = None
    ) -> None:
        recent = self._recent.get((job.job_id, attempt))
        if recent is not None:  # a redelivery of a job already done: same result, de-duplicated by msg_id
            await self.publish_result(recent)
            return
        started = time.time()
        if model_id != self.engine.model_id or job.model_id != self.engine.model_id:
            await self.fail(job, f"node {self.settings.node_id} does not serve model {job.model_id}", attempt)
            return
        problem = await self.adapter_problem(job.adapter_id)
        if problem is not None:
            await self.fail(job, f"adapter {job.adapter_id}: {problem}", attempt)
            return
        try:
            params = domain.sampler_params(job)
            tok = self.engine.tokenizer
            domain.check_tokenizer(job, tok.tokenizer_id)
            # A confidential job's prompt is sealed to this node's identity (and the verifier committee).
            prompt_tokens = tok.encode(confidential.open_prompt(job, self.identity))
            domain.check_prompt(prompt_tokens, self.settings.max_prompt_tokens)
        except (domain.JobRefused, confidential.ConfidentialError) as exc:
            await self.fail(job, str(exc), attempt)
            return
        req = GenRequest(
            job_id=job.job_id,
            prompt_tokens=prompt_tokens,
            adapter_id=job.adapter_id,
            max_tokens=job.max_tokens,
            params=params,
            seed=job.sampling.seed,
            stop=tuple(job.sampling.stop),
            deadline=job.expires_at,
        )
        if job.streams_tokens:
            stream = TokenStream(self.rt, self.settings.node_id, job, attempt, self.engine.tokenizer.decode)
            req.on_token = stream.on_token
        fut = self.engine.submit(req)
        try:
            gen = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self.engine.cancel(job.job_id)  # shutdown: the message goes back, the engine drops the job
            raise
        except JobRefused as exc:
            await self.fail(job, str(exc), attempt)
            return
        except Exception as exc:  # an engine error fails this job, never the node
            self.rt.log.error("job.engine_error", job_id=job.job_id, error=repr(exc))
            await self.fail(job, f"engine error: {exc}", attempt)
            return
        self._seq += 1
        result = domain.build_result(
            job=job,
            node_id=self.settings.node_id,
            node_key=self.identity.public,
            node_address=self.address,
            node_seq=self._seq,
            model_id=self.engine.model_id,
            tokenizer_id=self.engine.tokenizer.tokenizer_id,
            prompt_tokens=gen.prompt_tokens,
            output_tokens=gen.output_tokens,
            output_text=gen.output_text,
            finish_reason=gen.finish_reason,
            chunks=gen.chunks,
            started_at=started,
            finished_at=time.time(),
            attempt=attempt,
            assignment=batch.assignment_of(job.job_id) if batch else None,
        )
        if job.confidential:  # token ids, text and fingerprint only inside sealed_output, to client + committee
            result = confidential.seal_result(result)
        result = sign(result, self.identity)
        self._recent[(job.job_id, attempt)] = result
        while len(self._recent) > self.settings.recent_results:
            self._recent.popitem(last=False)
        await self.publish_result(result)

    async def publish_result(self, result: p.InferenceResult) -> None:
        suffix = f":{result.attempt}" if result.attempt else ""
        await self.rt.publish(
            p.results(self.settings.node_id), result, msg_id=f"{result.job_id}:{self.settings.node_id}{suffix}"
        )
        await self.rt.emit(
            result.job_id,
            p.Stage.RESULT,
            body=result,
            node_id=self.settings.node_id,
            dedup=self.settings.node_id,
            attempt=result.attempt,
        )
