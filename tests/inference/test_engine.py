"""The continuous-batching engine against HF + PEFT: tokens, fingerprints, adapters, stops."""

from __future__ import annotations

import time

import pytest

from loranet import protocol as p
from loranet.model import tokenizer
from loranet.model.adapters import adapter_to_blobs
from loranet.model.content import ContentHashMismatch
from loranet.sampling import GREEDY, SamplerParams
from services.inference import domain, metrics
from services.inference.engine import GenRequest, JobRefused
from services.verifier import domain as verifier_domain

PROMPTS = [
    "Hello there",
    "The quick brown fox jumps",
    "x",
    "loranet serves many adapters at once, said the node",
    "Once upon a time",
]


def _jobs(adapters, n, greedy_only=False, base_every=5, max_tokens=(12, 30)):
    """n requests spread over the adapters (and the base model), mixed greedy and seeded sampling."""
    out = []
    for i in range(n):
        if i % base_every == base_every - 1:
            name, adapter_id = None, ""
        else:
            name, _, adapter_id = adapters[i % len(adapters)]
        params = GREEDY if greedy_only or i % 2 == 0 else SamplerParams(temperature=0.8, top_k=40, top_p=0.95)
        mt = max_tokens[0] + (i * 7) % (max_tokens[1] - max_tokens[0])
        out.append(
            (
                name,
                GenRequest(
                    f"job-{i}", tokenizer.encode(PROMPTS[i % len(PROMPTS)]), adapter_id, mt, params, seed=100 + i
                ),
            )
        )
    return out


def _run(engine, reqs):
    futs = [engine.submit(r) for r in reqs]
    engine.run_until_idle()
    return [f.result(timeout=0) for f in futs]


@pytest.mark.parametrize("pad_max", [8, 0], ids=["padded-segments", "per-segment"])
def test_mixed_batch_equals_alone_and_peft(make_engine, adapters, reference, pad_max, monkeypatch):
    from sgmv import torch_ops

    # sgmv's torch path pads short segments into one bmm; with 0 every segment takes its own matmul.
    monkeypatch.setattr(torch_ops, "PAD_SEGMENT_MAX", pad_max)
    jobs = _jobs(adapters, 10)
    engine = make_engine(adapter_slots=8)
    together = _run(engine, [r for _, r in jobs])
    assert engine.steps < sum(g.output_tokens.__len__() for g in together)  # they really shared forwards
    alone_engine = make_engine(adapter_slots=8)
    for (name, req), got in zip(jobs, together):
        alone = _run(alone_engine, [req])[0]
        assert got.output_tokens == alone.output_tokens, req.job_id
        ref = reference.generate(req.prompt_tokens, name, req.max_tokens, req.params, req.seed)
        assert got.output_tokens == ref.output_ids, req.job_id
        assert got.finish_reason == ("eos" if ref.finish_reason == "stop" else "length")


def test_jobs_join_mid_batch(make_engine, adapters, reference):
    jobs = _jobs(adapters, 6, greedy_only=True, max_tokens=(20, 30))
    engine = make_engine(adapter_slots=8)
    first = [engine.submit(r) for _, r in jobs[:3]]
    for _ in range(5):
        engine.step()
    assert engine.running == 3
    later = [engine.submit(r) for _, r in jobs[3:]]
    engine.step()
    assert engine.running == 6  # joined the running batch, no waiting for the first jobs to finish
    engine.run_until_idle()
    for (name, req), fut in zip(jobs, first + later):
        ref = reference.generate(req.prompt_tokens, name, req.max_tokens, req.params, req.seed)
        assert fut.result(0).output_tokens == ref.output_ids, req.job_id


