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

# Equal segments (decode) are done as one bmm over slots instead of a Python
# loop of tiny matmuls. When the active slots are not a contiguous range the
# slots' weights are gathered first; that copy is bounded by the adapters in
# use and only allowed up to this many adapter tokens (decode sizes).
BATCHED_GATHER_MAX_TOKENS = 256
BATCHED_MAX_SEGMENT = 8


def _batched_weights(stacked: torch.Tensor, meta: SGMVMetadata, rows: slice) -> torch.Tensor | None:
    """``stacked[active_slots][:, rows]`` as a view when the slots are contiguous, else a bounded gather."""
    first, last = meta.segments[0][0], meta.segments[-1][0]
    if last - first + 1 == len(meta.segments):
        return stacked[first: last + 1, rows]
    if meta.num_lora_tokens <= BATCHED_GATHER_MAX_TOKENS:
        return stacked.index_select(0, meta.active_slots)[:, rows]
    return None


def _use_bmm(meta: SGMVMetadata) -> bool:
    # Short equal segments (decode): one bmm beats a loop of tiny matmuls.
    # Long ones (prefill) gain nothing and would pay a gather and a scatter.
    return len(meta.segments) > 1 and meta.uniform_segments and meta.max_segment <= BATCHED_MAX_SEGMENT


def _common(values) -> int | None:
    values = set(values)
    return values.pop() if len(values) == 1 else None


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
    nseg = len(meta.segments)
    batched = _use_bmm(meta)
    xs = x.index_select(0, meta.lora_tokens) if batched or min(meta.segment_rows) < 0 else None
    if batched:
        r = _common(lora.total_ranks_host[slot] for slot, _, _ in meta.segments)
        a = _batched_weights(lora.lora_a, meta, slice(0, r)) if r else None
        if a is not None:
            n = meta.num_lora_tokens
            v3 = torch.bmm(xs.view(nseg, n // nseg, -1), a.transpose(1, 2))
            v[:n, :r] = v3.reshape(n, r)
            return v
    for (slot, start, end), row in zip(meta.segments, meta.segment_rows):
        r = lora.total_ranks_host[slot]
        if r == 0:
            continue
        # A contiguous run of the batch is read in place; others were gathered.
        seg = x[row: row + end - start] if row >= 0 else xs[start:end]
        v[start:end, :r] = torch.mm(seg, lora.lora_a[slot, :r].t())
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
    nseg = len(meta.segments)
    batched = _use_bmm(meta)
    for s, ys_out in enumerate(ys):
        b_all = lora.b_slice(s)
        if batched:
            r = _common(lora.ranks_host[slot][s] for slot, _, _ in meta.segments)
            off = _common(lora.rank_offsets_host[slot][s] for slot, _, _ in meta.segments)
            b = _batched_weights(b_all, meta, slice(0, r)) if r and off is not None else None
            if b is not None:
                vs = v[:n].view(nseg, n // nseg, -1)[:, :, off: off + r]
                delta = torch.bmm(vs.to(b.dtype), b).reshape(n, -1)
                ys_out.index_add_(0, idx, delta.to(ys_out.dtype))
                continue
        delta = None
        for (slot, start, end), row in zip(meta.segments, meta.segment_rows):
            r = lora.ranks_host[slot][s]
            if r == 0:
                continue
            off = lora.rank_offsets_host[slot][s]
            b = b_all[slot, :r]
            vs = v[start:end, off: off + r]
            if vs.dtype != b.dtype:
                vs = vs.to(b.dtype)
            if row >= 0 and b.dtype == ys_out.dtype:
                # A contiguous run of the batch: accumulate in place, no scatter.
                ys_out[row: row + end - start].addmm_(vs, b)
                continue
            if delta is None:
                delta = torch.zeros(n, lora.slice_widths[s], dtype=ys_out.dtype, device=ys_out.device)
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
