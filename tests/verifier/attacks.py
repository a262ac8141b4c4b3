"""Cheating nodes, one per attack, and an in-process harness that runs results through the verifier's
own `VerifierService.judge` (the function the NATS route calls), so the bulk of trials needs no server.

Every attack returns the result a cheating node would publish (signed by the cheater's own registered
key unless the attack is on the signature itself). An attack is *detected* when the verifier rejects
the result (dead letter), verdicts it not accepted, or skips it as a replay.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from verifier_nodes import PROMPTS, Client, Generated, HonestNode

from loranet import protocol as p
from loranet.errors import Refused
from loranet.fingerprint import fingerprint_chunks
from loranet.model.generate import ReferenceModel
from loranet.observability import EventLog
from loranet.signing import sign
from services.verifier.engine import AuditEngine
from services.verifier.handlers import VerifierService
from services.verifier.settings import VerifierSettings
from tests import factories

# ---------------------------------------------------------------------------
# In-process harness
# ---------------------------------------------------------------------------


class _LocalRuntime:
    """Just enough of Runtime for Verifier.judge when keys and adapters are already local."""

    def __init__(self) -> None:
        self.log = EventLog("verifier-test", "local", "WARNING")
        self.published: list[tuple[str, object]] = []  # what the verifier published besides verdicts

    async def publish(self, subject: str, message: object, msg_id: str = "") -> None:
        self.published.append((subject, message))


def local_verifier(engine: AuditEngine, nodes: list[HonestNode], audit_rate: float = 1.0) -> VerifierService:
    settings = VerifierSettings(audit_new_node_jobs=0, audit_clean_rate=audit_rate, state_dir="/nonexistent")
    from loranet.signing import Identity

    v = VerifierService(_LocalRuntime(), settings, engine, Identity.generate())
    v.keys.fresh_s = float("inf")
    v.schedulers.remember(factories.SCHEDULER.public)
    for n in nodes:
        v.keys.remember(n.heartbeat())
    return v


@dataclass
class Outcome:
    detected: bool
    how: str  # "dead_letter:<reason>", "rejected:<checks>", "replay_skipped", "accepted"
    verdict_checks: list[p.Check] | None = None


def judge_once(verifier: VerifierService, result: p.InferenceResult, subject: str | None = None) -> Outcome:
    """Run one result through Verifier.judge + verdict bookkeeping, synchronously."""
    subject = subject or p.results(result.node_id)

    async def go() -> Outcome:
        try:
            judged = await verifier.judge(result, subject)
        except Refused as exc:
            return Outcome(True, f"dead_letter:{exc.reason[:80]}")
        if judged is None:
            return Outcome(True, "replay_skipped")
        checks, audited = judged
        accepted = all(c.ok for c in checks)
        verifier.settle(result, checks, audited, accepted)
        failed = ",".join(c.name for c in checks if not c.ok)
        return Outcome(not accepted, f"rejected:{failed}" if failed else "accepted", checks)

    return asyncio.run(go()) if not _in_loop() else _run_in_thread(go)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _run_in_thread(factory):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(lambda: asyncio.run(factory())).result()


# ---------------------------------------------------------------------------
# Cheating nodes
# ---------------------------------------------------------------------------


@dataclass
class Kit:
    """Everything a cheater may use: the honest node's pieces plus cheaper/other models."""

    node: HonestNode
    client: Client
    model_id: str
    adapter_ids: list[str]
    other_base: ReferenceModel  # a different base (seed 1) with the same adapters loaded
    bf16: ReferenceModel  # the right base in bfloat16 with the same adapters
    scaled: ReferenceModel  # the right base with every adapter's scale halved
    rng: random.Random


def random_job(
    kit: Kit,
    sampled: bool | None = None,
    adapter: bool | None = None,
    max_tokens: int | None = None,
    min_tokens: int = 8,
) -> p.JobRequest:
    r = kit.rng
    sampled = r.random() < 0.5 if sampled is None else sampled
    adapter = r.random() < 0.75 if adapter is None else adapter
    prompt = r.choice(PROMPTS) + " " + "".join(r.choice("abcdefghij klmnop") for _ in range(r.randint(0, 12)))
    return kit.client.job(
        kit.model_id,
        r.choice(kit.adapter_ids) if adapter else "",
        prompt,
        max_tokens or r.randint(min_tokens, 40),
        temperature=r.choice([0.7, 1.0, 1.3]) if sampled else 0.0,
        top_k=r.choice([0, 0, 40]) if sampled else 0,
        top_p=r.choice([1.0, 0.95]) if sampled else 1.0,
        seed=r.randrange(2**40),
    )


def _refingerprint(model: ReferenceModel, name: str | None, prompt_tokens: list[int], output: list[int]) -> list[bytes]:
    """A cheater's fingerprint of `output` computed by one prefill (the right model 'proves' it)."""
    hidden, _ = model.prefill_hidden([*prompt_tokens, *output], name)
    return fingerprint_chunks(hidden, len(prompt_tokens), n_generated=len(output))


