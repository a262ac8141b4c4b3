"""Test nodes: an honest node (the served model and its tokenizer, fingerprint and result assembly) and a client.

Cheating nodes live in tests/verifier/attacks.py and reuse these pieces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from loranet import protocol as p
from loranet.fingerprint import fingerprint_chunks
from loranet.model.generate import ReferenceModel
from loranet.sampling import SamplerParams
from loranet.signing import Identity, devnet_address, sign
from services.inference import domain as node_domain
from tests import factories

PROMPTS = [
    "The quick brown fox",
    "Once upon a time",
    "def add(a, b):",
    "LoRA adapters let one base model",
    "<|user|>\nWhat is verification?\n<|end|>\n<|assistant|>\n",
    "Hello",
    "1, 2, 3, 4,",
    "Zürich café ☕",
    "A verifier re-executes",
    "In the beginning",
]


@dataclass
class Client:
    identity: Identity = field(default_factory=Identity.generate)

    @property
    def address(self) -> str:
        return devnet_address("client-" + self.identity.key_id)

    def job(
        self,
        model_id: str,
        adapter_id: str = "",
        prompt: str = "Hello",
        max_tokens: int = 16,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> p.JobRequest:
        now = time.time()
        req = p.JobRequest(
            job_id=p.new_job_id(),
            client_key=self.identity.public,
            client_address=self.address,
            model_id=model_id,
            adapter_id=adapter_id,
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=p.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed),
            max_fee=10**18,
            created_at=now,
            expires_at=now + 600,
        )
        return sign(req, self.identity)


@dataclass
class Generated:
    prompt_tokens: list[int]
    output_tokens: list[int]
    finish_reason: str
    chunks: list[bytes]


class HonestNode:
    """Generates with the real ReferenceModel and signs results exactly as services/inference does."""

    def __init__(
        self, node_id: str, model: ReferenceModel, adapter_names: dict[str, str], identity: Identity | None = None
    ) -> None:
        self.node_id = node_id
        self.model = model
        self.adapter_names = adapter_names  # adapter_id -> peft name in `model`
        self.identity = identity or Identity.generate()
        self.address = devnet_address(node_id)
        self.seq = time.time_ns()

    def heartbeat(self) -> p.NodeHeartbeat:
        hb = p.NodeHeartbeat(
            node_id=self.node_id,
            node_key=self.identity.public,
            payout_address=self.address,
            model_ids=[self.model.model_id],
            device="cpu",
            memory_free=0,
            adapters_hot=list(self.adapter_names),
            slots_total=1,
            slots_free=1,
            queue_depth=0,
            tokens_per_s=0.0,
            at=time.time(),
        )
        return sign(hb, self.identity)

    def generate(
        self,
        job: p.JobRequest,
        model: ReferenceModel | None = None,
        adapter_name: str | None | bool = False,
        seed: int | None = None,
    ) -> Generated:
        model = model or self.model
        name = self.adapter_names.get(job.adapter_id) if adapter_name is False else adapter_name
        prompt_tokens = self.model.tokenizer.encode(job.prompt)  # the served model's tokenizer, whoever generates
        s = job.sampling
        params = SamplerParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
        gen = model.generate(prompt_tokens, name, job.max_tokens, params, s.seed if seed is None else seed)
        chunks = fingerprint_chunks(gen.hidden, len(prompt_tokens), n_generated=len(gen.output_ids))
        return Generated(prompt_tokens, gen.output_ids, "eos" if gen.finish_reason == "stop" else "length", chunks)

    def result(self, job: p.JobRequest, gen: Generated, *, sign_it: bool = True, **overrides) -> p.InferenceResult:
        self.seq += 1
        now = time.time()
        result = node_domain.build_result(
            job=job,
            node_id=self.node_id,
            node_key=self.identity.public,
            node_address=self.address,
            node_seq=self.seq,
            model_id=self.model.model_id,
            tokenizer_id=self.model.tokenizer.tokenizer_id,
            prompt_tokens=gen.prompt_tokens,
            output_tokens=gen.output_tokens,
            output_text=self.model.tokenizer.decode(gen.output_tokens),
            finish_reason=gen.finish_reason,
            chunks=gen.chunks,
            started_at=now - 0.01,
            finished_at=now,
        )
        if overrides:
            result = result.model_copy(update=overrides)
        if "assignment" not in overrides:  # the scheduler's word for this run, as the node was handed it
            result = result.model_copy(
                update={"assignment": factories.assignment(result.job_id, result.node_id, result.attempt)}
            )
        return sign(result, self.identity) if sign_it else result

    def run(self, job: p.JobRequest) -> p.InferenceResult:
        return self.result(job, self.generate(job))
