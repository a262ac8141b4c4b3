"""SGMV against a float64 oracle: mixed ranks, odd sizes, packed slices, popularity patterns."""

import pytest
import torch
from sgmv_oracle import PATTERNS, make_case, oracle, slot_pattern

from sgmv import build_metadata, torch_ops


def _run(ops, x, bank, meta, packed=True):
    lora = bank.projections["proj"]
    v = ops.sgmv_shrink(x, lora, meta)
    if packed:
        y = torch.zeros(x.shape[0], lora.out_features)
        ops.sgmv_expand(v, lora, meta, y)
        return y
    ys = [torch.zeros(x.shape[0], w) for w in lora.slice_widths]
    ops.sgmv_expand(v, lora, meta, ys)
    return torch.cat(ys, dim=1)


def _check(y, ref):
    scale = ref.abs().max().item() + 1e-6
    err = (y.double() - ref).abs().max().item()
    assert err <= 2e-5 * scale, f"max error {err:.3g} vs output scale {scale:.3g}"


# (in_features, slice widths, slots, max_rank, rank choices, tokens)
TORCH_CASES = [
    (2049, (2049,), 1, 128, [128], 96),
    (3424, (3424,), 8, 128, [1, 2, 128, 7], 160),
    (2049, (512, 128, 128), 64, 64, [1, 4, 16, 64, 0], 300),
    (3424, (1000, 24), 17, 32, [3, 32, 0, 9], 200),
    (96, (80, 16, 16), 64, 128, [1, 17, 128], 257),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: f"in{c[0]}-{len(c[1])}sl-{c[2]}slots")
@pytest.mark.parametrize("pattern", PATTERNS)
def test_torch_matches_oracle(case, pattern):
    in_f, widths, num_slots, max_rank, ranks, T = case
    spec, bank, adapters = make_case(in_f, widths, num_slots, max_rank, ranks, seed=len(widths) + num_slots)
    slots = slot_pattern(pattern, T, num_slots, seed=T)
    x = torch.randn(T, in_f, generator=torch.Generator().manual_seed(1))
    meta = build_metadata(slots, num_slots)
    ref = oracle(x, spec, adapters, slots)
    _check(_run(torch_ops, x, bank, meta, packed=True), ref)
    _check(_run(torch_ops, x, bank, meta, packed=False), ref)


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("tokens_per_slot", [1, 3])
def test_torch_batched_decode_path_matches_oracle(contiguous, tokens_per_slot):
    """Equal segments with equal ranks take the bmm path (a view of the bank, or a gather)."""
    in_f, widths, num_slots = 2049, (256, 64, 64), 40
    spec, bank, adapters = make_case(in_f, widths, num_slots, 16, [16], seed=21)
    g = torch.Generator().manual_seed(0)
    used = torch.arange(5, 37) if contiguous else torch.randperm(num_slots, generator=g)[:32]
    slots = used.repeat(tokens_per_slot)
    slots = torch.cat([slots, torch.full((7,), -1)])[torch.randperm(slots.numel() + 7, generator=g)]
    x = torch.randn(slots.numel(), in_f, generator=g)
    meta = build_metadata(slots, num_slots)
    assert meta.uniform_segments and len(meta.segments) == 32
    ref = oracle(x, spec, adapters, slots)
    _check(_run(torch_ops, x, bank, meta, packed=True), ref)
    _check(_run(torch_ops, x, bank, meta, packed=False), ref)


def _apply(x, bank, meta, packed=True):
    from sgmv import apply_lora

    lora = bank.projections["proj"]
    if packed:
        y = torch.zeros(x.shape[0], lora.out_features)
        apply_lora(x, lora, meta, y, backend="torch")
        return y
    ys = [torch.zeros(x.shape[0], w) for w in lora.slice_widths]
    apply_lora(x, lora, meta, ys, backend="torch")
    return torch.cat(ys, dim=1)


def _continuous_batch(num_slots, prefills, decodes, g):
    """A continuous batch's slot map: prefills (one slot, many tokens, contiguous) then one-token decodes."""
    parts = []
    for n in prefills:
        parts.append(torch.full((n,), int(torch.randint(-1, num_slots, (1,), generator=g))))
    parts.append(torch.randint(-1, num_slots, (decodes,), generator=g))
    return torch.cat(parts)


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: f"in{c[0]}-{len(c[1])}sl-{c[2]}slots")
@pytest.mark.parametrize("pattern", PATTERNS + ("continuous",))
def test_apply_lora_torch_matches_oracle(case, pattern):
    """apply_lora on the torch backend: shrink+expand, the bmm path, or padded short segments."""
    in_f, widths, num_slots, max_rank, ranks, T = case
    spec, bank, adapters = make_case(in_f, widths, num_slots, max_rank, ranks, seed=len(widths) + num_slots)
    g = torch.Generator().manual_seed(T)
    if pattern == "continuous":
        slots = _continuous_batch(num_slots, [37, 9, 1], min(T, 64), g)
    else:
        slots = slot_pattern(pattern, T, num_slots, seed=T)
    x = torch.randn(slots.numel(), in_f, generator=g)
    meta = build_metadata(slots, num_slots)
    ref = oracle(x, spec, adapters, slots)
    _check(_apply(x, bank, meta, packed=True), ref)
    _check(_apply(x, bank, meta, packed=False), ref)


def test_apply_lora_torch_padded_path_sees_reloaded_slots():
    """The padded path caches gathered factors per projection; a slot reload must invalidate them."""
    from sgmv_oracle import random_adapter

    in_f, widths, num_slots = 96, (80, 16, 16), 12
    spec, bank, adapters = make_case(in_f, widths, num_slots, 32, [2, 8, 32], seed=4)
    slots = torch.arange(num_slots).repeat(2)  # 24 one-token segments... of 2 tokens each: padded path
    x = torch.randn(slots.numel(), in_f, generator=torch.Generator().manual_seed(3))
    meta = build_metadata(slots, num_slots)
    _check(_apply(x, bank, meta), oracle(x, spec, adapters, slots))
    adapters[5] = random_adapter(spec, [4, 0, 16], seed=99, name="new")
    bank.load(5, adapters[5])
    _check(_apply(x, bank, meta), oracle(x, spec, adapters, slots))
    bank.clear(7)
    del adapters[7]
    _check(_apply(x, bank, meta), oracle(x, spec, adapters, slots))
