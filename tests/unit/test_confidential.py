"""loranet.confidential: hybrid sealing to Ed25519 identities, and the confidential forms of jobs and results."""

from __future__ import annotations

import os
import time

import msgpack
import pytest
from nacl.public import SealedBox

from loranet import codec
from loranet import confidential as c
from loranet import protocol as p
from loranet.signing import Identity, sign, verify

CLIENT, NODE, V1, V2, EVE = (Identity.generate() for _ in range(5))
CHUNKS = [os.urandom(40), os.urandom(300), os.urandom(13)]  # stand-ins for fingerprint chunks (random bytes)


def test_round_trip_to_every_recipient():
    sealed = c.seal(b"secret payload", [NODE.public, V1.public, V2.public, V1.public])
    assert c.recipients(sealed) == [NODE.public, V1.public, V2.public]  # de-duplicated, in order
    for who in (NODE, V1, V2):
        assert c.open_sealed(sealed, who) == b"secret payload"
    assert b"secret payload" not in codec.encode(sealed)
    # Each slot is a standard sealed box: nacl.public.SealedBox opens it to the data key.
    key = c.data_key(sealed, V2)
    assert SealedBox(c.x25519_private(V2)).decrypt(sealed.keys[2].box) == key
    # Survives the wire.
    assert c.open_sealed(codec.decode(p.Sealed, codec.encode(sealed)), NODE) == b"secret payload"


def test_fresh_key_per_message():
    a, b = c.seal(b"same", [NODE.public]), c.seal(b"same", [NODE.public])
    assert a.ciphertext != b.ciphertext and a.keys[0].box != b.keys[0].box


def test_wrong_recipient_cannot_open():
    sealed = c.seal(b"for the node only", [NODE.public])
    with pytest.raises(c.NotARecipient):
        c.open_sealed(sealed, EVE)
    # Claiming the node's slot does not help: it only opens with the node's private key.
    stolen = sealed.model_copy(update={"keys": [p.SealedKey(recipient=EVE.public, box=sealed.keys[0].box)]})
    with pytest.raises(c.Tampered):
        c.open_sealed(stolen, EVE)


def test_tampering_is_detected():
    sealed = c.seal(b"x" * 100, [NODE.public, V1.public])
    flipped = bytearray(sealed.ciphertext)
    flipped[40] ^= 1
    with pytest.raises(c.Tampered):
        c.open_sealed(sealed.model_copy(update={"ciphertext": bytes(flipped)}), NODE)
    box = bytearray(sealed.keys[0].box)
    box[-1] ^= 1
    bad_slot = sealed.model_copy(update={"keys": [p.SealedKey(recipient=NODE.public, box=bytes(box)), sealed.keys[1]]})
    with pytest.raises(c.Tampered):
        c.open_sealed(bad_slot, NODE)
    assert c.open_sealed(bad_slot, V1) == b"x" * 100
    # Another message's ciphertext under this message's slots does not authenticate.
    other = c.seal(b"y" * 100, [NODE.public, V1.public])
    with pytest.raises(c.Tampered):
        c.open_sealed(sealed.model_copy(update={"ciphertext": other.ciphertext}), NODE)


def test_a_recipient_can_check_the_other_slots():
    sealed = c.seal(b"out", [CLIENT.public, V1.public])
    key = c.data_key(sealed, V1)
    assert c.slot_matches(sealed, key, CLIENT.public) and c.slot_matches(sealed, key, V1.public)
    # A slot sealed (validly) to the client but holding another key is caught by a verifier.
    decoy = c.seal(b"decoy", [CLIENT.public]).keys[0]
    swapped = sealed.model_copy(update={"keys": [decoy, sealed.keys[1]]})
    assert c.open_sealed(swapped, V1) == b"out"
    assert not c.slot_matches(swapped, key, CLIENT.public)
    assert not c.slot_matches(sealed, key, EVE.public)


def test_keys_derive_from_ed25519_identities():
    assert bytes(c.x25519_private(NODE).public_key) == bytes(c.x25519_public(NODE.public))
    with pytest.raises(c.ConfidentialError):
        c.seal(b"x", [])


def _job(
    prompt: str = "",
    *,
    sealed: bool = True,
    client: Identity = CLIENT,
    job_id: str | None = None,
    committee=(V1.public, V2.public),
) -> p.JobRequest:
    job_id = job_id or p.new_job_id()
    now = time.time()
    fields = dict(
        job_id=job_id,
        client_key=client.public,
        client_address="0x" + "1" * 40,
        model_id="ab" * 32,
        adapter_id="",
        max_tokens=4,
        max_fee=10**15,
        created_at=now,
        expires_at=now + 60,
    )
    if sealed:
        fields.update(
            prompt="",
            node_id="node-0",
            sealed_prompt=c.seal_prompt(job_id, client.public, prompt, NODE.public, list(committee)),
        )
    else:
        fields.update(prompt=prompt)
    return sign(p.JobRequest(**fields), client)


