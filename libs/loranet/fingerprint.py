"""TOPLOC-style activation fingerprints of a generation, and their comparison.

What is committed
-----------------
Rows of "hidden" are final-norm hidden states, one per position, in the
convention of `loranet.model.generate`: row t is the state after reading
token t, which predicts token t+1. For a prompt of P tokens and N output
tokens the chunks are:

- chunk 0, the prefill: rows 0..P-1 (the whole prompt, one chunk);
- chunk c >= 1, output tokens j in [32(c-1), 32c) ∩ [0, N): rows P-1+j,
  the states whose logits sampled those tokens.

So the node commits while decoding (it has row P-1+j when it samples token
j) and the verifier recomputes every row with ONE prefill over prompt +
output. `chunk_spans` gives the row ranges.

For each chunk the rows are flattened ([rows*H]); the top-k entries by
absolute value (k = min(k, numel)) are committed: their exact index set and
their values, quantized.

Encoding (version 1), all integers little-endian:

    u8 version | varint k | varint numel | u8 rice_param | u8 value_bits
    | f32 lo | f32 hi | bit stream (MSB first, zero-padded to a byte):
        k gaps (idx[i] - idx[i-1] - 1, idx[-1] = -1), Golomb-Rice coded
        k values in index order: sign bit + (value_bits-1)-bit level,
        |v| ≈ lo + level * (hi - lo) / (2^(value_bits-1) - 1)

lo/hi are the smallest/largest magnitude among the k. `value_bits` is the
largest in 8..16 that keeps the chunk within `max_bytes` (300 by default);
for the default model (H=128) a 32-token chunk at k=128 takes ≤ 300 bytes
with 10-11 value bits (relative precision about 1e-3 of the magnitude range). The index set is committed exactly;
the values only to within half a quantization step (`ChunkScore.quant_step`).
A chunk over a very large space (a long prompt of a wide model) may exceed
`max_bytes` at the 8-bit minimum; it is never truncated.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

VERSION = 1
CHUNK_TOKENS = 32
TOP_K = 128
MAX_BYTES = 300
_MIN_VALUE_BITS, _MAX_VALUE_BITS = 8, 16


@dataclass(frozen=True)
class ChunkFingerprint:
    """A decoded chunk commitment."""

    indices: np.ndarray  # int64, ascending, into the chunk's flattened [rows*H]
    values: np.ndarray  # float64, dequantized, same order
    numel: int
    quant_step: float  # values are within quant_step/2 of what was committed


@dataclass(frozen=True)
class ChunkScore:
    """How a recomputed chunk agrees with a committed fingerprint; thresholded in thresholds.py.

    numel_match: the recomputed chunk has the committed size (else the other
        figures are worst-case: overlap 0, errors inf).
    index_overlap: fraction of committed indices that are in the recomputed top-k.
    mean_abs_err / max_abs_err: |recomputed - committed| at committed indices.
    mean_rel_err / max_rel_err: the same divided by |committed value|.
    quant_step: the commitment's quantization step (errors below quant_step/2
        are indistinguishable from exact).
    """

    numel_match: bool
    index_overlap: float
    mean_abs_err: float
    max_abs_err: float
    mean_rel_err: float
    max_rel_err: float
    quant_step: float


def chunk_spans(prompt_len: int, n_generated: int, chunk: int = CHUNK_TOKENS) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the hidden-state matrix for each chunk (see module docstring)."""
    if prompt_len < 1 or n_generated < 0 or chunk < 1:
        raise ValueError(f"need prompt_len >= 1, n_generated >= 0, chunk >= 1; got {prompt_len}, {n_generated}, {chunk}")
    spans = [(0, prompt_len)]
    for j in range(0, n_generated, chunk):
        spans.append((prompt_len - 1 + j, prompt_len - 1 + min(j + chunk, n_generated)))
    return spans


