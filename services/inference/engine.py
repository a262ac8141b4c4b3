"""The node's multi-LoRA generation engine: continuous batching over libs/sgmv.

One engine thread loops over `step()`:

1. admission — waiting jobs join the running batch between steps, as long as
   the batch has room (`max_running`), the KV pool can reserve the job's
   pages (prompt + max_tokens), the step's prefill budget allows, and its
   adapter can take a bank slot (copied now from host memory if it is not in
   one; an idle slot is evicted, least recently used first). An adapter that
   is only on disk is read and hash-checked on the cache's loader thread
   while the batch keeps running; its job joins at a later step;
2. one packed forward (`forward.PackedLlama`) over every fresh prefill and
   one token of every running sequence, whatever their adapters: the sgmv
   slot map names each token's adapter;
3. sampling with `loranet.sampling.sample_many` (`sample(logits, params, seed, step)` per
   sequence, the greedy ones in one argmax); stop on EOS, a stop string, max_tokens or the job's deadline;
   the fingerprint is committed from the final-norm hidden rows
   (`loranet.fingerprint` row convention) when a sequence finishes.

`submit()` is thread-safe and returns a `concurrent.futures.Future`; the
service awaits it with `asyncio.wrap_future`.  Tests and the bench may also
drive `step()` themselves (`run_until_idle`) without the thread.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loranet.fingerprint import fingerprint_chunks
from loranet.model.catalog import resolve_model
from loranet.model.checkpoint import cache_root, load_base_model
from loranet.model.content import ContentHashMismatch
from loranet.model.tokenizers import Tokenizer, load_tokenizer
from loranet.sampling import SamplerParams, sample_many
from sgmv import bank_for_model

from . import metrics
from .adapter_cache import AdapterCache, AdapterRefused
from .domain import JobRefused, finish_reason
from .forward import KVPool, PackedBatch, PackedLlama

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class GenRequest:
    job_id: str
    prompt_tokens: list[int]
    adapter_id: str  # "" = base model only
    max_tokens: int
    params: SamplerParams
    seed: int
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # unix time; past it the job finishes with "deadline"
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens
    # Called on the engine thread with each sampled token and whether it ended the sequence (streaming jobs);
    # it must return at once (hand the token to another thread) and its errors are ignored.
    on_token: Callable[[int, bool], None] | None = None


@dataclass
class Generated:
    prompt_tokens: list[int]
    output_tokens: list[int]
    output_text: str
    finish_reason: str  # eos | stop | length | deadline
    chunks: list[bytes]
    queued_s: float = 0.0
    first_token_s: float = 0.0  # submit → first sampled token
    latency_s: float = 0.0  # submit → last token
    hidden: torch.Tensor | None = None  # [P + N - 1, H] float32, kept when the engine's keep_hidden is set


@dataclass
class _Sequence:
    req: GenRequest
    future: concurrent.futures.Future
    submitted: float
    slot: int = -1
    blocks: list[int] = field(default_factory=list)
    index: Any = None  # pool row of each position: a tensor once the sequence holds KV blocks
    cached: int = 0  # positions in the KV cache
    output: list[int] = field(default_factory=list)
    rows: list[torch.Tensor] = field(default_factory=list)
    first_token_at: float = 0.0  # monotonic
    finished_at: float = 0.0


@dataclass(frozen=True)
class EngineConfig:
    adapter_slots: int = 16
    host_adapters: int = 256
    max_running: int = 64
    kv_blocks: int = 0  # 0 = enough for max_running sequences of 512 positions
    block_size: int = 16
    max_prefill_tokens: int = 4096  # prompt tokens admitted per step
    max_rank: int = 64
    dtype: str = "float32"
    starvation_s: float = 1.0  # a job waiting this long for a slot pauses other admissions
    lora_backend: str | None = None  # sgmv backend: None = Triton on CUDA, torch on CPU; "torch" | "triton" to force


class Engine:
    def __init__(
        self,
        model_path: str = "",
        model_id: str = "",
        device: str = "cpu",
        cache_dir: str = "",
        adapter_slots: int = 16,
        config: EngineConfig | None = None,
    ) -> None:
        cfg = config or EngineConfig(adapter_slots=adapter_slots)
        self.config = cfg
        root = cache_root(cache_dir or None)
        resolved = resolve_model(model_path, cache_dir or None)
        model_path, model_id = str(resolved.path), model_id or resolved.known_id
        if cfg.dtype not in _DTYPES:
            raise ValueError(f"dtype {cfg.dtype!r}: expected one of {sorted(_DTYPES)}")
        model = load_base_model(model_path, model_id or None, device=device, dtype=_DTYPES[cfg.dtype])
        self.model_id: str = model.loranet_model_id
        self.model_name: str = resolved.name
        self.tokenizer: Tokenizer = load_tokenizer(model_path)
        self.device = torch.device(device)
        self.bank = bank_for_model(model, num_slots=cfg.adapter_slots, max_rank=cfg.max_rank)
        self.model = model
        self.llama = PackedLlama(model, self.bank, cfg.lora_backend)
        blocks = cfg.kv_blocks or cfg.max_running * (512 // cfg.block_size)
        self.pool = KVPool(
            len(self.llama.layers),
            blocks,
            cfg.block_size,
            self.llama.kv_heads,
            self.llama.head_dim,
            self.llama.dtype,
            self.device,
        )
        self.adapters = AdapterCache(self.bank, root / "node-adapters", cfg.host_adapters)
        self.keep_hidden = False
        self._committer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fingerprint")
        self._commits: list[concurrent.futures.Future] = []
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = False
        self._window: deque[tuple[float, int]] = deque()  # (time, tokens generated) for tokens/s
        self.steps = 0

    # -- adapters ------------------------------------------------------------

    @property
    def adapters_hot(self) -> list[str]:
        return self.adapters.hot()

    def has_adapter(self, adapter_id: str) -> bool:
        return self.adapters.is_local(adapter_id)

    def install_adapter(self, adapter_id: str, config: bytes, weights: bytes) -> None:
        """Write and parse an adapter from its blobs; hash checked first (`ContentHashMismatch`)."""
        try:
            self.adapters.install(adapter_id, config, weights)
        except (ContentHashMismatch, AdapterRefused, ValueError) as exc:
            self.adapters.mark_bad(adapter_id, str(exc))
            raise

    # -- submitting ----------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting) + len(self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    def tokens_per_s(self, window_s: float = 10.0) -> float:
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0][0] > window_s:
                self._window.popleft()
            total = sum(n for _, n in self._window)
            if not self._window:
                return 0.0
            span = max(now - self._window[0][0], 1.0)
        return total / span

    def submit(self, req: GenRequest) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if not req.prompt_tokens:
            fut.set_exception(JobRefused("empty prompt"))
            return fut
        if req.max_tokens < 1:
            fut.set_exception(JobRefused(f"max_tokens must be >= 1, got {req.max_tokens}"))
            return fut
        need = self.pool.blocks_for(len(req.prompt_tokens) + req.max_tokens - 1)
        if need > self.pool.num_blocks:
            fut.set_exception(
                JobRefused(
                    f"prompt {len(req.prompt_tokens)} + max_tokens {req.max_tokens} tokens exceed this node's KV cache "
                    f"({self.pool.num_blocks * self.pool.block_size} positions)"
                )
            )
            return fut
        if req.adapter_id:
            bad = self.adapters.bad_reason(req.adapter_id)
            if bad is not None:
                fut.set_exception(JobRefused(f"adapter {req.adapter_id} refused: {bad}"))
                return fut
        with self._wake:
            self._cancelled.discard(req.job_id)
            self._waiting.append(_Sequence(req, fut, time.monotonic()))
            metrics.WAITING.set(len(self._waiting))
            self._wake.notify()
        return fut

    def cancel(self, job_id: str) -> None:
        """Drop a job (waiting or running) at the next step; its future is cancelled."""
        with self._wake:
            self._cancelled.add(job_id)
            self._wake.notify()

    def generate(self, req: GenRequest, timeout: float | None = None) -> Generated:
        """Submit and wait (starts the engine thread if needed)."""
        fut = self.submit(req)
        self.start()
        return fut.result(timeout)

    # -- the loop ------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        concurrent.futures.wait(self._commits, timeout=30)
        self.adapters.close()  # reads in flight finish; later admissions read on the engine thread

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._wake:
                while not self._stop and not self._waiting and not self._running:
                    self._wake.wait(timeout=1.0)
                if self._stop:
                    return
            try:
                if not self.step():
                    time.sleep(0.002)  # waiting jobs that cannot be admitted yet
            except Exception as exc:  # never die: fail what was in the batch, keep serving
                self._fail_running(exc)

    def run_until_idle(self) -> None:
        """Drive the engine in the caller's thread until nothing waits or runs and every result is out."""
        while self._waiting or self._running:
            if not self.step() and not self._running:
                time.sleep(0.001)
        concurrent.futures.wait(self._commits)
        self._commits = []

    def _fail_running(self, exc: Exception) -> None:
        for seq in self._running:
            self._release(seq)
            if not seq.future.done():
                seq.future.set_exception(RuntimeError(f"engine step failed: {exc!r}"))
        self._running = []

    def _release(self, seq: _Sequence) -> None:
        if seq.blocks:
            self.pool.release(seq.blocks)
            seq.blocks = []
        if seq.slot >= 0:
            self.adapters.release(seq.slot)
            seq.slot = -1

    def _admit(self, now_wall: float) -> list[_Sequence]:
        """Move waiting jobs into the batch; returns the ones to prefill in this step."""
        cfg = self.config
        admitted: list[_Sequence] = []
        budget = cfg.max_prefill_tokens
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            waiting = list(self._waiting)
        if cancelled:
            for seq in [s for s in self._running if s.req.job_id in cancelled]:
                self._running.remove(seq)
                self._release(seq)
                seq.future.cancel()
        keep: list[_Sequence] = []
        blocked = False
        # Adapters not in memory are read from disk on the loader thread, for the head of the queue only
        # (a burst of jobs over more adapters than the host tier holds would otherwise evict its own reads).
        fetches = max(1, self.adapters.host_capacity // 2)
        for seq in waiting:
            req = seq.req
            if req.job_id in cancelled:
                seq.future.cancel()
                continue
            if blocked or len(self._running) + len(admitted) >= cfg.max_running:
                if req.adapter_id and fetches > 0 and self.adapters.prefetch(req.adapter_id):
                    fetches -= 1  # ready by the time a place frees up
                keep.append(seq)
                continue
            if req.deadline is not None and now_wall > req.deadline:
                seq.future.set_exception(JobRefused("the job's deadline passed before it could start"))
                continue
            P = len(req.prompt_tokens)
            if admitted and P > budget:
                keep.append(seq)
                continue
            state = self.adapters.state(req.adapter_id) if req.adapter_id else "memory"
            if state == "loading" or (state == "disk" and (self._running or admitted)):
                # The running batch does not wait for a disk read and a hash check: the job does. An idle
                # engine reads it itself (acquire below); a failed or absent adapter goes there to be refused.
                if state == "disk" and fetches > 0:
                    self.adapters.prefetch(req.adapter_id)
                    fetches -= 1
                keep.append(seq)
                continue
            if req.adapter_id:
                if not self.adapters.can_acquire(req.adapter_id):
                    keep.append(seq)
                    # Head-of-line fairness: a job starved of a slot stops others from taking slots.
                    blocked = time.monotonic() - seq.submitted > cfg.starvation_s
                    continue
            blocks = self.pool.allocate(P + req.max_tokens - 1)
            if blocks is None:
                keep.append(seq)
                blocked = True  # pages free up only as sequences finish; keep order
                continue
            if req.adapter_id:
                try:
                    slot = self.adapters.acquire(req.adapter_id)
                except (ContentHashMismatch, AdapterRefused, FileNotFoundError, ValueError) as exc:
                    self.pool.release(blocks)
                    self.adapters.mark_bad(req.adapter_id, str(exc))
                    seq.future.set_exception(JobRefused(f"adapter {req.adapter_id} refused: {exc}"))
                    continue
                if slot is None:
                    self.pool.release(blocks)
                    keep.append(seq)
                    continue
                seq.slot = slot
            seq.blocks = blocks
            seq.index = self.pool.position_index(blocks)
            budget -= P
            admitted.append(seq)
            metrics.QUEUE_SECONDS.observe(time.monotonic() - seq.submitted)
        with self._lock:
            # Jobs submitted while we scanned stay queued behind the ones we kept.
            fresh = list(self._waiting)[len(waiting) :]
            self._waiting = deque(keep + fresh)
            metrics.WAITING.set(len(self._waiting))
        return admitted

    def step(self) -> bool:
        """One admission + forward + sampling round; False when there was nothing to run."""
        t0 = time.perf_counter()
        now_wall = time.time()
        fresh = self._admit(now_wall)
        decoding = self._running
        if not fresh and not decoding:
            return False
        seqs = fresh + decoding
        self._running = seqs  # from here a failing forward fails (and frees) the fresh ones too
        ids: list[int] = []
        positions: list[int] = []
        write: list[torch.Tensor] = []
        slots: list[int] = []
        spans: list[tuple[int, int]] = []
        logit_rows: list[int] = []
        for seq in fresh:
            P = len(seq.req.prompt_tokens)
            a = len(ids)
            ids.extend(seq.req.prompt_tokens)
            positions.extend(range(P))
            write.append(seq.index[:P])
            slots.extend([seq.slot] * P)
            spans.append((a, a + P))
            logit_rows.append(a + P - 1)
        dec_rows: Any = None
        dec_index: Any = None
        dec_mask: Any = None
        if decoding:
            first = len(ids)
            lens = []
            for seq in decoding:
                pos = seq.cached
                ids.append(seq.output[-1])
                positions.append(pos)
                write.append(seq.index[pos : pos + 1])
                slots.append(seq.slot)
                lens.append(pos + 1)
            L = max(lens)
            dec_index = torch.stack(
                [
                    s.index[:L]
                    if s.index.numel() >= L
                    else torch.cat([s.index, s.index.new_zeros(L - s.index.numel())])
                    for s in decoding
                ]
            )
            lens_t = torch.tensor(lens)
            dec_mask = (torch.arange(L)[None, :] < lens_t[:, None])[:, None, None, :]
            dec_rows = torch.arange(first, first + len(decoding))
            logit_rows.extend(range(first, first + len(decoding)))
        batch = PackedBatch(
            input_ids=torch.tensor(ids),
            positions=torch.tensor(positions),
            write_index=torch.cat(write),
            token_slots=torch.tensor(slots),
            prefill_spans=spans,
            decode_rows=dec_rows,
            decode_index=dec_index,
            decode_mask=dec_mask,
            logit_rows=torch.tensor(logit_rows),
        )
        hidden, logits = self.llama.forward(batch, self.pool)
        hidden = hidden.float().cpu()
        logits = logits.cpu()
        self.steps += 1
        generated = 0
        finished: list[tuple[_Sequence, str]] = []
        now_wall = time.time()
        tokens = sample_many(
            logits, [s.req.params for s in seqs], [s.req.seed for s in seqs], [len(s.output) for s in seqs]
        )
        for i, seq in enumerate(seqs):
            if i < len(fresh):
                a, b = spans[i]
                seq.rows.append(hidden[a:b])
                seq.cached = b - a
            else:
                seq.rows.append(hidden[dec_rows[i - len(fresh)] : dec_rows[i - len(fresh)] + 1])
                seq.cached += 1
            token = tokens[i]
            seq.output.append(token)
            if len(seq.output) == 1:
                seq.first_token_at = time.monotonic()
            generated += 1
            reason = self._finish_reason(seq, token, now_wall)
            if reason is not None:
                finished.append((seq, reason))
            if seq.req.on_token is not None:
                try:
                    seq.req.on_token(token, reason is not None)
                except Exception:  # a listener's failure never stops the batch
                    pass
        self._running = [s for s in seqs if all(s is not f for f, _ in finished)]
        for seq, reason in finished:
            self._finish(seq, reason)
        with self._lock:
            self._window.append((time.monotonic(), generated))
        metrics.TOKENS.labels("prefill").inc(sum(b - a for a, b in spans))
        metrics.TOKENS.labels("decode").inc(generated)
        metrics.BATCH_SIZE.observe(len(seqs))
        metrics.BATCH_TOKENS.observe(len(ids))
        metrics.RUNNING.set(len(self._running))
        metrics.KV_FREE_BLOCKS.set(self.pool.free_blocks)
        metrics.STEP_SECONDS.observe(time.perf_counter() - t0)
        return True

    def _finish_reason(self, seq: _Sequence, token: int, now_wall: float) -> str | None:
        req = seq.req
        return finish_reason(
            token=token,
            n_output=len(seq.output),
            decoded=lambda: self.tokenizer.decode(seq.output),
            stop_ids=self.tokenizer.stop_ids,
            stop=req.stop,
            max_tokens=req.max_tokens,
            ignore_eos=req.ignore_eos,
            deadline=req.deadline,
            now=now_wall,
        )

    def _finish(self, seq: _Sequence, reason: str) -> None:
        """Free the sequence's pages and slot now; commit the fingerprint off the engine thread.

        Encoding (a top-k and a GF(p) interpolation in numpy, about 3 ms a chunk at width 2048) runs
        on the committer thread, overlapping the next forwards instead of stalling the batch."""
        self._release(seq)
        seq.finished_at = time.monotonic()
        if seq.future.done():
            return
        self._commits.append(self._committer.submit(self._commit, seq, reason))
        if len(self._commits) > 256:
            self._commits = [c for c in self._commits if not c.done()]

    def _commit(self, seq: _Sequence, reason: str) -> None:
        try:
            hidden = torch.cat(seq.rows)
            chunks = fingerprint_chunks(hidden, len(seq.req.prompt_tokens), n_generated=len(seq.output))
            gen = Generated(
                seq.req.prompt_tokens,
                seq.output,
                self.tokenizer.decode(seq.output),
                reason,
                chunks,
                hidden=hidden if self.keep_hidden else None,
                first_token_s=seq.first_token_at - seq.submitted,
                latency_s=seq.finished_at - seq.submitted,
            )
        except Exception as exc:
            if not seq.future.done():
                seq.future.set_exception(exc)
            return
        metrics.JOBS.labels(reason).inc()
        if not seq.future.done():
            try:
                seq.future.set_result(gen)
            except concurrent.futures.InvalidStateError:  # cancelled meanwhile
                pass


def ensure_dir(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, 0o700)
    return p