def test_more_adapters_than_slots(make_engine, adapters, reference):
    jobs = _jobs(adapters, 18, base_every=100, max_tokens=(6, 16))
    evictions = metrics.ADAPTER_CACHE.labels("device", "eviction")._value.get()
    engine = make_engine(adapter_slots=2, max_running=4, host_adapters=3)
    got = _run(engine, [r for _, r in jobs])
    assert metrics.ADAPTER_CACHE.labels("device", "eviction")._value.get() > evictions
    assert len([s for s in engine.bank.slot_names if s]) <= 2
    for (name, req), g in zip(jobs, got):
        ref = reference.generate(req.prompt_tokens, name, req.max_tokens, req.params, req.seed)
        assert g.output_tokens == ref.output_ids, req.job_id


def test_corrupted_adapter_refused(make_engine, adapters, base, tmp_path):
    engine = make_engine(adapter_slots=2)
    # A fresh adapter id whose blobs were tampered with in transit: refused before anything is written.
    from services.inference.engine import Engine, EngineConfig

    fresh = Engine(str(base[0]), base[1], "cpu", str(tmp_path / "fresh"), config=EngineConfig(adapter_slots=2))
    name, path, adapter_id = adapters[2]
    config, weights = adapter_to_blobs(path)
    tampered = bytearray(weights)
    tampered[-5] ^= 0x40
    with pytest.raises(ContentHashMismatch):
        fresh.install_adapter(adapter_id, config, bytes(tampered))
    assert not fresh.has_adapter(adapter_id)
    assert "hash" in (fresh.adapters.bad_reason(adapter_id) or "")
    fut = fresh.submit(GenRequest("j-bad", tokenizer.encode("hi"), adapter_id, 4, GREEDY, 0))
    with pytest.raises(JobRefused, match="refused"):
        fut.result(0)
    # Corrupted on the node's disk after install: the hash is re-checked when read back, the job fails.
    name, path, adapter_id = adapters[3]
    (engine.adapters.adapter_dir / adapter_id / "adapter_model.safetensors").write_bytes(bytes(tampered))
    with engine.adapters._lock:
        engine.adapters._host.pop(adapter_id, None)
    fut = engine.submit(GenRequest("j-disk", tokenizer.encode("hi"), adapter_id, 4, GREEDY, 0))
    engine.run_until_idle()
    with pytest.raises(JobRefused, match="refused"):
        fut.result(0)
    assert engine.adapters.bad_reason(adapter_id)


def _result(job: p.JobRequest, gen, model_id) -> p.InferenceResult:
    from tests.factories import NODE

    now = time.time()
    return domain.build_result(
        job=job,
        node_id="node-t",
        node_key=NODE.public,
        node_address="0x" + "1f" * 20,
        node_seq=1,
        model_id=model_id,
        tokenizer_id=tokenizer.TOKENIZER_ID,
        prompt_tokens=gen.prompt_tokens,
        output_tokens=gen.output_tokens,
        output_text=gen.output_text,
        finish_reason=gen.finish_reason,
        chunks=gen.chunks,
        started_at=now,
        finished_at=now,
    )