def _topk(flat: torch.Tensor, k: int) -> np.ndarray:
    idx = torch.topk(flat.abs(), k, sorted=False).indices
    return np.sort(idx.cpu().numpy().astype(np.int64))


class _Bits:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def put(self, value: int, width: int) -> None:
        if width:
            self.parts.append(format(value, f"0{width}b"))

    def unary(self, q: int) -> None:
        self.parts.append("1" * q + "0")

    def to_bytes(self) -> bytes:
        s = "".join(self.parts)
        if not s:
            return b""
        s += "0" * (-len(s) % 8)
        return int(s, 2).to_bytes(len(s) // 8, "big")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("fingerprint: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def encode_chunk(hidden_chunk: torch.Tensor, k: int = TOP_K, max_bytes: int = MAX_BYTES) -> bytes:
    """Commit to the top-k |values| of one chunk of hidden states ([rows, H] or flat)."""
    flat = hidden_chunk.detach().reshape(-1).float().cpu()
    numel = flat.numel()
    if numel == 0:
        raise ValueError("fingerprint: empty hidden-state chunk")
    k = min(k, numel)
    idx = _topk(flat, k)
    vals = flat.numpy().astype(np.float64)[idx]
    gaps = np.diff(idx, prepend=-1) - 1
    mags = np.abs(vals)
    lo = float(np.float32(mags.min()))
    hi = float(np.float32(mags.max()))
    max_gap_bits = int(gaps.max()).bit_length()
    rice = min(range(max_gap_bits + 1), key=lambda r: int(np.sum(gaps >> r)) + k * (r + 1))
    gap_bits = int(np.sum(gaps >> rice)) + k * (rice + 1)
    header_len = 1 + len(_varint(k)) + len(_varint(numel)) + 2 + 8
    value_bits = _MIN_VALUE_BITS
    for b in range(_MAX_VALUE_BITS, _MIN_VALUE_BITS - 1, -1):
        if header_len + math.ceil((gap_bits + k * b) / 8) <= max_bytes:
            value_bits = b
            break
    levels = (1 << (value_bits - 1)) - 1
    span = hi - lo
    q = np.zeros(k, dtype=np.int64) if span == 0 else np.clip(np.rint((mags - lo) / span * levels), 0, levels).astype(np.int64)
    bits = _Bits()
    for g in gaps.tolist():
        bits.unary(g >> rice)
        bits.put(g & ((1 << rice) - 1), rice)
    for v, level in zip(vals.tolist(), q.tolist()):
        bits.put(1 if v < 0 else 0, 1)
        bits.put(level, value_bits - 1)
    header = bytes([VERSION]) + _varint(k) + _varint(numel) + bytes([rice, value_bits]) + struct.pack("<ff", lo, hi)
    return header + bits.to_bytes()


def decode_chunk(data: bytes) -> ChunkFingerprint:
    """Parse a chunk commitment; raises ValueError if it is malformed."""
    if not data or data[0] != VERSION:
        raise ValueError(f"fingerprint: unknown version {data[0] if data else None}, expected {VERSION}")
    k, pos = _read_varint(data, 1)
    numel, pos = _read_varint(data, pos)
    if pos + 10 > len(data):
        raise ValueError("fingerprint: truncated header")
    rice, value_bits = data[pos], data[pos + 1]
    lo, hi = struct.unpack("<ff", data[pos + 2 : pos + 10])
    if not (0 < k <= numel) or not (2 <= value_bits <= 32) or rice > 63:
        raise ValueError(f"fingerprint: bad header k={k} numel={numel} rice={rice} value_bits={value_bits}")
    body = data[pos + 10 :]
    s = format(int.from_bytes(body, "big"), f"0{len(body) * 8}b") if body else ""
    p = 0
    idx = np.empty(k, dtype=np.int64)
    prev = -1
    try:
        for i in range(k):
            q = s.index("0", p) - p
            p += q + 1
            rem = int(s[p : p + rice], 2) if rice else 0
            if len(s) < p + rice:
                raise ValueError
            p += rice
            prev = prev + 1 + ((q << rice) | rem)
            idx[i] = prev
        levels = (1 << (value_bits - 1)) - 1
        step = (hi - lo) / levels if levels else 0.0
        vals = np.empty(k, dtype=np.float64)
        for i in range(k):
            if len(s) < p + value_bits:
                raise ValueError
            sign = s[p] == "1"
            level = int(s[p + 1 : p + value_bits], 2) if value_bits > 1 else 0
            p += value_bits
            mag = lo + level * step
            vals[i] = -mag if sign else mag
    except ValueError:
        raise ValueError("fingerprint: truncated bit stream") from None
    if prev >= numel:
        raise ValueError(f"fingerprint: index {prev} outside the chunk of {numel} values")
    return ChunkFingerprint(idx, vals, numel, step)


def fingerprint_chunks(
    hidden: torch.Tensor,
    prompt_len: int,
    chunk: int = CHUNK_TOKENS,
    k: int = TOP_K,
    n_generated: int | None = None,
    max_bytes: int = MAX_BYTES,
) -> list[bytes]:
    """Commitments for the prefill chunk and each `chunk` generated tokens.

    `hidden` is [T, H] final-norm hidden states, rows as in the module
    docstring. By default T is the node's layout, T = prompt_len + N - 1
    (N = n_generated >= 1); pass `n_generated` when `hidden` has more rows
    (the verifier's prefill over prompt + output has prompt_len + N)."""
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [T, H], got shape {tuple(hidden.shape)}")
    if n_generated is None:
        n_generated = max(hidden.shape[0] - prompt_len + 1, 0)
    spans = chunk_spans(prompt_len, n_generated, chunk)
    if spans[-1][1] > hidden.shape[0] or prompt_len > hidden.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows; prompt {prompt_len} + {n_generated} generated needs "
                         f"{max(prompt_len, spans[-1][1])}")
    return [encode_chunk(hidden[a:b], k, max_bytes) for a, b in spans]


