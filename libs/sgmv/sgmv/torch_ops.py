"""SGMV in pure torch (the CPU path, and the reference the kernels mirror).

Same signatures as :mod:`sgmv.triton_ops`. Tokens are gathered once into
segment order; each active slot then does one matmul over its contiguous
segment with its own rank. Extra memory is one copy of the adapter tokens'
inputs plus one output-sized delta: never a weight matrix per token.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .bank import PackedLoraWeights
from .metadata import SGMVMetadata

__all__ = ["sgmv_shrink", "sgmv_expand"]


def sgmv_shrink(
    x: torch.Tensor,
    lora: PackedLoraWeights,
    meta: SGMVMetadata,
    v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shrink ``v = x · A_slot`` for every slice of the projection at once.

    Args:
        x: ``[T, in]`` inputs in token order.
        lora: the projection's stacked weights.
        meta: this forward's metadata.
        v: optional float32 ``[T, lora.v_width]`` buffer to fill.

    Returns ``v`` in *segment order*: row ``p`` belongs to token
    ``meta.sorted_tokens[p]``; for a slot, columns ``[0, total_rank)`` hold its
    slices back to back. Rows of base-only tokens are left unwritten.
    """
    if v is None:
        v = torch.empty(meta.num_tokens, lora.v_width, dtype=torch.float32, device=x.device)
    if meta.num_lora_tokens == 0:
        return v
    xs = x.index_select(0, meta.lora_tokens)
    for slot, start, end in meta.segments:
        r = lora.total_ranks_host[slot]
        if r == 0:
            continue
        seg = torch.mm(xs[start:end], lora.lora_a[slot, :r].t())
        v[start:end, :r] = seg
    return v


def sgmv_expand(
    v: torch.Tensor,
    lora: PackedLoraWeights,
    meta: SGMVMetadata,
    y: torch.Tensor | Sequence[torch.Tensor],
) -> None:
    """Expand ``y += v · B_slot`` in place, for every slice.

    Args:
        v: the float32 buffer from :func:`sgmv_shrink`.
        lora: the projection's stacked weights (scale already folded into B).
        meta: this forward's metadata.
        y: either one ``[T, sum(widths)]`` tensor (slices side by side) or one
           ``[T, w_s]`` tensor per slice. Rows of base-only tokens are untouched.
    """
    ys = _split_outputs(y, lora)
    n = meta.num_lora_tokens
    if n == 0:
        return
    idx = meta.lora_tokens
    for s, ys_out in enumerate(ys):
        b_all = lora.b_slice(s)
        delta = None
        for slot, start, end in meta.segments:
            r = lora.ranks_host[slot][s]
            if r == 0:
                continue
            if delta is None:
                delta = torch.zeros(n, lora.slice_widths[s], dtype=ys_out.dtype, device=ys_out.device)
            off = lora.rank_offsets_host[slot][s]
            b = b_all[slot, :r]
            vs = v[start:end, off: off + r]
            if vs.dtype != b.dtype:
                vs = vs.to(b.dtype)
            if b.dtype == delta.dtype:
                torch.mm(vs, b, out=delta[start:end])
            else:
                delta[start:end] = torch.mm(vs, b)
        if delta is not None:
            ys_out.index_add_(0, idx, delta)


def _split_outputs(y, lora: PackedLoraWeights) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        if y.shape[-1] != lora.out_features:
            raise ValueError(f"y has {y.shape[-1]} columns; projection {lora.spec.name!r} has {lora.out_features}")
        return list(torch.split(y, list(lora.slice_widths), dim=-1))
    ys = list(y)
    if len(ys) != lora.num_slices or any(t.shape[-1] != w for t, w in zip(ys, lora.slice_widths)):
        raise ValueError(f"y must be {lora.num_slices} tensors of widths {lora.slice_widths}")
    return ys
