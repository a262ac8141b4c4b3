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

For each chunk the rows are flattened ([rows*H], numel = rows*H); the top-k
entries by absolute value (k = min(128, numel)) are committed: each entry's
flat index i and its value v, through one polynomial over GF(p), p = 65521
(the largest prime below 2^16), as TOPLOC does:

- the index i becomes the field point x(i) = mix64(salt, i) mod p, where
  mix64 is the splitmix64 finaliser of i + (salt + 1) * 0x9E3779B97F4A7C15
  (unsigned 64-bit wrap-around arithmetic: deterministic on every platform;
  `field_points`). The node tries salt = 0, 1, 2, ... until the k points are
  pairwise distinct (at k = 128 two of them collide about 12% of the time);
  numel may exceed p: only the k committed points must differ;
- the value v becomes a field element: with lo/hi the smallest/largest |v|
  among the k (as float32) and L = (p-1)/2 - 1 = 32759 levels,
  level = rint((|v| - lo) / (hi - lo) * L) in 0..L, and
  code = level for v >= 0, (p-1)/2 + level for v < 0 (every code < p - 1);
  |v| is committed to within half a step, quant_step = (hi - lo) / L
  (at most 3.1e-5 of hi);
- P is the unique polynomial of degree < k over GF(p) with P(x(i)) = code(v)
  for the k committed entries (Newton divided differences, then monomial
  form; O(k^2) vectorised, about a millisecond).

Encoding (version 2), little-endian:

    u8 version (= 2) | varint k | varint numel | u8 salt | f32 lo | f32 hi
    | k x u16: P's coefficients a_0 .. a_{k-1} (P(x) = sum a_j x^j mod p), each < p

The size is fixed by k and numel's varint: 268 + len(varint(numel)) bytes at
k = 128, i.e. 270 B for a 32-token chunk at hidden width 128 (numel 4096) and
271 B at width 2048 (numel 65536), whatever the values; never truncated.

Verification (`compare_chunk`)
------------------------------
The indices are not in the commitment: the verifier takes the top-k of ITS
OWN recomputed chunk (same k), evaluates P at each index's field point and
maps the code back to a signed value. An index the node committed yields the
committed value (within quant_step/2); any other index yields a pseudo-random
code, i.e. a garbage value somewhere in [-hi, -lo] ∪ [lo, hi] (to one step). A verifier
index "matches" when |recomputed - decoded| - quant_step/2 <= match_rel * hi
(`thresholds.FP_MATCH_REL`). `ChunkScore.index_overlap` is the fraction of
the verifier's top-k that match; the error figures are over the matched
indices only (the rest are either not committed or wrong by more than the
window: both count against the overlap).

What it proves, and what not
----------------------------
k coefficients are exactly enough to fit k points, and P is fixed before the
verifier picks its points. A node that did not compute the honest chunk does
not know the honest top-k indices, so it cannot make P agree with the honest
values at them: at each honest index it did not commit, P gives a garbage
value that lands within the match window only by chance (probability about
match_rel * hi / (hi - lo), a few percent), and at each one it did commit with
a wrong value the error shows. A node that ran a perturbed computation (other
precision, other adapter scale) commits mostly the right indices with values
off by the perturbation: caught by the error thresholds when the errors are
small, by the overlap when they are large.