def test_fingerprint_passes_verifier_audit(make_engine, adapters, reference, base):
    """The verifier's own checks (ONE HF prefill, sampler replay, termination) accept engine results."""
    from tests import factories

    engine = make_engine(adapter_slots=4)
    specs = [
        (adapters[0], "Hello there, node", 70, 0.0),
        (adapters[1], "Once upon a time", 40, 0.8),
        ((None, None, ""), "The quick brown fox", 33, 0.0),
    ]
    jobs = [
        factories.job(
            model_id=base[1],
            adapter_id=a[2],
            prompt=prompt,
            max_tokens=mt,
            sampling=p.SamplingParams(temperature=t, top_k=50 if t else 0, seed=11),
        )
        for a, prompt, mt, t in specs
    ]
    reqs = [
        GenRequest(
            j.job_id, tokenizer.encode(j.prompt), j.adapter_id, j.max_tokens, domain.sampler_params(j), j.sampling.seed
        )
        for j in jobs
    ]
    gens = _run(engine, reqs)
    for (a, *_), job, gen in zip(specs, jobs, gens):
        result = _result(job, gen, base[1])
        assert all(c.ok for c in verifier_domain.cheap_checks(result, base[1], tokenizer.ByteTokenizer())), job.job_id
        hidden, logits = reference.prefill_hidden(gen.prompt_tokens + gen.output_tokens, a[0])
        checks = verifier_domain.audit_checks(result, hidden, logits)
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]
        assert len(gen.chunks) == 1 + -(-len(gen.output_tokens) // 32)
        assert all(len(c) <= 300 for c in gen.chunks[1:])


def test_stop_string_deadline_and_refusals(make_engine, adapters, reference, base):
    from tests import factories

    engine = make_engine(adapter_slots=2)
    name, _, adapter_id = adapters[0]
    prompt = tokenizer.encode("Hello there")
    ref = reference.generate(prompt, name, 24, GREEDY, 0)
    text = tokenizer.decode(ref.output_ids)
    stop = text[5:7]
    cut = text.index(stop) + len(stop)
    job = factories.job(
        model_id=base[1],
        adapter_id=adapter_id,
        prompt="Hello there",
        max_tokens=24,
        sampling=p.SamplingParams(stop=[stop]),
    )
    gen = _run(engine, [GenRequest(job.job_id, prompt, adapter_id, 24, GREEDY, 0, stop=(stop,))])[0]
    assert gen.finish_reason == "stop" and gen.output_text.endswith(stop) and len(gen.output_text) == cut
    assert verifier_domain.finish_check(_result(job, gen, base[1]), tokenizer.ByteTokenizer()).ok

    # Deadline: the job ends with what it has, finish_reason "deadline".
    req = GenRequest("j-deadline", prompt, adapter_id, 24, GREEDY, 0, deadline=time.time() + 60)
    fut = engine.submit(req)
    engine.step()
    engine.step()
    req.deadline = time.time() - 1
    engine.run_until_idle()
    gen = fut.result(0)
    assert gen.finish_reason == "deadline" and 1 <= len(gen.output_tokens) < 24
    assert gen.output_tokens == ref.output_ids[: len(gen.output_tokens)]
    # Expired before it started, or too long for the KV cache: refused with a reason.
    fut = engine.submit(GenRequest("j-late", prompt, "", 4, GREEDY, 0, deadline=time.time() - 1))
    engine.run_until_idle()
    with pytest.raises(JobRefused, match="deadline"):
        fut.result(0)
    with pytest.raises(JobRefused, match="KV cache"):
        engine.submit(GenRequest("j-long", prompt, "", 10**7, GREEDY, 0)).result(0)


def test_engine_thread_serves_concurrent_submits(make_engine, adapters, reference):
    engine = make_engine(adapter_slots=4)
    engine.start()
    jobs = _jobs(adapters, 6, greedy_only=True)
    futs = [engine.submit(r) for _, r in jobs]
    got = [f.result(timeout=60) for f in futs]
    for (name, req), g in zip(jobs, got):
        assert g.output_tokens == reference.generate(req.prompt_tokens, name, req.max_tokens, GREEDY, 0).output_ids
    assert engine.tokens_per_s() > 0 and engine.queue_depth == 0


def test_adapter_read_from_disk_does_not_stall_the_batch(make_engine, adapters, reference, monkeypatch):
    """An adapter only on the node's disk is read (and hash-checked) on the loader thread: the running batch
    keeps decoding meanwhile, the job joins once the read is done, with the same tokens."""
    from services.inference import adapter_cache

    engine = make_engine(adapter_slots=4, host_adapters=8)
    (name_a, _, id_a), (name_b, _, id_b) = adapters[0], adapters[1]
    with engine.adapters._lock:
        engine.adapters._host.pop(id_b)  # on disk only, as after a host-tier eviction
    gate, reading = __import__("threading").Event(), []
    real = adapter_cache.load_adapter

    def slow_load(path, **kw):
        reading.append(__import__("threading").current_thread().name)
        assert gate.wait(30), "the test never released the read"
        return real(path, **kw)

    monkeypatch.setattr(adapter_cache, "load_adapter", slow_load)
    req_a = GenRequest("a", tokenizer.encode(PROMPTS[1]), id_a, 24, GREEDY, 0)
    req_b = GenRequest("b", tokenizer.encode(PROMPTS[0]), id_b, 8, GREEDY, 0)
    fut_a = engine.submit(req_a)
    engine.step()
    fut_b = engine.submit(req_b)
    for _ in range(6):  # the read of b blocks on the gate; steps go on without it
        engine.step()
    assert reading and reading[0].startswith("adapter-load"), reading
    assert engine.running == 1 and engine.adapters.state(id_b) == "loading"
    assert not fut_a.done() and not fut_b.done()
    gate.set()
    engine.run_until_idle()
    for name, req, fut in ((name_a, req_a, fut_a), (name_b, req_b, fut_b)):
        ref = reference.generate(req.prompt_tokens, name, req.max_tokens, GREEDY, 0).output_ids
        assert fut.result(0).output_tokens == ref, req.job_id
    assert engine.adapters.state(id_b) == "memory"
    # Stopped and started again (as after a drain): reads still go to a loader thread.
    engine.stop()
    (name_c, _, id_c) = adapters[2]
    with engine.adapters._lock:
        engine.adapters._host.pop(id_c)
    reading.clear()
    fut_a2 = engine.submit(GenRequest("a2", tokenizer.encode(PROMPTS[1]), id_a, 8, GREEDY, 0))
    engine.step()
    fut_c = engine.submit(GenRequest("c", tokenizer.encode(PROMPTS[0]), id_c, 4, GREEDY, 0))
    engine.step()
    engine.run_until_idle()
    assert reading and reading[0].startswith("adapter-load"), reading
    assert fut_c.result(0).output_tokens and fut_a2.result(0).output_tokens


def test_adapter_failing_its_background_read_is_refused(make_engine, adapters):
    """A hash mismatch found by the loader thread refuses the job (on the engine thread) and marks the adapter bad;
    the batch it would have joined is unaffected."""
    engine = make_engine(adapter_slots=4)
    (_, _, id_a), (_, _path_b, id_b) = adapters[0], adapters[1]
    weights = engine.adapters.adapter_dir / id_b / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x40
    weights.write_bytes(bytes(data))
    with engine.adapters._lock:
        engine.adapters._host.pop(id_b)
    fut_a = engine.submit(GenRequest("a", tokenizer.encode("hello"), id_a, 16, GREEDY, 0))
    engine.step()
    fut_b = engine.submit(GenRequest("b", tokenizer.encode("hi"), id_b, 4, GREEDY, 0))
    engine.run_until_idle()
    with pytest.raises(JobRefused, match="refused"):
        fut_b.result(0)
    assert len(fut_a.result(0).output_tokens) > 0
    assert engine.adapters.bad_reason(id_b) and engine.adapters.state(id_b) == "absent"


def test_streaming_jobs_hear_each_token_as_it_is_sampled(make_engine, adapters):
    jobs = _jobs(adapters, 3, greedy_only=True, max_tokens=(10, 14))
    heard: dict[str, list[tuple[int, bool, int]]] = {r.job_id: [] for _, r in jobs}
    engine = make_engine(adapter_slots=8)
    for _, req in jobs:
        req.on_token = lambda token, last, job=req.job_id: heard[job].append((token, last, engine.steps))
    broken = jobs[0][1]
    broken.on_token = lambda token, last: 1 / 0  # a failing listener never stops the batch
    got = _run(engine, [r for _, r in jobs])
    assert got[0].output_tokens
    for (_, req), gen in zip(jobs[1:], got[1:]):
        tokens = [t for t, _, _ in heard[req.job_id]]
        assert tokens == gen.output_tokens  # every token, in order, the last one flagged
        assert [last for _, last, _ in heard[req.job_id]] == [False] * (len(tokens) - 1) + [True]
        steps = [s for _, _, s in heard[req.job_id]]
        assert steps == sorted(set(steps)), "one token per step: heard while generating, not at the end"
