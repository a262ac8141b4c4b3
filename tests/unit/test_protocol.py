"""Every subject's schema: round trips, and rejection of malformed, oversized, unsigned and forged messages."""

from __future__ import annotations

import msgpack
import pytest
from pydantic import ValidationError

from loranet import codec
from loranet import protocol as p
from loranet.signing import Identity, SignatureInvalid, sign
from tests import factories

EXAMPLES = factories.examples()
SIGNERS = {
    p.JOBS_SUBMIT.pattern: factories.CLIENT,
    p.RESULTS_ALL.pattern: factories.NODE,
    p.VERDICTS_ALL.pattern: factories.VERIFIER,
    p.FLAGS_ALL.pattern: factories.VERIFIER,
    p.DATASTORE_DATANET_CONTRIBUTE.pattern: factories.CLIENT,
}
PATTERNS = sorted(s.pattern for s in p.SUBJECTS)


def test_every_subject_has_an_example():
    assert set(EXAMPLES) == set(PATTERNS)


def test_signed_subjects_are_the_signed_schemas():
    assert {s for s in PATTERNS if issubclass(p.declared(s).schema, p.Signed)} == set(SIGNERS)


@pytest.mark.parametrize("subject", PATTERNS)
def test_round_trip(subject):
    declared = p.declared(subject)
    message = EXAMPLES[subject]
    assert type(message) is declared.schema
    data = declared.encode(message)
    back = declared.decode(data)
    assert back == message
    assert codec.canonical_bytes(back, "t") == codec.canonical_bytes(message, "t")


def test_a_subject_refuses_another_schema():
    with pytest.raises(TypeError):
        p.JOBS_SUBMIT.encode(EXAMPLES[p.RESULTS_ALL.pattern])


@pytest.mark.parametrize("subject", PATTERNS)
def test_malformed_and_wrong_version_and_types(subject):
    schema = p.declared(subject).schema
    for junk in (b"", b"\xc1", b"\x93\x01\x02", msgpack.packb([1, 2]), msgpack.packb("text"), b"\x81\xa1v"):
        with pytest.raises(codec.DecodeError):
            codec.decode(schema, junk)
    wire = EXAMPLES[subject].to_wire()
    for bad in ({**wire, "v": 99}, {**wire, "unexpected": 1}, {k: v for k, v in wire.items() if k != next(iter(wire))}):
        with pytest.raises(codec.DecodeError):
            codec.decode(schema, msgpack.packb(bad, use_bin_type=True))
    # Wrong type in every field, one at a time.
    for name, value in wire.items():
        wrong = [1.5] if not isinstance(value, list) else "not-a-list"
        with pytest.raises(codec.DecodeError) as err:
            codec.decode(schema, msgpack.packb({**wire, name: wrong}, use_bin_type=True))
        assert err.value.reason in ("invalid", "unsupported_version")


def test_deep_nesting_and_oversize_are_refused():
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(codec.DecodeError):
        codec.decode(p.JobRequest, msgpack.packb({"v": 1, "prompt": deep}))
    big = codec.encode(factories.job(prompt="x" * p.MAX_PROMPT_CHARS))
    with pytest.raises(codec.DecodeError) as err:
        p.JOBS_SUBMIT.decode(big + b"\x00" * 300_000)
    assert err.value.reason == "too_large"
    with pytest.raises(ValidationError):
        factories.job(prompt="x" * (p.MAX_PROMPT_CHARS + 1))


@pytest.mark.parametrize("subject", sorted(SIGNERS))
def test_signatures_bind_every_field(subject):
    message = EXAMPLES[subject]
    message.verify()
    with pytest.raises(SignatureInvalid):  # unsigned
        message.model_copy(update={"signature": b""}).verify()
    other_domain = SIGNERS[subject].sign_bytes(codec.canonical_bytes(message, "loranet/other/v1"))
    with pytest.raises(SignatureInvalid):  # signed under another domain: no cross-type replay
        message.model_copy(update={"signature": other_domain}).verify()
    flipped = bytearray(message.signature)
    flipped[5] ^= 1
    with pytest.raises(SignatureInvalid):
        message.model_copy(update={"signature": bytes(flipped)}).verify()
    forged = sign(message, Identity.generate())  # valid signature, wrong key
    with pytest.raises(SignatureInvalid):
        forged.verify()
    assert message.signed_by(SIGNERS[subject]).signature == message.signature  # Ed25519 is deterministic
    for name, value in message.to_wire().items():
        if name in ("signature", "v") or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            continue
        tampered = (
            codec.decode(type(message), msgpack.packb({**message.to_wire(), name: _tweak(value)}, use_bin_type=True))
            if _decodes(message, name)
            else None
        )
        if tampered is not None:
            with pytest.raises(SignatureInvalid):
                tampered.verify()


def _tweak(value):
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1")
    if isinstance(value, float):
        return value + 1.0
    return value + 1


def _decodes(message, name):
    try:
        codec.decode(
            type(message),
            msgpack.packb({**message.to_wire(), name: _tweak(message.to_wire()[name])}, use_bin_type=True),
        )
        return True
    except codec.DecodeError:
        return False


def test_manifest_weights_must_sum_to_10000():
    m = factories.manifest().to_wire()
    m["contributors"] = [
        {"contributor_id": "a", "address": factories.ADDR, "weight_bps": 6000},
        {"contributor_id": "b", "address": factories.ADDR, "weight_bps": 3000},
    ]
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(p.AdapterManifest, msgpack.packb(m, use_bin_type=True))
    assert "10000" in str(err.value)


def test_subjects_refuse_wildcards_and_dots():
    assert p.work("node-1") == "work.node-1"
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(ValueError):
            p.work(bad)


def test_amounts_beyond_64_bits_travel_as_strings():
    receipt = EXAMPLES[p.RECEIPTS_ALL.pattern]
    raw = msgpack.unpackb(codec.encode(receipt))
    assert raw["fee"] == str(10**20)
    assert codec.decode(p.Receipt, codec.encode(receipt)).fee == 10**20


def test_the_documented_subject_table_is_the_declared_one():
    from pathlib import Path

    from loranet.protocol import doc

    architecture = (Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    assert doc.current(architecture) == doc.section(), "run: python -m loranet.protocol.doc --write"


def test_every_stream_subject_is_kept_and_every_consumer_reads_a_kept_subject():
    for subject in p.SUBJECTS:
        # Only request-reply subjects and the provisional token stream are core NATS.
        core = isinstance(subject, p.Request) or subject is p.JOB_TOKENS_ALL
        assert (subject.stream is None) == core, subject.pattern
    assert {c.stream for c in p.CONSUMERS} <= {s.name for s in p.STREAMS}
    assert sorted(pat for s in p.STREAMS for pat in s.subjects) == sorted(
        s.pattern for s in p.SUBJECTS if s.stream is not None
    )


def test_error_replies_carry_the_codes_of_the_one_exception_tree():
    from typing import get_args

    from loranet import errors

    assert set(get_args(p.ErrorReply.model_fields["code"].annotation)) == set(errors.CODES)
    assert errors.code_of(codec.DecodeError("invalid", "x")) == "invalid"
    assert errors.code_of(RuntimeError("x")) == "internal"
    assert issubclass(codec.DecodeError, errors.Invalid) and issubclass(codec.DecodeError, ValueError)
