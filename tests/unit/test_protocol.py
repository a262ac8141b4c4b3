"""Every subject's schema: round trips, and rejection of malformed, oversized, unsigned and forged messages."""

from __future__ import annotations

import msgpack
import pytest
from pydantic import ValidationError

from loranet import codec, protocol as p
from loranet.signing import Identity, SignatureInvalid, sign, verify

from tests import factories

EXAMPLES = factories.examples()
SIGNED = {p.JOBS_SUBMIT: (p.DOMAIN_JOB_REQUEST, "client_key"), p.RESULTS_ALL: (p.DOMAIN_RESULT, "node_key"),
          p.VERDICTS_ALL: (p.DOMAIN_VERDICT, "verifier_key")}


def test_every_subject_has_an_example():
    assert set(EXAMPLES) == set(p.SCHEMAS)


@pytest.mark.parametrize("subject", sorted(p.SCHEMAS))
def test_round_trip(subject):
    message = EXAMPLES[subject]
    assert type(message) is p.SCHEMAS[subject]
    data = codec.encode(message)
    back = codec.decode(p.SCHEMAS[subject], data, p.MAX_BYTES.get(subject, codec.MAX_MESSAGE_BYTES))
    assert back == message
    assert codec.canonical_bytes(back, "t") == codec.canonical_bytes(message, "t")


@pytest.mark.parametrize("subject", sorted(p.SCHEMAS))
def test_malformed_and_wrong_version_and_types(subject):
    schema = p.SCHEMAS[subject]
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
        codec.decode(p.JobRequest, big + b"\x00" * 300_000, p.MAX_BYTES[p.JOBS_SUBMIT])
    assert err.value.reason == "too_large"
    with pytest.raises(ValidationError):
        factories.job(prompt="x" * (p.MAX_PROMPT_CHARS + 1))


@pytest.mark.parametrize("subject", sorted(SIGNED))
def test_signatures_bind_every_field(subject):
    domain, key_field = SIGNED[subject]
    message = EXAMPLES[subject]
    verify(message, getattr(message, key_field), domain)
    with pytest.raises(SignatureInvalid):  # unsigned
        verify(message.model_copy(update={"signature": b""}), getattr(message, key_field), domain)
    with pytest.raises(SignatureInvalid):  # another domain: no cross-type replay
        verify(message, getattr(message, key_field), "loranet/other/v1")
    flipped = bytearray(message.signature)
    flipped[5] ^= 1
    with pytest.raises(SignatureInvalid):
        verify(message.model_copy(update={"signature": bytes(flipped)}), getattr(message, key_field), domain)
    forged = sign(message, Identity.generate(), domain)  # valid signature, wrong key
    with pytest.raises(SignatureInvalid):
        verify(forged, getattr(message, key_field), domain)
    for name, value in message.to_wire().items():
        if name in ("signature", "v") or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            continue
        tampered = codec.decode(type(message), msgpack.packb({**message.to_wire(), name: _tweak(value)}, use_bin_type=True)) \
            if _decodes(message, name) else None
        if tampered is not None:
            with pytest.raises(SignatureInvalid):
                verify(tampered, getattr(message, key_field), domain)


def _tweak(value):
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1")
    if isinstance(value, float):
        return value + 1.0
    return value + 1


def _decodes(message, name):
    try:
        codec.decode(type(message), msgpack.packb({**message.to_wire(), name: _tweak(message.to_wire()[name])},
                                                  use_bin_type=True))
        return True
    except codec.DecodeError:
        return False


def test_manifest_weights_must_sum_to_10000():
    m = factories.manifest().to_wire()
    m["contributors"] = [{"contributor_id": "a", "address": factories.ADDR, "weight_bps": 6000},
                         {"contributor_id": "b", "address": factories.ADDR, "weight_bps": 3000}]
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(p.AdapterManifest, msgpack.packb(m, use_bin_type=True))
    assert "10000" in str(err.value)


def test_subjects_refuse_wildcards_and_dots():
    assert p.work("node-1") == "work.node-1"
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(ValueError):
            p.work(bad)


def test_amounts_beyond_64_bits_travel_as_strings():
    receipt = EXAMPLES[p.RECEIPTS_ALL]
    raw = msgpack.unpackb(codec.encode(receipt))
    assert raw["fee"] == str(10**20)
    assert codec.decode(p.Receipt, codec.encode(receipt)).fee == 10**20