It does NOT prove: anything about entries outside the top-k (a computation
that changes only small activations of the final state passes); the output
tokens (the sampler replay checks those); that the node computed the states
itself (a node may copy another's honest work). Fitting arbitrary values is
trivial for whoever knows the honest top-k indices, which requires the honest
computation. Nor does it hide the states: anyone who knows or guesses the
prompt can test hypotheses against P with the public model (see
bench/fingerprint_leak.py), and a chunk with numel <= 128 commits every entry
at known indices (the whole state of a one-row chunk at width 128).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from . import thresholds
from .sampling import splitmix64

VERSION = 2
CHUNK_TOKENS = 32
TOP_K = 128
FIELD_P = 65521  # the largest prime below 2^16: coefficients fit a u16
_HALF = (FIELD_P - 1) // 2  # codes >= _HALF are negative values
LEVELS = _HALF - 1  # L: magnitude levels 0..L
_MAX_SALT = 255
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ChunkFingerprint:
    """A parsed chunk commitment: the polynomial and its parameters (no indices: they are implicit)."""

    k: int
    numel: int
    salt: int
    lo: float
    hi: float
    coeffs: np.ndarray  # int64, a_0 .. a_{k-1}, each < FIELD_P
    quant_step: float  # committed values are within quant_step/2 of the true ones

    def codes_at(self, indices: np.ndarray) -> np.ndarray:
        """P evaluated at the field points of these flat indices (int64 codes in 0..p-1)."""
        return _evaluate(self.coeffs, field_points(indices, self.salt))

    def values_at(self, indices: np.ndarray) -> np.ndarray:
        """The values P commits at these flat indices (float64); garbage at indices not committed."""
        return _dequantize(self.codes_at(indices), self.lo, self.quant_step)


@dataclass(frozen=True)
class ChunkScore:
    """How a recomputed chunk agrees with a committed fingerprint; thresholded in thresholds.py.

    numel_match: the recomputed chunk has the committed size (else the other
        figures are worst-case: overlap 0, errors inf).
    index_overlap: fraction of the verifier's own top-k indices at which P
        gives a value within the match window of the recomputed value.
    mean_abs_err / max_abs_err: |recomputed - committed| over the matched
        indices (inf if none matched).
    mean_rel_err / max_rel_err: the same divided by |committed value|.
    quant_step: the commitment's quantization step (errors below quant_step/2
        are indistinguishable from exact).
    hi: the largest committed magnitude (the scale of the relative thresholds).
    """

    numel_match: bool
    index_overlap: float
    mean_abs_err: float
    max_abs_err: float
    mean_rel_err: float
    max_rel_err: float
    quant_step: float
    hi: float


def chunk_spans(prompt_len: int, n_generated: int, chunk: int = CHUNK_TOKENS) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the hidden-state matrix for each chunk (see module docstring)."""
    if prompt_len < 1 or n_generated < 0 or chunk < 1:
        raise ValueError(
            f"need prompt_len >= 1, n_generated >= 0, chunk >= 1; got {prompt_len}, {n_generated}, {chunk}"
        )
    spans = [(0, prompt_len)]
    for j in range(0, n_generated, chunk):
        spans.append((prompt_len - 1 + j, prompt_len - 1 + min(j + chunk, n_generated)))
    return spans


# ---------------------------------------------------------------------------
# GF(p) arithmetic, vectorised in int64 (p^2 < 2^32: products never overflow)
# ---------------------------------------------------------------------------

_inverses: np.ndarray | None = None


def _inv_table() -> np.ndarray:
    """inv[a] = a^(p-2) mod p for every a (inv[0] = 0), by vectorised square-and-multiply."""
    global _inverses
    if _inverses is None:
        base = np.arange(FIELD_P, dtype=np.int64)
        out = np.ones(FIELD_P, dtype=np.int64)
        e = FIELD_P - 2
        while e:
            if e & 1:
                out = out * base % FIELD_P
            base = base * base % FIELD_P
            e >>= 1
        _inverses = out
    return _inverses


def field_points(indices: np.ndarray, salt: int) -> np.ndarray:
    """x(i) = splitmix64(i + (salt + 1) * golden) mod p for each flat index (int64 in 0..p-1)."""
    z = splitmix64(np.asarray(indices).astype(np.uint64) + np.uint64((salt * _GOLDEN) & _MASK64))  # adds one golden
    return (z % np.uint64(FIELD_P)).astype(np.int64)


def _interpolate(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients a_0..a_{k-1} of the polynomial of degree < k through (x_j, y_j); x pairwise distinct."""
    k = x.size
    inv = _inv_table()
    c = y.astype(np.int64) % FIELD_P
    for j in range(1, k):  # Newton divided differences, in place: c[i] = f[x_0..x_i]
        c[j:] = (c[j:] - c[j - 1 : k - 1]) % FIELD_P * inv[(x[j:] - x[: k - j]) % FIELD_P] % FIELD_P
    a = np.zeros(k, dtype=np.int64)  # Horner on the Newton form: P = c_0 + (x - x_0)(c_1 + (x - x_1)(...))
    a[0] = c[k - 1]
    for j in range(k - 2, -1, -1):
        deg = k - 2 - j  # current polynomial a[0..deg+1) has degree `deg`
        prev = a[: deg + 1].copy()
        a[1 : deg + 2] = prev  # times x ...
        a[0] = 0
        a[: deg + 1] = (a[: deg + 1] - x[j] * prev) % FIELD_P  # ... minus x_j times
        a[0] = (a[0] + c[j]) % FIELD_P
    return a


def _evaluate(coeffs: np.ndarray, x: np.ndarray) -> np.ndarray:
    acc = np.zeros(x.shape, dtype=np.int64)
    for a in coeffs[::-1].tolist():
        acc = (acc * x + a) % FIELD_P
    return acc


def _quantize(vals: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    if span > 0:
        level = np.clip(np.rint((np.abs(vals) - lo) / span * LEVELS), 0, LEVELS).astype(np.int64)
    else:
        level = np.zeros(vals.shape, dtype=np.int64)
    quantised: np.ndarray = np.where(vals < 0, _HALF + level, level)
    return quantised


def _dequantize(codes: np.ndarray, lo: float, step: float) -> np.ndarray:
    neg = codes >= _HALF
    mag = lo + np.where(neg, codes - _HALF, codes) * step
    return np.where(neg, -mag, mag)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


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


def _flat(hidden_chunk: torch.Tensor) -> np.ndarray:
    return hidden_chunk.detach().reshape(-1).float().cpu().numpy()


def _topk(flat: np.ndarray, k: int) -> np.ndarray:
    """Ascending flat indices of the k largest |values| (numpy: no torch thread pool for a 64k-entry vector)."""
    mags = np.abs(flat)
    return np.sort(np.argpartition(mags, mags.size - k)[mags.size - k :]).astype(np.int64)


def encode_chunk(hidden_chunk: torch.Tensor, k: int = TOP_K) -> bytes:
    """Commit to the top-k |values| of one chunk of hidden states ([rows, H] or flat); see the module docstring."""
    flat = _flat(hidden_chunk)
    numel = flat.size
    if numel == 0:
        raise ValueError("fingerprint: empty hidden-state chunk")
    if not np.isfinite(flat).all():
        raise ValueError("fingerprint: non-finite hidden states")
    k = min(k, numel)
    idx = _topk(flat, k)
    vals = flat[idx].astype(np.float64)
    mags = np.abs(vals)
    lo, hi = float(np.float32(mags.min())), float(np.float32(mags.max()))
    for salt in range(_MAX_SALT + 1):
        x = field_points(idx, salt)
        if np.unique(x).size == k:
            break
    else:  # 256 salts all colliding: probability far below 2^-700 at k = 128
        raise ValueError("fingerprint: no salt gives distinct field points")
    coeffs = _interpolate(x, _quantize(vals, lo, hi))
    return (
        bytes([VERSION])
        + _varint(k)
        + _varint(numel)
        + bytes([salt])
        + struct.pack("<ff", lo, hi)
        + coeffs.astype("<u2").tobytes()
    )


def decode_chunk(data: bytes) -> ChunkFingerprint:
    """Parse and validate a chunk commitment; raises ValueError (never anything else) if it is malformed."""
    data = bytes(data)
    if not data or data[0] != VERSION:
        raise ValueError(f"fingerprint: unknown version {data[0] if data else None}, expected {VERSION}")
    k, pos = _read_varint(data, 1)
    numel, pos = _read_varint(data, pos)
    if not 0 < k <= numel:
        raise ValueError(f"fingerprint: bad header k={k} numel={numel} (need 0 < k <= numel)")
    if pos + 9 > len(data):
        raise ValueError("fingerprint: truncated header")
    salt = data[pos]
    lo, hi = struct.unpack("<ff", data[pos + 1 : pos + 9])
    if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 <= lo <= hi:
        raise ValueError(f"fingerprint: bad magnitude range lo={lo} hi={hi} (need finite 0 <= lo <= hi)")
    body = data[pos + 9 :]
    if len(body) != 2 * k:
        raise ValueError(f"fingerprint: {len(body)} bytes of coefficients, k={k} needs {2 * k}")
    coeffs = np.frombuffer(body, dtype="<u2").astype(np.int64)
    if int(coeffs.max()) >= FIELD_P:
        raise ValueError(f"fingerprint: coefficient {int(coeffs.max())} is not below p={FIELD_P}")
    return ChunkFingerprint(k, numel, salt, lo, hi, coeffs, (hi - lo) / LEVELS)


def fingerprint_chunks(
    hidden: torch.Tensor,
    prompt_len: int,
    chunk: int = CHUNK_TOKENS,
    k: int = TOP_K,
    n_generated: int | None = None,
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
        raise ValueError(
            f"hidden has {hidden.shape[0]} rows; prompt {prompt_len} + {n_generated} generated needs "
            f"{max(prompt_len, spans[-1][1])}"
        )
    return [encode_chunk(hidden[a:b], k) for a, b in spans]


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


def compare_chunk(
    committed: bytes | ChunkFingerprint,
    recomputed_hidden_chunk: torch.Tensor,
    k: int = TOP_K,
    match_rel: float | None = None,
) -> ChunkScore:
    """Score a recomputed chunk (same rows as committed, see `chunk_spans`) against the commitment.

    P is evaluated at the verifier's own top-k indices (see the module
    docstring). Raises ValueError for a malformed commitment, or one whose k
    is not the protocol's min(k, numel) (a node committing fewer entries
    would have fewer to get right)."""
    fp = decode_chunk(committed) if isinstance(committed, (bytes, bytearray)) else committed
    if fp.k != min(k, fp.numel):
        raise ValueError(f"fingerprint: commits {fp.k} entries of {fp.numel}; the protocol needs {min(k, fp.numel)}")
    match_rel = thresholds.FP_MATCH_REL if match_rel is None else match_rel
    flat = _flat(recomputed_hidden_chunk)
    inf = float("inf")
    if flat.size != fp.numel:
        return ChunkScore(False, 0.0, inf, inf, inf, inf, fp.quant_step, fp.hi)
    idx = _topk(flat, fp.k)
    got = flat[idx].astype(np.float64)
    # Indices at the top-k boundary (magnitude within FP_BOUNDARY_REL * hi of the k-th) are left out: under
    # another machine's rounding they may be in the node's top-k or not, and where not, P gives garbage there.
    mags = np.abs(got)
    judged = mags - mags.min() > thresholds.FP_BOUNDARY_REL * fp.hi
    if not judged.any():  # every entry ties the k-th (a constant chunk): judge them all
        judged[:] = True
    idx, got = idx[judged], got[judged]
    decoded = fp.values_at(idx)
    abs_err = np.abs(got - decoded)
    matched = abs_err - fp.quant_step / 2 <= match_rel * fp.hi
    n = int(matched.sum())
    if n == 0:
        return ChunkScore(True, 0.0, inf, inf, inf, inf, fp.quant_step, fp.hi)
    err = abs_err[matched]
    rel = err / np.maximum(np.abs(decoded[matched]), 1e-12)
    return ChunkScore(
        True,
        n / idx.size,
        float(err.mean()),
        float(err.max()),
        float(rel.mean()),
        float(rel.max()),
        fp.quant_step,
        fp.hi,
    )


def compare_chunks(
    committed: list[bytes], hidden: torch.Tensor, prompt_len: int, n_generated: int, chunk: int = CHUNK_TOKENS
) -> list[ChunkScore]:
    """Score every committed chunk against a verifier's prefill `hidden` over prompt + output.

    A count of commitments that does not match the chunk layout is an error
    (the result's proof is malformed)."""
    spans = chunk_spans(prompt_len, n_generated, chunk)
    if len(committed) != len(spans):
        raise ValueError(
            f"fingerprint has {len(committed)} chunks; prompt {prompt_len} + {n_generated} generated "
            f"tokens make {len(spans)}"
        )
    return [compare_chunk(c, hidden[a:b]) for c, (a, b) in zip(committed, spans)]