def _with(kit: Kit, job: p.JobRequest, gen: Generated, **overrides) -> p.InferenceResult:
    return kit.node.result(job, gen, **overrides)


def forged_signature(kit: Kit) -> p.InferenceResult:
    r = kit.node.run(random_job(kit))
    sig = bytearray(r.signature)
    bit = kit.rng.randrange(len(sig) * 8)
    sig[bit // 8] ^= 1 << (bit % 8)
    tok = kit.node.model.tokenizer
    if kit.rng.random() < 0.5 and (r.output_tokens[0] ^ 1) < tok.vocab_size:  # or a content bit flipped under it
        toks = [*r.output_tokens]
        toks[0] ^= 1
        return r.model_copy(update={"output_tokens": toks, "output_text": tok.decode(toks)})
    return r.model_copy(update={"signature": bytes(sig)})


def moved_to_another_job(kit: Kit) -> p.InferenceResult:
    r = kit.node.run(random_job(kit))
    other = random_job(kit)
    if kit.rng.random() < 0.5:
        moved = r.model_copy(update={"job_id": other.job_id})
    else:  # the other job's request pasted in, work of the first job kept
        moved = r.model_copy(
            update={
                "job_id": other.job_id,
                "request": other,
                "request_hash": r.request_hash if kit.rng.random() < 0.5 else other.request_hash(),
            }
        )
    return sign(moved, kit.node.identity)


def altered_prompt(kit: Kit) -> p.InferenceResult:
    job = random_job(kit)
    cheap = job.model_copy(update={"prompt": job.prompt[: max(1, len(job.prompt) // 2)]})
    gen = kit.node.generate(cheap)
    if kit.rng.random() < 0.5:  # claims the real prompt's tokens; outputs and proof are the altered run's
        gen = Generated(kit.node.model.tokenizer.encode(job.prompt), gen.output_tokens, gen.finish_reason, gen.chunks)
    return _with(kit, job, gen)


def _edit(kit: Kit, toks: list[int]) -> list[int]:
    out = [*toks]
    j = kit.rng.randrange(len(out) - 1) if len(out) > 1 else 0
    tok = kit.node.model.tokenizer
    # Another ordinary token: one of the first 256 ids past the specials (bytes on the byte tokenizer).
    lo = 0 if tok.vocab_size <= 259 else max(tok.stop_ids) + 1
    choices = [t for t in range(lo, lo + 256) if t != out[j] and t not in tok.stop_ids]
    out[j] = kit.rng.choice(choices)
    return out


def output_edited_after_proof(kit: Kit) -> p.InferenceResult:
    job = random_job(kit)
    gen = kit.node.generate(job)
    toks = _edit(kit, gen.output_tokens)
    return _with(kit, job, Generated(gen.prompt_tokens, toks, gen.finish_reason, gen.chunks))


def output_edited_fingerprint_recomputed(kit: Kit) -> p.InferenceResult:
    job = random_job(kit)
    gen = kit.node.generate(job)
    toks = _edit(kit, gen.output_tokens)
    chunks = _refingerprint(kit.node.model, kit.node.adapter_names.get(job.adapter_id), gen.prompt_tokens, toks)
    return _with(kit, job, Generated(gen.prompt_tokens, toks, gen.finish_reason, chunks))


def cheaper_model_generates(kit: Kit) -> p.InferenceResult:
    while True:  # a cheap output that happens to equal the right model's is no cheat (proved honestly)
        job = random_job(kit)
        name = kit.node.adapter_names.get(job.adapter_id)
        gen = kit.node.generate(job, model=kit.other_base, adapter_name=name)
        if gen.output_tokens != kit.node.generate(job).output_tokens:
            break
    chunks = _refingerprint(kit.node.model, name, gen.prompt_tokens, gen.output_tokens)
    return _with(kit, job, Generated(gen.prompt_tokens, gen.output_tokens, gen.finish_reason, chunks))


def wrong_adapter(kit: Kit) -> p.InferenceResult:
    job = random_job(kit, adapter=True)
    others = [a for a in kit.adapter_ids if a != job.adapter_id]
    return _with(kit, job, kit.node.generate(job, adapter_name=kit.node.adapter_names[kit.rng.choice(others)]))


def no_adapter(kit: Kit) -> p.InferenceResult:
    job = random_job(kit, adapter=True)
    return _with(kit, job, kit.node.generate(job, adapter_name=None))


def adapter_scaled_half(kit: Kit) -> p.InferenceResult:
    job = random_job(kit, adapter=True)
    return _with(kit, job, kit.node.generate(job, model=kit.scaled))


def wrong_base_model(kit: Kit) -> p.InferenceResult:
    job = random_job(kit)
    return _with(kit, job, kit.node.generate(job, model=kit.other_base))


def lower_precision_bf16(kit: Kit) -> p.InferenceResult:
    job = random_job(kit)
    return _with(kit, job, kit.node.generate(job, model=kit.bf16))


def wrong_seed(kit: Kit) -> p.InferenceResult:
    while True:  # another seed that samples the very same tokens is no cheat (the result is the honest one)
        job = random_job(kit, sampled=True, min_tokens=12)
        gen = kit.node.generate(job, seed=job.sampling.seed + 1 + kit.rng.randrange(1000))
        if gen.output_tokens != kit.node.generate(job).output_tokens:
            return _with(kit, job, gen)


def false_early_eos(kit: Kit) -> p.InferenceResult:
    """Stop early: EOS claimed at a step where the honest sampler produced another token.

    Needs an honest output with at least 2 tokens before any EOS of its own: with [t, EOS] or [EOS] the
    only "early" EOS is the honest one (the cheat would be a no-op, accepted rightly)."""
    while True:
        job = random_job(kit, min_tokens=12)
        gen = kit.node.generate(job)
        real = gen.output_tokens[:-1] if gen.finish_reason == "eos" else gen.output_tokens
        if len(real) >= 2:
            break
    name = kit.node.adapter_names.get(job.adapter_id)
    k = kit.rng.randrange(1, len(real))  # EOS replaces honest token real[k] (not EOS)
    eos = min(kit.node.model.tokenizer.stop_ids)
    toks = [*real[:k], eos]
    assert toks != gen.output_tokens and eos not in toks[:-1]
    chunks = _refingerprint(kit.node.model, name, gen.prompt_tokens, toks)
    return _with(kit, job, Generated(gen.prompt_tokens, toks, "eos", chunks))


def empty_or_truncated_proof(kit: Kit) -> p.InferenceResult:
    job = random_job(kit, min_tokens=33)
    gen = kit.node.generate(job)
    mode = kit.rng.randrange(3)
    if mode == 0:
        chunks: list[bytes] = []
    elif mode == 1:
        chunks = gen.chunks[:-1]
    else:
        chunks = [*gen.chunks]
        i = kit.rng.randrange(len(chunks))
        chunks[i] = chunks[i][: kit.rng.randrange(0, len(chunks[i]) // 2)]
    return _with(kit, job, Generated(gen.prompt_tokens, gen.output_tokens, gen.finish_reason, chunks))


# replayed_result is stateful: see run_attack.
ATTACKS: dict[str, Callable[[Kit], p.InferenceResult]] = {
    "forged_signature": forged_signature,
    "replayed_result": lambda kit: kit.node.run(random_job(kit)),
    "moved_to_another_job": moved_to_another_job,
    "altered_prompt": altered_prompt,
    "output_edited_after_proof": output_edited_after_proof,
    "output_edited_fingerprint_recomputed": output_edited_fingerprint_recomputed,
    "cheaper_model_generates": cheaper_model_generates,
    "wrong_adapter": wrong_adapter,
    "no_adapter": no_adapter,
    "adapter_scaled_0.5": adapter_scaled_half,
    "wrong_base_model": wrong_base_model,
    "lower_precision_bf16": lower_precision_bf16,
    "wrong_seed": wrong_seed,
    "false_early_eos": false_early_eos,
    "empty_or_truncated_proof": empty_or_truncated_proof,
}


def run_attack(verifier: VerifierService, kit: Kit, name: str) -> Outcome:
    """One trial of attack `name` through the verifier."""
    result = ATTACKS[name](kit)
    if name == "replayed_result":
        first = judge_once(verifier, result)
        if first.detected:  # a false rejection, not a miss of the replay: say which check and why
            why = "; ".join(f"{c.name}: {c.detail}" for c in first.verdict_checks or [] if not c.ok)
            return Outcome(False, f"honest original rejected: {first.how}" + (f" ({why})" if why else ""))
        again = judge_once(verifier, result)  # the replay must be recognised as one, not judged afresh
        return Outcome(again.how == "replay_skipped", again.how, again.verdict_checks)
    return judge_once(verifier, result)


def build_kit(
    node: HonestNode, client: Client, model_id: str, adapters, other_base_path: str, base_path: str, seed: int = 0
) -> Kit:
    """Cheater models: a different base, the right base in bf16, the right base with adapters scaled by 0.5."""

    def with_adapters(model: ReferenceModel) -> ReferenceModel:
        for name, path, aid in adapters:
            model.add_adapter(name, path, aid)
        return model

    other = with_adapters(ReferenceModel.from_path(other_base_path))
    bf16 = with_adapters(ReferenceModel.from_path(base_path, model_id, dtype=torch.bfloat16))
    scaled = with_adapters(ReferenceModel.from_path(base_path, model_id))
    from peft.tuners.lora import LoraLayer

    for module in scaled.peft.modules():
        if isinstance(module, LoraLayer):
            for name in list(module.scaling):
                module.scaling[name] = module.scaling[name] * 0.5
    return Kit(node, client, model_id, [aid for _, _, aid in adapters], other, bf16, scaled, random.Random(seed))


def copy_node(node: HonestNode) -> HonestNode:
    return copy.copy(node)