def test_sealed_prompt_is_bound_to_its_job_and_client():
    job = _job("the secret prompt")
    assert job.confidential and b"the secret prompt" not in codec.encode(job)
    again = codec.decode(p.JobRequest, codec.encode(job))
    verify(again, CLIENT.public)  # the signature covers the sealed prompt
    for who in (NODE, V1, V2):
        assert c.open_prompt(again, who) == "the secret prompt"
    with pytest.raises(c.NotARecipient):
        c.open_prompt(again, EVE)
    # Eve copies the sealed prompt into her own signed request: the node refuses to open it as her job.
    copied = sign(p.JobRequest(**{**job.model_dump(), "client_key": EVE.public, "signature": b""}), EVE)
    with pytest.raises(c.Tampered):
        c.open_prompt(copied, NODE)
    moved = sign(p.JobRequest(**{**job.model_dump(), "job_id": p.new_job_id(), "signature": b""}), CLIENT)
    with pytest.raises(c.Tampered):
        c.open_prompt(moved, NODE)
    assert c.committee(job, NODE.public) == [V1.public, V2.public]


def test_job_request_shape_and_unchanged_plain_messages():
    plain = _job("hello", sealed=False)
    wire = msgpack.unpackb(codec.encode(plain), raw=False)
    assert "sealed_prompt" not in wire and "node_id" not in wire  # byte for byte the pre-confidential message
    assert len(plain.canonical()) == 13
    with pytest.raises(ValueError, match="sealed prompt"):
        p.JobRequest(**{**_job("x").model_dump(), "prompt": "leaked too"})
    with pytest.raises(ValueError, match="sealed prompt"):
        p.JobRequest(**{**_job("x").model_dump(), "node_id": ""})


def _result(job: p.JobRequest, prompt_tokens=(1, 2, 3), output_tokens=(7, 8), text="ab") -> p.InferenceResult:
    return p.InferenceResult(
        job_id=job.job_id,
        node_id="node-0",
        node_key=NODE.public,
        node_address="0x" + "2" * 40,
        node_seq=1,
        request=job,
        request_hash="cd" * 32,
        model_id=job.model_id,
        adapter_id="",
        tokenizer_id="ef" * 32,
        prompt_tokens=list(prompt_tokens),
        output_tokens=list(output_tokens),
        output_text=text,
        finish_reason="length",
        fingerprint=p.Fingerprint(chunks=list(CHUNKS)),
        started_at=1.0,
        finished_at=2.0,
    )


def test_sealed_result_opens_for_client_and_committee_only():
    job = _job("prompt")
    sealed = sign(c.seal_result(_result(job, text="the secret output")), NODE)
    assert sealed.prompt_tokens == [] and sealed.output_tokens == [] and sealed.output_text == ""
    assert sealed.fingerprint.chunks == [] and (sealed.fingerprint.chunk_tokens, sealed.fingerprint.top_k) == (32, 128)
    assert sealed.token_counts() == (3, 2)
    wire = codec.encode(sealed)
    assert b"the secret output" not in wire
    assert not [i for i, chunk in enumerate(CHUNKS) if chunk in wire]  # the proof travels sealed too
    back = codec.decode(p.InferenceResult, wire)
    verify(back, NODE.public)
    assert c.recipients(back.sealed_output) == [CLIENT.public, V1.public, V2.public]
    assert c.open_output(back, CLIENT).output_text == "the secret output"
    for who in (NODE, EVE):  # the node sealed it but is not a recipient
        with pytest.raises(c.NotARecipient):
            c.open_output(back, who)
    assert c.open_output(back, CLIENT).fingerprint_chunks == CHUNKS  # the client may re-check the proof
    view, prompt, out = c.plaintext_view(back, V2)
    assert prompt == "prompt" and view.prompt_tokens == [1, 2, 3] and view.output_tokens == [7, 8]
    assert view.output_text == "the secret output" and view.request == back.request
    assert view.fingerprint.chunks == CHUNKS and out.fingerprint_chunks == CHUNKS
    assert view.fingerprint.model_copy(update={"chunks": []}) == back.fingerprint
    assert c.sealing_problems(back, out) == []


def test_sealing_problems_catch_a_cheating_node():
    job = _job("prompt")
    honest = c.seal_result(_result(job))
    out = c.open_output(honest, V1)
    lying_counts = honest.model_copy(update={"output_token_count": 99})
    assert any("counts" in x for x in c.sealing_problems(lying_counts, out))
    leaky = honest.model_copy(update={"output_text": "ab"})
    assert any("plaintext" in x for x in c.sealing_problems(leaky, out))
    # The fingerprint left in the clear beside the sealed copy (it gives output tokens away).
    leaky_proof = honest.model_copy(update={"fingerprint": p.Fingerprint(chunks=list(CHUNKS))})
    assert [x for x in c.sealing_problems(leaky_proof, out) if "fingerprint" in x] == [
        "3 fingerprint chunks in the clear beside the sealed output"
    ]
    # Output sealed to the committee only: the client could never read what was verified.
    key = out.key
    no_client = honest.model_copy(
        update={"sealed_output": honest.sealed_output.model_copy(update={"keys": honest.sealed_output.keys[1:]})}
    )
    assert any("sealed to" in x for x in c.sealing_problems(no_client, c.open_output(no_client, V1)))
    # The client's slot replaced by a valid box of a different key.
    decoy = c.seal(b"", [CLIENT.public]).keys[0]
    garbled = honest.model_copy(
        update={
            "sealed_output": honest.sealed_output.model_copy(update={"keys": [decoy, *honest.sealed_output.keys[1:]]})
        }
    )
    problems = c.sealing_problems(garbled, c.open_output(garbled, V1))
    assert any("do not hold" in x and CLIENT.public.hex()[:16] in x for x in problems)
    assert key
    # Another job's sealed output pasted in.
    other = c.seal_result(_result(_job("other")))
    pasted = honest.model_copy(update={"sealed_output": other.sealed_output})
    with pytest.raises(c.ConfidentialError):
        c.open_output(pasted, V1)


