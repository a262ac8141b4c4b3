"""SmolLM2-135M-Instruct through the engine and the verifier: real answers, identical to HF + PEFT."""

from __future__ import annotations

import time

import pytest

from loranet import protocol as p
from loranet.model.tokenizers import load_tokenizer
from loranet.sampling import GREEDY
from services.inference import domain
from services.inference.engine import Engine, EngineConfig, GenRequest
from services.verifier import domain as verifier_domain
from tests import factories

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def engine(real_model, demo_adapters, tmp_path_factory):
    from loranet.model.adapters import adapter_to_blobs

    eng = Engine(
        str(real_model.path),
        real_model.model_id,
        "cpu",
        str(tmp_path_factory.mktemp("real-engine")),
        config=EngineConfig(adapter_slots=4, max_running=8, kv_blocks=64),
    )
    for path, adapter_id in demo_adapters.values():
        eng.install_adapter(adapter_id, *adapter_to_blobs(path))
    return eng


def _run(engine: Engine, reqs: list[GenRequest]):
    futs = [engine.submit(r) for r in reqs]
    while engine.step():
        pass
    return [f.result(timeout=60) for f in futs]


def _chat_ids(tok, text: str) -> list[int]:
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]))


def test_the_converted_checkpoint_has_its_own_tokenizer_and_ids(real_model):
    tok = load_tokenizer(real_model.path)
    assert real_model.name == "smollm2-135m-instruct"
    assert tok.vocab_size == 49_152 and tok.stop_ids == frozenset({2})  # <|im_end|> ends a turn
    assert tok.decode(tok.encode("naïve café 東京")) == "naïve café 東京"
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}])
    assert prompt.endswith("<|im_start|>assistant\n") and QUESTION in prompt
    ids = tok.encode(prompt)
    assert ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> / <|im_end|> are single special ids
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([49_152])


def test_engine_answers_like_hf_and_peft_for_the_base_and_every_adapter(engine, real_reference, demo_adapters):
    tok = engine.tokenizer
    ids = _chat_ids(tok, QUESTION)
    names = [None, *demo_adapters]
    reqs = [GenRequest(f"j{i}", ids, demo_adapters[n][1] if n else "", 40, GREEDY, 0) for i, n in enumerate(names)]
    gens = _run(engine, reqs)
    answers = {}
    for name, gen in zip(names, gens):
        ref = real_reference.generate(ids, name, 40)
        assert gen.output_tokens == ref.output_ids, name  # the same tokens as HF + PEFT, greedy
        assert gen.finish_reason == "eos" and gen.output_tokens[-1] == 2
        answers[name] = gen.output_text
    assert "Paris" in answers[None]
    assert answers["pirate"].startswith("Arr") and "Paris" in answers["pirate"]
    assert "capitale" in answers["french"].lower() and "Paris" in answers["french"]
    assert answers["json"].startswith("{") and '"Paris"' in answers["json"]
    assert answers["terse"].startswith("Paris") and len(answers["terse"]) < 12
    assert len(set(answers.values())) == len(answers)  # every adapter answers differently


def test_verifier_accepts_honest_results_and_rejects_a_skipped_adapter(
    engine, real_reference, demo_adapters, real_model
):
    tok = engine.tokenizer
    adapter_id = demo_adapters["pirate"][1]
    prompt = tok.apply_chat_template([{"role": "user", "content": "Which planet is the largest?"}])
    jobs = [
        factories.job(
            model_id=real_model.model_id,
            adapter_id=adapter_id,
            prompt=prompt,
            max_tokens=48,
            tokenizer_id=tok.tokenizer_id,
            sampling=p.SamplingParams(temperature=t, top_k=40 if t else 0, seed=5),
        )
        for t in (0.0, 0.9)
    ]
    reqs = [
        GenRequest(
            j.job_id, tok.encode(j.prompt), j.adapter_id, j.max_tokens, domain.sampler_params(j), j.sampling.seed
        )
        for j in jobs
    ]
    for job, gen in zip(jobs, _run(engine, reqs)):
        now = time.time()
        result = domain.build_result(
            job=job,
            node_id="node-t",
            node_key=factories.NODE.public,
            node_address=factories.ADDR,
            node_seq=1,
            model_id=real_model.model_id,
            tokenizer_id=tok.tokenizer_id,
            prompt_tokens=gen.prompt_tokens,
            output_tokens=gen.output_tokens,
            output_text=gen.output_text,
            finish_reason=gen.finish_reason,
            chunks=gen.chunks,
            started_at=now,
            finished_at=now,
        )
        cheap = verifier_domain.cheap_checks(result, real_model.model_id, tok)
        assert all(c.ok for c in cheap), [c for c in cheap if not c.ok]
        seq = gen.prompt_tokens + gen.output_tokens
        hidden, logits = real_reference.prefill_hidden(seq, "pirate")
        audit = verifier_domain.audit_checks(result, hidden, logits)
        assert all(c.ok for c in audit), [c for c in audit if not c.ok]
        # The same result judged against the base model alone (a node that skipped the adapter).
        hidden, logits = real_reference.prefill_hidden(seq, None)
        failed = {c.name for c in verifier_domain.audit_checks(result, hidden, logits) if not c.ok}
        assert "fingerprint" in failed, failed


def test_a_job_for_another_tokenizer_is_refused_by_the_node(engine):
    job = factories.job(tokenizer_id="ab" * 32)
    with pytest.raises(domain.JobRefused, match="tokenizer"):
        domain.check_tokenizer(job, engine.tokenizer.tokenizer_id)
    domain.check_tokenizer(factories.job(tokenizer_id=engine.tokenizer.tokenizer_id), engine.tokenizer.tokenizer_id)
    domain.check_tokenizer(factories.job(), engine.tokenizer.tokenizer_id)  # "" = the model's own


def test_stop_strings_end_a_bpe_output_where_the_string_appears(engine, real_model):
    tok = engine.tokenizer
    ids = _chat_ids(tok, "Name three colours.")
    full = _run(engine, [GenRequest("full", ids, "", 40, GREEDY, 0)])[0].output_text
    stop = full.split()[2][:3]  # three characters from inside the third word: rarely a token boundary
    job = factories.job(model_id=real_model.model_id, prompt="x", max_tokens=40, sampling=p.SamplingParams(stop=[stop]))
    gen = _run(engine, [GenRequest("stopped", ids, "", 40, GREEDY, 0, stop=(stop,))])[0]
    assert gen.finish_reason == "stop" and stop in gen.output_text and stop not in tok.decode(gen.output_tokens[:-1])
    assert full.startswith(gen.output_text.rstrip("\ufffd"))
    now = time.time()
    result = domain.build_result(
        job=job,
        node_id="n",
        node_key=factories.NODE.public,
        node_address=factories.ADDR,
        node_seq=1,
        model_id=real_model.model_id,
        tokenizer_id=tok.tokenizer_id,
        prompt_tokens=ids,
        output_tokens=gen.output_tokens,
        output_text=gen.output_text,
        finish_reason="stop",
        chunks=gen.chunks,
        started_at=now,
        finished_at=now,
    )
    assert verifier_domain.finish_check(result, tok).ok
