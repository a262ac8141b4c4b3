"""Reference generation and activation fingerprints: honest recomputation vs. substitutes.

Run with -s to see the score table."""

import json

import numpy as np
import pytest
import torch

from loranet.fingerprint import (
    chunk_spans,
    compare_chunks,
    decode_chunk,
    encode_chunk,
    fingerprint_chunks,
)
from loranet.model import tokenizer as T
from loranet.model.adapters import adapter_from_blobs, adapter_to_blobs
from loranet.model.generate import ReferenceModel
from loranet.sampling import SamplerParams, sample

PARAMS = SamplerParams(temperature=0.8, top_k=40, top_p=0.95)
SEED = 42


@pytest.fixture(scope="module")
def ref(base_ckpt, demo_adapters, tmp_path_factory):
    model = ReferenceModel.from_path(*base_ckpt)
    for name, path, adapter_id in demo_adapters:
        model.add_adapter(name, path, adapter_id)
    # demo-1 at half strength: same weights, lora_alpha / 2
    config_bytes, weights = adapter_to_blobs(demo_adapters[1][1])
    cfg = json.loads(config_bytes)
    cfg["lora_alpha"] /= 2
    half = tmp_path_factory.mktemp("half") / "demo-1-half"
    model.add_adapter("demo-1-half", half, adapter_from_blobs(json.dumps(cfg).encode(), weights, half))
    return model


@pytest.fixture(scope="module")
def job(ref):
    """A node's run: demo-1, sampled, 70 tokens = prefill chunk + 3 generated chunks."""
    prompt = T.encode(T.apply_chat_template([{"role": "user", "content": "Tell me a story about a dragon."}]))
    gen = ref.generate(prompt, "demo-1", max_tokens=70, params=PARAMS, seed=SEED, stop_ids=(), keep_logits=True)
    return prompt, gen


def test_generate_stops_at_max_tokens_or_eos(ref):
    prompt = T.encode("hi")
    gen = ref.generate(prompt, None, max_tokens=5)
    assert gen.finish_reason in ("length", "stop") and len(gen.output_ids) <= 5
    assert gen.hidden.shape == (len(prompt) + len(gen.output_ids) - 1, 128)
    # force EOS: bias the logits through a model whose lm_head favours EOS
    with torch.no_grad():
        saved = ref.base.lm_head.weight[T.EOS_ID].clone()
        ref.base.lm_head.weight[T.EOS_ID] = ref.base.model.norm.weight * 50
        try:
            stopped = ref.generate(prompt, None, max_tokens=5)
        finally:
            ref.base.lm_head.weight[T.EOS_ID] = saved
    assert stopped.finish_reason == "stop" and stopped.output_ids[-1] == T.EOS_ID


def test_unknown_adapter_is_a_clear_error(ref):
    with pytest.raises(KeyError, match="not loaded"):
        ref.generate(T.encode("x"), "nope", max_tokens=1)


def test_verifier_replays_sampling_from_one_prefill(ref, job):
    prompt, gen = job
    hidden, logits = ref.prefill_hidden(prompt + gen.output_ids, "demo-1")
    rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(gen.output_ids)]
    assert (rows - gen.step_logits).abs().max() < 1e-4
    assert [sample(rows[j], PARAMS, SEED, j) for j in range(len(gen.output_ids))] == gen.output_ids


def test_fingerprint_size(job):
    prompt, gen = job
    chunks = fingerprint_chunks(gen.hidden, len(prompt))
    assert len(chunks) == len(chunk_spans(len(prompt), len(gen.output_ids))) == 4
    sizes = [len(c) for c in chunks]
    print(f"\nfingerprint bytes per chunk (prefill of {len(prompt)} tokens, then 32/32/6 tokens): {sizes}")
    assert sizes[1] == sizes[2] == 270  # k = 128 coefficients of 2 bytes + 14 header bytes at numel 4096
    assert all(s <= 300 for s in sizes)


def test_committed_values_come_back_at_the_committed_indices(job):
    prompt, gen = job
    h = gen.hidden[len(prompt) - 1 : len(prompt) + 31]
    fp = decode_chunk(encode_chunk(h))
    flat = h.reshape(-1).double().numpy()
    top = np.sort(np.argsort(-np.abs(flat))[:128])
    assert (fp.k, fp.numel) == (128, flat.size)
    assert np.abs(fp.values_at(top) - flat[top]).max() <= fp.quant_step / 2 + 1e-6 * fp.hi
    with pytest.raises(ValueError):
        decode_chunk(encode_chunk(h)[:40])


def test_honest_recompute_scores_near_perfect_and_substitutes_do_not(ref, job, other_base_ckpt, demo_adapters):
    prompt, gen = job
    n = len(gen.output_ids)
    committed = fingerprint_chunks(gen.hidden, len(prompt))
    ids = prompt + gen.output_ids
    other_base = ReferenceModel.from_path(*other_base_ckpt)
    cases = {
        "honest (same model, one prefill)": ref.prefill_hidden(ids, "demo-1")[0],
        "different adapter (demo-0)": ref.prefill_hidden(ids, "demo-0")[0],
        "adapter scaled 0.5": ref.prefill_hidden(ids, "demo-1-half")[0],
        "base only, no adapter": ref.prefill_hidden(ids, None)[0],
        "different base model (seed 1)": other_base.prefill_hidden(ids)[0],
    }
    scores = {name: compare_chunks(committed, h, len(prompt), n) for name, h in cases.items()}
    print(
        "\nchunk scores (index_overlap / mean_abs_err / max_rel_err, errors over matched indices) for chunks "
        "prefill, 32, 32, 6 tokens:"
    )
    for name, sc in scores.items():
        print(
            f"  {name:34s} " + "  ".join(f"{s.index_overlap:.3f}/{s.mean_abs_err:.1e}/{s.max_rel_err:.1e}" for s in sc)
        )
    honest = scores.pop("honest (same model, one prefill)")
    for s in honest:
        assert s.numel_match and s.index_overlap == 1.0
        assert s.max_abs_err <= s.quant_step / 2 + 1e-4
    for name, sc in scores.items():
        for s in sc[:-1]:  # full chunks
            assert s.index_overlap < 0.9 and s.mean_abs_err > 50 * max(h.mean_abs_err for h in honest), name


def test_wrong_length_is_scored_as_a_mismatch(ref, job):
    prompt, gen = job
    committed = fingerprint_chunks(gen.hidden, len(prompt))
    hidden, _ = ref.prefill_hidden(prompt + gen.output_ids, "demo-1")
    from loranet.fingerprint import compare_chunk

    s = compare_chunk(committed[1], hidden[:31])
    assert not s.numel_match and s.index_overlap == 0.0
    with pytest.raises(ValueError, match="chunks"):
        compare_chunks(committed[:-1], hidden, len(prompt), len(gen.output_ids))