def compare_chunk(committed: bytes | ChunkFingerprint, recomputed_hidden_chunk: torch.Tensor) -> ChunkScore:
    """Score a recomputed chunk (same rows as committed, see `chunk_spans`) against the commitment.

    Recomputed values are read at the committed indices; the recomputed
    top-k (same k) gives the index overlap."""
    fp = decode_chunk(committed) if isinstance(committed, (bytes, bytearray)) else committed
    flat = recomputed_hidden_chunk.detach().reshape(-1).float().cpu()
    if flat.numel() != fp.numel:
        inf = float("inf")
        return ChunkScore(False, 0.0, inf, inf, inf, inf, fp.quant_step)
    k = fp.indices.size
    recomputed_top = _topk(flat, k)
    overlap = np.intersect1d(recomputed_top, fp.indices, assume_unique=True).size / k
    got = flat.numpy().astype(np.float64)[fp.indices]
    abs_err = np.abs(got - fp.values)
    rel_err = abs_err / np.maximum(np.abs(fp.values), 1e-12)
    return ChunkScore(True, float(overlap), float(abs_err.mean()), float(abs_err.max()),
                      float(rel_err.mean()), float(rel_err.max()), float(fp.quant_step))


def compare_chunks(committed: list[bytes], hidden: torch.Tensor, prompt_len: int, n_generated: int,
                   chunk: int = CHUNK_TOKENS) -> list[ChunkScore]:
    """Score every committed chunk against a verifier's prefill `hidden` over prompt + output.

    A count of commitments that does not match the chunk layout is an error
    (the result's proof is malformed)."""
    spans = chunk_spans(prompt_len, n_generated, chunk)
    if len(committed) != len(spans):
        raise ValueError(f"fingerprint has {len(committed)} chunks; prompt {prompt_len} + {n_generated} generated "
                         f"tokens make {len(spans)}")
    return [compare_chunk(c, hidden[a:b]) for c, (a, b) in zip(committed, spans)]
