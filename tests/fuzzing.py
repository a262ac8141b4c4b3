"""Hostile inputs for every subject: malformed, wrongly typed, huge, deep, unknown versions, forged, replayed.

`hostile_messages(subject, n, rng)` yields (kind, bytes) pairs built from a valid
example of the subject's schema (tests.factories), so most of them get past
the first byte and exercise validation, signatures and replay handling.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import msgpack

from loranet import codec
from loranet import protocol as p
from loranet.signing import Identity, sign
from tests import factories

KINDS = (
    "bytes",
    "truncate",
    "bitflip",
    "wrong_type",
    "huge_field",
    "deep",
    "version",
    "extra_field",
    "missing_field",
    "forged",
    "unsigned",
    "replay",
    "not_a_map",
)
_STRANGER = Identity.from_seed(b"x" * 32)


def _wrong_value(rng: random.Random, value: object) -> object:
    choices: list[object] = [None, True, -1, 2**63, 1.5, "x", b"\x00", [1, 2], {"a": 1}, "9" * 40]
    return rng.choice([c for c in choices if type(c) is not type(value)])


def _deep(depth: int) -> object:
    obj: object = 0
    for _ in range(depth):
        obj = [obj]
    return obj


def hostile_messages(subject: str, n: int, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    example = factories.examples()[subject]
    wire = example.to_wire()
    valid = codec.encode(example)
    signed = issubclass(p.declared(subject).schema, p.Signed)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "bytes":
            data = rng.randbytes(rng.randint(0, 256))
        elif kind == "truncate":
            data = valid[: rng.randint(0, len(valid) - 1)]
        elif kind == "bitflip":
            buf = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        elif kind == "wrong_type":
            key = rng.choice(list(wire))
            data = msgpack.packb({**wire, key: _wrong_value(rng, wire[key])}, use_bin_type=True)
        elif kind == "huge_field":
            key = rng.choice(list(wire))
            data = msgpack.packb({**wire, key: "A" * rng.choice([70_000, 300_000, 2_000_000])}, use_bin_type=True)
        elif kind == "deep":
            key = rng.choice(list(wire))
            data = msgpack.packb({**wire, key: _deep(rng.randint(40, 400))}, use_bin_type=True)
        elif kind == "version":
            data = msgpack.packb({**wire, "v": rng.choice([0, 2, 99, -1, "1"])}, use_bin_type=True)
        elif kind == "extra_field":
            data = msgpack.packb({**wire, "surprise": rng.randint(0, 9)}, use_bin_type=True)
        elif kind == "missing_field":
            key = rng.choice([k for k in wire if k != "v"] or ["v"])
            data = msgpack.packb({k: v for k, v in wire.items() if k != key}, use_bin_type=True)
        elif kind == "forged" and signed:
            data = codec.encode(sign(_fresh(subject), _STRANGER))
        elif kind == "unsigned" and signed:
            data = codec.encode(_fresh(subject).model_copy(update={"signature": b""}))
        elif kind == "replay":
            data = valid
        elif kind == "not_a_map":
            data = msgpack.packb(rng.choice([[1, 2, 3], "text", 7, None, b"raw"]), use_bin_type=True)
        else:
            data = rng.randbytes(16)
        yield kind, data


def acceptable(subject: str, data: bytes) -> bool:
    """Whether `data` decodes as the subject's schema and, where signed, verifies."""
    from loranet.signing import SignatureInvalid

    try:
        message = p.declared(subject).decode(data)
    except codec.DecodeError:
        return False
    if isinstance(message, p.RerunRequest):  # the client's request inside must still verify
        message = message.request
    if not isinstance(message, p.Signed):
        return True
    try:
        message.verify()
    except SignatureInvalid:
        return False
    return True


def _fresh(subject: str) -> p.Wire:
    """A new valid message of the subject (a new job id, so it is not a replay)."""
    return factories.examples()[subject]