def test_plain_results_are_unchanged():
    res = _result(_job("hi", sealed=False))
    wire = msgpack.unpackb(codec.encode(res), raw=False)
    assert not {"sealed_output", "prompt_token_count", "output_token_count"} & set(wire)
    assert "sealed_prompt" not in wire["request"]
    assert res.token_counts() == (3, 2)
    assert c.open_output(res, EVE).output_text == "ab"


def test_a_client_cannot_show_the_node_and_the_committee_different_prompts():
    # Two sealings of one job: the node's slot from one, the verifiers' from the other (same ciphertext would
    # need the same key, so the forger swaps slots of two different keys over one ciphertext).
    job = _job("shown to the node")
    other = c.seal_prompt(job.job_id, CLIENT.public, "shown to the verifiers", NODE.public, [V1.public, V2.public])
    mixed = job.sealed_prompt.model_copy(update={"keys": [job.sealed_prompt.keys[0], *other.keys[1:]]})
    framed = sign(p.JobRequest(**{**job.model_dump(), "sealed_prompt": mixed.model_dump(), "signature": b""}), CLIENT)
    for who in (NODE, V1):  # the node refuses to run it; a verifier would refuse to judge it
        with pytest.raises(c.Tampered, match="slots differ"):
            c.open_prompt(framed, who)


def _seal_payload(job: p.JobRequest, *fields) -> p.InferenceResult:
    """A result whose sealed output holds `fields` as its record (to the client and the committee)."""
    honest = c.seal_result(_result(job))
    return honest.model_copy(
        update={"sealed_output": c.seal(msgpack.packb(list(fields), use_bin_type=True), c.output_recipients(honest))}
    )


def test_sealed_output_records_are_v2_with_the_fingerprint_inside():
    job = _job("prompt")
    # A v1 record (token ids and text, the fingerprint left outside) no longer opens.
    v1 = _seal_payload(job, "loranet/sealed-output/v1", job.job_id, [1, 2, 3], [7, 8], "ab")
    with pytest.raises(c.Tampered, match="not a loranet/sealed-output/v2 record"):
        c.open_output(v1, V1)
    ok = _seal_payload(job, c.DOMAIN_SEALED_OUTPUT, job.job_id, [1, 2, 3], [7, 8], "ab", CHUNKS)
    assert c.open_output(ok, V1).fingerprint_chunks == CHUNKS
    for bad in ([*CHUNKS, "not bytes"], b"".join(CHUNKS), [b"x" * 4097], [b"x"] * 1025):
        with pytest.raises(c.Tampered):
            c.open_output(_seal_payload(job, c.DOMAIN_SEALED_OUTPUT, job.job_id, [1, 2, 3], [7, 8], "ab", bad), V1)
    # The chunks are bound to the job with the rest of the record.
    other = _seal_payload(job, c.DOMAIN_SEALED_OUTPUT, p.new_job_id(), [1, 2, 3], [7, 8], "ab", CHUNKS)
    with pytest.raises(c.Tampered, match="another job"):
        c.open_output(other, V1)


def test_a_real_fingerprint_travels_sealed_and_opens_intact():
    """The node's actual commitment of a generation: absent from the wire bytes, identical once opened."""
    import torch

    from loranet.fingerprint import decode_chunk, fingerprint_chunks

    torch.manual_seed(0)
    prompt_len, n_out = 5, 33
    hidden = torch.randn(prompt_len + n_out, 128)
    chunks = fingerprint_chunks(hidden, prompt_len, n_generated=n_out)
    assert len(chunks) == 3  # prompt, 32 outputs, one one-row chunk (its whole hidden state)
    job = _job("prompt")
    res = _result(
        job, prompt_tokens=range(1, 1 + prompt_len), output_tokens=range(10, 10 + n_out), text="x" * n_out
    ).model_copy(update={"fingerprint": p.Fingerprint(chunks=chunks)})
    wire = codec.encode(sign(c.seal_result(res), NODE))
    assert not [i for i, chunk in enumerate(chunks) if chunk in wire]
    # Not even a 16-byte run from inside the one-row chunk (the chunk that gives its token away exactly).
    assert chunks[2][16:32] not in wire
    back = codec.decode(p.InferenceResult, wire)
    assert back.fingerprint.chunks == []
    opened = c.open_output(back, V2).fingerprint_chunks
    assert opened == chunks
    assert decode_chunk(opened[2]).numel == 128
