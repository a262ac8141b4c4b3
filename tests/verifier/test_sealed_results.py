"""Confidential jobs through the verifier's own judge: it opens the prompt and output as a committee member,
runs every check and the audit on the plaintext view, and its verdict carries only the sealed result."""

from __future__ import annotations

import pytest
from attacks import judge_once, local_verifier

from loranet import codec
from loranet import confidential as c
from loranet import protocol as p
from loranet.model import tokenizer
from loranet.signing import Identity, sign
from services.verifier import domain
from services.verifier.handlers import NotInCommittee

PROMPT = "confidential: qz7Rk2mWvX9pLs4T"


def _sealed_job(
    client, model_id: str, adapter_id: str, node, committee: list[bytes], prompt: str = PROMPT, max_tokens: int = 12
) -> tuple[p.JobRequest, p.JobRequest]:
    """(the plaintext job the node generates from, the sealed job as signed and published)."""
    plain = client.job(model_id, adapter_id, prompt, max_tokens)
    sealed = p.JobRequest(
        **{
            **plain.model_dump(),
            "prompt": "",
            "node_id": node.node_id,
            "signature": b"",
            "sealed_prompt": c.seal_prompt(plain.job_id, plain.client_key, prompt, node.identity.public, committee),
        }
    )
    return plain, sign(sealed, client.identity)


def _confidential_result(node, plain: p.JobRequest, sealed: p.JobRequest, **overrides) -> p.InferenceResult:
    gen = node.generate(plain)
    unsigned = node.result(sealed, gen, sign_it=False, **overrides)
    return sign(c.seal_result(unsigned), node.identity)


@pytest.fixture
def setup(engine, honest, client, adapters):
    verifier = local_verifier(engine, [honest])
    other = Identity.generate()
    return verifier, [verifier.identity.public, other.public], adapters[0][2]


def test_honest_confidential_result_is_accepted_after_a_full_audit(setup, honest, client, engine):
    verifier, committee, adapter_id = setup
    plain, sealed = _sealed_job(client, engine.model_id, adapter_id, honest, committee)
    result = _confidential_result(honest, plain, sealed)
    out = judge_once(verifier, result)
    assert out.how == "accepted", out
    names = {ch.name: ch for ch in out.verdict_checks}
    assert names["sealing"].ok and names["prompt_tokens"].ok and names["audit_policy"].detail.startswith("audited=True")
    assert {"fingerprint", "sampling_replay", "termination"} <= set(names)
    # The verdict embeds the result as published: ciphertext only, and no check detail quotes the plaintext.
    verdict = domain.build_verdict(result, out.verdict_checks, True, "v", verifier.identity, verifier.address)
    wire = codec.encode(verdict)
    text = c.open_output(result, client.identity).output_text
    assert PROMPT.encode() not in wire and (len(text) < 4 or text.encode() not in wire)
    assert result.token_counts() == (
        len(c.open_output(result, verifier.identity).prompt_tokens),
        result.output_token_count,
    )


def test_a_verifier_outside_the_committee_hands_the_result_back(engine, honest, client, adapters):
    outsider = local_verifier(engine, [honest])
    plain, sealed = _sealed_job(client, engine.model_id, "", honest, [Identity.generate().public])
    result = _confidential_result(honest, plain, sealed)
    with pytest.raises(NotInCommittee, match="not in the committee"):
        judge_once(outsider, result)


def test_cheating_inside_the_seal_is_caught(setup, honest, client, engine):
    verifier, committee, adapter_id = setup
    plain, sealed = _sealed_job(client, engine.model_id, adapter_id, honest, committee)
    gen = honest.generate(plain)
    # Output edited after the proof, then sealed: the audit on the plaintext view catches it.
    edited = list(gen.output_tokens)
    edited[0] = (edited[0] + 1) % 250
    unsigned = honest.result(sealed, gen, sign_it=False, output_tokens=edited, output_text=tokenizer.decode(edited))
    result = sign(c.seal_result(unsigned), honest.identity)
    out = judge_once(verifier, result)
    assert out.detected and ("sampling_replay" in out.how or "fingerprint" in out.how), out
    # Lying about the clear counts (the fee) is caught by the sealing check.
    plain, sealed = _sealed_job(client, engine.model_id, adapter_id, honest, committee)
    honest_one = c.seal_result(honest.result(sealed, honest.generate(plain), sign_it=False))
    padded = sign(
        honest_one.model_copy(update={"output_token_count": honest_one.output_token_count + 50}), honest.identity
    )
    out = judge_once(verifier, padded)
    assert out.detected and "sealing" in out.how, out
    # The client's slot garbled (the client could not read what was verified): rejected.
    plain, sealed = _sealed_job(client, engine.model_id, adapter_id, honest, committee)
    good = c.seal_result(honest.result(sealed, honest.generate(plain), sign_it=False))
    decoy = c.seal(b"", [client.identity.public]).keys[0]
    garbled = good.model_copy(
        update={"sealed_output": good.sealed_output.model_copy(update={"keys": [decoy, *good.sealed_output.keys[1:]]})}
    )
    out = judge_once(verifier, sign(garbled, honest.identity))
    assert out.detected and out.how == "rejected:sealing", out


def test_a_client_framing_the_node_gets_no_verdict(setup, honest, client, engine):
    # The client sealed one prompt for the node and another for the committee (slots of two keys over one
    # ciphertext): the node's result is not judged against the verifiers' prompt; no verdict, no slashing.
    verifier, committee, adapter_id = setup
    plain, sealed = _sealed_job(client, engine.model_id, adapter_id, honest, committee)
    other = c.seal_prompt(plain.job_id, plain.client_key, "another prompt", honest.identity.public, committee)
    mixed = sealed.sealed_prompt.model_copy(update={"keys": [sealed.sealed_prompt.keys[0], *other.keys[1:]]})
    framed = sign(
        p.JobRequest(**{**sealed.model_dump(), "sealed_prompt": mixed.model_dump(), "signature": b""}), client.identity
    )
    result = _confidential_result(honest, plain, framed)
    out = judge_once(verifier, result)
    assert out.how.startswith("dead_letter:") and "sealed prompt" in out.how, out
