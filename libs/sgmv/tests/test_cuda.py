"""The Triton kernels compiled for a real CUDA GPU against the float64 oracle (marked gpu).

The default suite runs the same kernels in Triton's CPU interpreter
(test_triton_interpreted.py); these run them on the device, in float32
(IEEE dots) and bf16 (tensor cores), over the oracle's cases and popularity
patterns, plus a whole Llama forward through the kernels against the torch
path.  Run with ``pytest libs/sgmv/tests -m gpu`` on a machine with CUDA.
"""

import pytest
import torch
from sgmv_oracle import PATTERNS, make_case, oracle, slot_pattern
from test_oracle import TORCH_CASES
from triton_interp_cases import TRITON_CASES, llama_logits_through_backends

from sgmv import build_metadata, torch_ops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


def _triton():
    pytest.importorskip("triton")
    from sgmv import triton_ops

    return triton_ops


def _start(shape, x):
    # float32: y starts random (expand accumulates; rows of base-only tokens must come back unchanged);
    # bf16: from zeros, so the comparison is not swamped by rounding the starting values.
    if x.dtype == torch.float32:
        return torch.randn(*shape, device=x.device, dtype=x.dtype)
    return torch.zeros(*shape, device=x.device, dtype=x.dtype)


def _run(ops, x, bank, meta, packed):
    lora = bank.projections["proj"]
    v = ops.sgmv_shrink(x, lora, meta)
    if packed:
        y0 = _start((x.shape[0], lora.out_features), x)
        y = y0.clone()
        ops.sgmv_expand(v, lora, meta, y)
        return (y.double() - y0.double()).cpu()
    ys0 = [_start((x.shape[0], w), x) for w in lora.slice_widths]
    ys = [t.clone() for t in ys0]
    ops.sgmv_expand(v, lora, meta, ys)
    return torch.cat([(a.double() - b.double()) for a, b in zip(ys, ys0)], dim=1).cpu()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "case", TORCH_CASES + TRITON_CASES, ids=lambda c: f"in{c[0]}-{len(c[1])}sl-{c[2]}slots-T{c[5]}"
)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_triton_cuda_matches_oracle(case, pattern, dtype, tol):
    ops = _triton()
    in_f, widths, num_slots, max_rank, ranks, T = case
    spec, bank, adapters = make_case(
        in_f, widths, num_slots, max_rank, ranks, seed=11 + num_slots, dtype=dtype, device=CUDA
    )
    slots = slot_pattern(pattern, T, num_slots, seed=T + 3)
    x = torch.randn(T, in_f, generator=torch.Generator().manual_seed(T)).to(dtype)
    ref = oracle(x.float(), spec, adapters, slots)  # bf16: the inputs as rounded, the weights unrounded
    meta = build_metadata(slots.to(CUDA), num_slots)
    scale = ref.abs().max().item() + 1e-6
    for packed in (True, False):
        got = _run(ops, x.to(CUDA), bank, meta, packed)
        err = (got - ref).abs().max().item()
        assert err <= tol * scale, f"max error {err:.3g} vs output scale {scale:.3g} (packed={packed})"
        assert torch.isfinite(got).all()


def test_triton_cuda_agrees_with_torch_path_on_device():
    """Same bank, same metadata on the GPU: the kernels and sgmv.torch_ops give the same deltas."""
    ops = _triton()
    spec, bank, adapters = make_case(2048, (2048, 256, 256), 64, 64, [8, 16, 64], seed=5, device=CUDA)
    slots = slot_pattern("zipf", 512, 64, seed=9).to(CUDA)
    x = torch.randn(512, 2048, device=CUDA)
    meta = build_metadata(slots, 64)
    a = _run(ops, x, bank, meta, True)
    b = _run(torch_ops, x, bank, meta, True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_llama_forward_through_cuda_kernels_matches_torch_backend():
    out = llama_logits_through_backends(_triton(), device=CUDA)
    torch.testing.assert_close(out["triton"], out["torch"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out["torch"], out["base"], atol=1e-4)
