"""The fingerprint encoding (version 2: top-k committed through a polynomial over GF(65521)), without a model."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from loranet import fingerprint as F
from loranet.thresholds import FP_MATCH_REL


def _chunk(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))


def _top(h: torch.Tensor, k: int = F.TOP_K) -> np.ndarray:
    flat = h.reshape(-1).numpy()
    return np.sort(np.argsort(-np.abs(flat), kind="stable")[: min(k, flat.size)])


def _assert_round_trip(h: torch.Tensor, blob: bytes) -> F.ChunkFingerprint:
    fp = F.decode_chunk(blob)
    idx = _top(h)
    flat = h.reshape(-1).numpy().astype(np.float64)
    assert fp.k == idx.size and fp.numel == flat.size
    assert fp.lo == pytest.approx(np.abs(flat[idx]).min()) and fp.hi == pytest.approx(np.abs(flat[idx]).max())
    # Every committed value comes back within half a step at its index (float32 slack for lo/hi).
    assert np.abs(fp.values_at(idx) - flat[idx]).max() <= fp.quant_step / 2 + 1e-6 * fp.hi
    score = F.compare_chunk(blob, h)
    assert score.numel_match and score.index_overlap == 1.0
    assert score.max_abs_err <= score.quant_step / 2 + 1e-6 * fp.hi
    return fp


@pytest.mark.parametrize("width", [128, 2048])
def test_round_trip_recovers_every_committed_value(width):
    h = _chunk(32, width)
    fp = _assert_round_trip(h, F.encode_chunk(h))
    assert fp.quant_step == pytest.approx((fp.hi - fp.lo) / F.LEVELS)
    assert fp.quant_step < 4e-5 * fp.hi  # 15-bit magnitudes


def test_size_is_fixed_by_k_at_any_width():
    assert len(F.encode_chunk(_chunk(32, 2048))) == 271
    assert len(F.encode_chunk(_chunk(32, 128))) == 270  # numel 4096: a 2-byte varint
    for width in (64, 256, 512, 1024, 4096, 8192):
        assert len(F.encode_chunk(_chunk(32, width))) <= 300, width
    assert len(F.encode_chunk(_chunk(1, 2048))) <= 300  # a one-row chunk
    assert len(F.encode_chunk(_chunk(300, 2048))) <= 300  # a long prefill (numel 614,400 > p)


def test_field_points_are_splitmix64_mod_p():
    def reference(i: int, salt: int) -> int:  # plain Python integers, independent of numpy
        mask = (1 << 64) - 1
        z = (i + (salt + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return (z ^ (z >> 31)) % F.FIELD_P

    idx = np.array([0, 1, 2, 4095, 65520, 65521, 2**31, 2**40 + 3], dtype=np.int64)
    for salt in (0, 1, 7, 255):
        assert F.field_points(idx, salt).tolist() == [reference(int(i), salt) for i in idx]


def test_colliding_points_make_the_encoder_try_another_salt():
    rng = np.random.default_rng(0)
    for _ in range(200):  # about 12% of 128-index sets collide under salt 0
        idx = np.sort(rng.choice(4096, 128, replace=False))
        if np.unique(F.field_points(idx, 0)).size < 128:
            break
    else:
        pytest.fail("no colliding index set found")
    flat = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 0.1
    flat[torch.from_numpy(idx)] = torch.linspace(1.0, 3.0, 128) * torch.where(torch.rand(128) < 0.5, -1.0, 1.0)
    h = flat.reshape(32, 128)
    assert _top(h).tolist() == idx.tolist()
    blob = F.encode_chunk(h)
    fp = _assert_round_trip(h, blob)
    assert fp.salt >= 1 and np.unique(F.field_points(idx, fp.salt)).size == 128


def test_chunks_larger_than_the_field():
    h = _chunk(40, 2048)  # numel 81,920 > p = 65,521
    _assert_round_trip(h, F.encode_chunk(h))


def test_chunks_smaller_than_k_commit_every_entry():
    for rows, width in ((2, 3), (1, 1), (1, 128)):
        h = _chunk(rows, width)
        fp = _assert_round_trip(h, F.encode_chunk(h))
        assert fp.k == fp.numel == rows * width


def test_equal_magnitudes_and_zeros():
    h = torch.zeros(32, 128)
    h[3] = 1.0
    h[3, :64] = -1.0  # one magnitude for the whole top-k: a zero-width range
    fp = _assert_round_trip(h, F.encode_chunk(h))
    assert fp.quant_step == 0.0
    _assert_round_trip(torch.zeros(4, 8), F.encode_chunk(torch.zeros(4, 8)))


def test_non_finite_or_empty_chunks_are_refused():
    h = _chunk(2, 4)
    h[1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        F.encode_chunk(h)
    with pytest.raises(ValueError, match="empty"):
        F.encode_chunk(torch.zeros(0, 4))


def _blob(
    k: int = 128,
    numel: int = 4096,
    salt: int = 0,
    lo: float = 0.5,
    hi: float = 2.0,
    coeffs: bytes | None = None,
    version: int = 2,
) -> bytes:
    body = bytes(2 * k) if coeffs is None else coeffs
    return bytes([version]) + F._varint(k) + F._varint(numel) + bytes([salt]) + struct.pack("<ff", lo, hi) + body


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "unknown version None"),
        (_blob(version=1), "unknown version 1"),
        (b"\x02", "truncated or overlong varint"),
        (b"\x02\x80", "truncated or overlong varint"),
        (b"\x02" + b"\xff" * 12, "truncated or overlong varint"),
        (_blob(k=0), "bad header"),
        (_blob(k=129, numel=128), "bad header"),
        (_blob()[:8], "truncated header"),
        (_blob(lo=2.0, hi=1.0), "bad magnitude range"),
        (_blob(lo=-1.0), "bad magnitude range"),
        (_blob(lo=float("nan")), "bad magnitude range"),
        (_blob(hi=float("inf")), "bad magnitude range"),
        (_blob()[:-1], "255 bytes of coefficients"),
        (_blob() + b"\x00\x00", "258 bytes of coefficients"),
        (_blob(coeffs=bytes(254) + struct.pack("<H", F.FIELD_P)), "not below p"),
    ],
)
def test_malformed_blobs_are_value_errors(blob, message):
    with pytest.raises(ValueError, match=message):
        F.decode_chunk(blob)
    with pytest.raises(ValueError):
        F.compare_chunk(blob, _chunk(32, 128))


def test_a_chunk_committing_fewer_entries_than_the_protocol_is_refused():
    h = _chunk(32, 128)
    few = F.encode_chunk(h, k=16)
    assert F.decode_chunk(few).k == 16
    with pytest.raises(ValueError, match="the protocol needs 128"):
        F.compare_chunk(few, h)


def test_random_corruption_never_crashes_the_verifier():
    h = _chunk(32, 128)
    good = F.encode_chunk(h)
    rng = np.random.default_rng(3)
    for _ in range(500):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        b = bytes(b[: int(rng.integers(len(b) - 20, len(b) + 1))]) if rng.random() < 0.3 else bytes(b)
        try:
            score = F.compare_chunk(b, h)
        except ValueError:
            continue
        assert 0.0 <= score.index_overlap <= 1.0


def test_wrong_size_recomputation_is_a_mismatch():
    h = _chunk(32, 128)
    s = F.compare_chunk(F.encode_chunk(h), h[:31])
    assert not s.numel_match and s.index_overlap == 0.0 and s.mean_abs_err == float("inf")


@pytest.mark.parametrize("width", [128, 2048])
def test_perturbed_states_score_worse_than_honest(width):
    h = _chunk(32, width) * 3
    blob = F.encode_chunk(h)
    honest = F.compare_chunk(blob, h)
    bf16 = F.compare_chunk(blob, h.bfloat16().float())
    noise = 2e-3 * float(h.abs().max()) * torch.randn(h.shape, generator=torch.Generator().manual_seed(9))
    noisy = F.compare_chunk(blob, h + noise)  # relative noise of 2e-3 of the largest magnitude
    half = honest.quant_step / 2
    assert honest.index_overlap == 1.0 and honest.max_abs_err <= half + 1e-6 * honest.hi
    for s in (bf16, noisy):
        # bf16 rounding (about 2^-9 relative) is far outside the 15-bit half-step but inside the match window.
        assert s.index_overlap >= 0.9
        assert s.mean_abs_err - half > 10 * half and s.max_abs_err > 50 * half
        assert s.max_abs_err - half <= FP_MATCH_REL * s.hi


@pytest.mark.parametrize("width", [128, 2048])
def test_other_hidden_states_do_not_match(width):
    blob = F.encode_chunk(_chunk(32, width, seed=0))
    overlaps = [F.compare_chunk(blob, _chunk(32, width, seed=s)).index_overlap for s in range(1, 9)]
    # Only garbage values at indices the node did not commit: a match is chance (~ FP_MATCH_REL * hi / (hi - lo)).
    assert max(overlaps) <= 0.2 and np.mean(overlaps) <= 0.1, overlaps


def test_encode_and_compare_are_fast():
    import time

    h = _chunk(32, 2048)
    F.encode_chunk(h)
    t0 = time.perf_counter()
    for _ in range(10):
        blob = F.encode_chunk(h)
    enc = (time.perf_counter() - t0) / 10
    t0 = time.perf_counter()
    for _ in range(10):
        F.compare_chunk(blob, h)
    cmp = (time.perf_counter() - t0) / 10
    assert enc < 0.05 and cmp < 0.05, (enc, cmp)  # ~3 ms / ~1.5 ms here; loose for a loaded shared machine


def test_a_top_k_boundary_flip_does_not_reject_an_honest_chunk():
    """Another machine's rounding can swap the k-th and (k+1)-th magnitudes. At the index that swapped in, P
    gives garbage; when that garbage lands inside the match window but beyond the max-error bound, the chunk
    would be rejected. The verifier leaves indices at its own top-k boundary out of the figures."""
    from loranet import thresholds

    h = _chunk(32, 2048, seed=3)
    blob = F.encode_chunk(h)
    fp = F.decode_chunk(blob)
    flat = h.reshape(-1).numpy().astype(np.float64)
    order = np.argsort(-np.abs(flat), kind="stable")
    committed, outside = order[: F.TOP_K], order[F.TOP_K : F.TOP_K + 4000]
    kth = np.abs(flat[committed]).min()
    # An index just outside the top-k whose garbage is the worst case: matched, yet beyond the max-error bound.
    garbage = fp.values_at(np.sort(outside))
    lo_err, hi_err = thresholds.FP_MAX_EXCESS_REL * fp.hi, FP_MATCH_REL * fp.hi
    cands = [j for j, g in zip(np.sort(outside), garbage) if lo_err < abs(abs(g) - kth) < hi_err / 2]
    assert cands, "no worst-case index among 4,000: the construction needs one"
    j = cands[0]
    g = fp.values_at(np.array([j]))[0]
    flipped = flat.copy()
    flipped[j] = np.sign(g) * kth * (1 + 1e-7)  # now ties the k-th: in the verifier's top-k, out of the node's
    k_idx = committed[np.argmin(np.abs(flat[committed]))]
    flipped[k_idx] = np.sign(flat[k_idx]) * kth * (1 - 1e-7)  # the node's k-th drops out
    h2 = torch.from_numpy(flipped.astype(np.float32)).view(32, 2048)
    assert j in set(F._topk(flipped.astype(np.float32), F.TOP_K).tolist())
    score = F.compare_chunk(blob, h2)
    assert score.index_overlap == 1.0 and score.max_abs_err <= score.quant_step / 2 + 1e-5 * fp.hi, score
    # Without the boundary zone the same chunk fails on the garbage value (what this test guards against).
    saved = thresholds.FP_BOUNDARY_REL
    try:
        thresholds.FP_BOUNDARY_REL = -1.0
        bad = F.compare_chunk(blob, h2)
    finally:
        thresholds.FP_BOUNDARY_REL = saved
    assert (bad.max_abs_err - bad.quant_step / 2) / bad.hi > thresholds.FP_MAX_EXCESS_REL


def test_the_boundary_zone_is_small():
    """Apart from the k-th itself, almost no index falls in the zone left out of the figures."""
    from loranet import thresholds

    extra = []
    for seed in range(20):
        flat = _chunk(32, 2048, seed=seed).reshape(-1).numpy()
        mags = np.sort(np.abs(flat))[::-1][: F.TOP_K]
        extra.append(int((mags - mags[-1] <= thresholds.FP_BOUNDARY_REL * mags[0]).sum()) - 1)
    assert np.mean(extra) < 1.0 and max(extra) <= 3, extra
