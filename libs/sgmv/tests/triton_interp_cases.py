"""Interpreted Triton kernels (TRITON_INTERPRET=1): run by test_triton_interpreted.py in a subprocess."""

import pytest
import torch
from sgmv_oracle import PATTERNS, make_case, oracle, slot_pattern
from test_oracle import _check, _run

from sgmv import bank_for_model, build_metadata, torch_ops

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


def llama_logits_through_backends(triton_ops_module, device="cpu"):
    """Logits of one tiny Llama with three adapters, through the torch backend and through the Triton
    kernels (interpreted on CPU, compiled on CUDA), and of the base model alone."""
    import copy

    from sgmv_oracle import random_adapter
    from test_peft_parity import tiny_llama

    from sgmv import LoraAdapter, lora_context, wrap_llama

    base = tiny_llama().to(device)
    models = {}
    for backend in ("torch", "triton"):
        model = copy.deepcopy(base)
        bank = bank_for_model(model, num_slots=3, max_rank=8)
        for slot in range(3):
            mods = {}
            for i, proj in enumerate(bank.projections.values()):
                ranks = [(slot + i + j) % 3 * 4 for j in range(proj.num_slices)]
                mods.update(random_adapter(proj.spec, ranks, seed=slot * 10 + i).modules)
            bank.load(slot, LoraAdapter(f"s{slot}", mods))
        models[backend] = wrap_llama(model, bank, backend=backend)
    ids = torch.randint(3, 128, (4, 5), generator=torch.Generator().manual_seed(0)).to(device)
    slots = torch.tensor([[2, 0, -1, 2, 1], [1, 1, 1, 1, 1], [-1, -1, 0, 0, 2], [0, 2, 1, -1, 0]]).reshape(-1)
    out = {}
    with torch.no_grad():
        for backend, model in models.items():
            with lora_context(model, slots.to(device)):
                out[backend] = model(input_ids=ids).logits
        out["base"] = base(input_ids=ids).logits
    return out


def test_llama_with_triton_backend_matches_torch_backend(triton_interpreted):
    """A whole (tiny) Llama forward through the interpreted kernels equals the torch path."""
    out = llama_logits_through_backends(triton_interpreted)
    torch.testing.assert_close(out["triton"], out["torch"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out["torch"], out["base"], atol=1e-4)
