"""Interpreted Triton kernels (TRITON_INTERPRET=1): run by test_triton_interpreted.py in a subprocess."""

import pytest
import torch

from sgmv import build_metadata, torch_ops
from sgmv_oracle import PATTERNS, make_case, oracle, slot_pattern
from test_oracle import _check, _run


TRITON_CASES = [
    (67, (67,), 1, 16, [16], 20),
    (130, (72, 24, 40), 9, 32, [1, 5, 32, 0], 45),
    (48, (40, 24), 64, 16, [1, 16, 3], 70),
    (33, (130,), 4, 128, [128, 2], 18),
]


@pytest.mark.parametrize("case", TRITON_CASES, ids=lambda c: f"in{c[0]}-{len(c[1])}sl-{c[2]}slots")
@pytest.mark.parametrize("pattern", PATTERNS)
def test_triton_interpreted_matches_oracle(triton_interpreted, case, pattern):
    in_f, widths, num_slots, max_rank, ranks, T = case
    spec, bank, adapters = make_case(in_f, widths, num_slots, max_rank, ranks, seed=7 + num_slots)
    slots = slot_pattern(pattern, T, num_slots, seed=T + 1)
    x = torch.randn(T, in_f, generator=torch.Generator().manual_seed(2))
    meta = build_metadata(slots, num_slots)
    ref = oracle(x, spec, adapters, slots)
    _check(_run(triton_interpreted, x, bank, meta, packed=True), ref)
    if pattern == "uniform":
        _check(_run(triton_interpreted, x, bank, meta, packed=False), ref)


def test_triton_and_torch_agree_bf16(triton_interpreted):
    spec, bank, adapters = make_case(64, (48, 16), 6, 16, [4, 16], seed=3, dtype=torch.bfloat16)
    slots = slot_pattern("uniform", 40, 6, seed=5)
    x = torch.randn(40, 64).to(torch.bfloat16)
    meta = build_metadata(slots, 6)
    ref = oracle(x.float(), spec, {s: a for s, a in adapters.items()}, slots)
    for ops in (torch_ops, triton_interpreted):
        lora = bank.projections["proj"]
        y = torch.zeros(40, lora.out_features, dtype=torch.bfloat16)
        ops.sgmv_expand(ops.sgmv_shrink(x, lora, meta), lora, meta, y)
        err = (y.double() - ref).abs().max().item()
        assert err <= 3e-2 * (ref.abs().max().item() + 1e-6)
