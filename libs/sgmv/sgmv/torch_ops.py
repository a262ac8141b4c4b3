"""SGMV in pure torch (the CPU path, and the reference the kernels mirror).

Same signatures as :mod:`sgmv.triton_ops`. Tokens are gathered once into
segment order; each active slot then does one matmul over its contiguous
segment with its own rank. Extra memory is one copy of the adapter tokens'
inputs plus one output-sized delta: never a weight matrix per token.

:func:`sgmv_apply` (what :func:`sgmv.apply_lora` calls on this backend) adds
the path a continuous batch needs on CPU: many short segments of mixed ranks
(64 one-token decodes over 64 adapters of ranks 4/8/16) would otherwise be
~64 x 2 tiny matmuls per projection, where Python overhead dominates.  The
short segments are padded to the longest of them and every slot's factors to
the largest rank among them, then shrink and expand are one ``bmm`` each
(rows past a slot's rank are zero in the bank, so padding adds exact zeros);
slots are grouped by rank (next power of two) so the padding stays under 2x.
The gathered factors are kept per projection until the bank's ``generation``
changes or a step needs a slot they lack: a step whose slots are a subset of
the gathered ones (sequences left the batch) runs the bmm over the gathered
groups with zero rows for the idle slots, as long as at least half of them are
active, so a draining batch does not copy every adapter's factors again each
time a sequence finishes (a chat mix's common case).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .metadata import SGMVMetadata
from .packed import PackedLoraWeights

__all__ = ["sgmv_shrink", "sgmv_expand", "sgmv_apply"]

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
        return stacked[first : last + 1, rows]
    if meta.num_lora_tokens <= BATCHED_GATHER_MAX_TOKENS:
        return stacked.index_select(0, meta.active_slots)[:, rows]
    return None


def _use_bmm(meta: SGMVMetadata) -> bool:
    # Short equal segments (decode): one bmm beats a loop of tiny matmuls.
    # Long ones (prefill) gain nothing and would pay a gather and a scatter.
    return len(meta.segments) > 1 and meta.uniform_segments and meta.max_segment <= BATCHED_MAX_SEGMENT


def _common(values: Iterable[int]) -> int | None:
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
        if a is not None and r is not None and xs is not None:
            n = meta.num_lora_tokens
            v3 = torch.bmm(xs.view(nseg, n // nseg, -1), a.transpose(1, 2))
            v[:n, :r] = v3.reshape(n, r)
            return v
    for (slot, start, end), row in zip(meta.segments, meta.segment_rows):
        r = lora.total_ranks_host[slot]
        if r == 0:
            continue
        # A contiguous run of the batch is read in place; others were gathered.
        seg = x[row : row + end - start] if row >= 0 or xs is None else xs[start:end]
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
            if b is not None and r is not None and off is not None:
                vs = v[:n].view(nseg, n // nseg, -1)[:, :, off : off + r]
                batched_delta = torch.bmm(vs.to(b.dtype), b).reshape(n, -1)
                ys_out.index_add_(0, idx, batched_delta.to(ys_out.dtype))
                continue
        delta: torch.Tensor | None = None
        for (slot, start, end), row in zip(meta.segments, meta.segment_rows):
            r = lora.ranks_host[slot][s]
            if r == 0:
                continue
            off = lora.rank_offsets_host[slot][s]
            b = b_all[slot, :r]
            vs = v[start:end, off : off + r]
            if vs.dtype != b.dtype:
                vs = vs.to(b.dtype)
            if row >= 0 and b.dtype == ys_out.dtype:
                # A contiguous run of the batch: accumulate in place, no scatter.
                ys_out[row : row + end - start].addmm_(vs, b)
                continue
            if delta is None:
                delta = torch.zeros(n, lora.slice_widths[s], dtype=ys_out.dtype, device=ys_out.device)
            if b.dtype == delta.dtype:
                torch.mm(vs, b, out=delta[start:end])
            else:
                delta[start:end] = torch.mm(vs, b)
        if delta is not None:
            ys_out.index_add_(0, idx, delta)


def _split_outputs(y: torch.Tensor | Sequence[torch.Tensor], lora: PackedLoraWeights) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        if y.shape[-1] != lora.out_features:
            raise ValueError(f"y has {y.shape[-1]} columns; projection {lora.spec.name!r} has {lora.out_features}")
        return list(torch.split(y, list(lora.slice_widths), dim=-1))
    ys = list(y)
    if len(ys) != lora.num_slices or any(t.shape[-1] != w for t, w in zip(ys, lora.slice_widths)):
        raise ValueError(f"y must be {lora.num_slices} tensors of widths {lora.slice_widths}")
    return ys


# sgmv_apply: segments up to this many tokens are padded together; longer ones get their own matmul.
PAD_SEGMENT_MAX = 8


@dataclass
class _PaddedPlan:
    """Per-forward grouping of the metadata's segments (shared by every projection)."""

    slots: tuple[int, ...]  # the short segments' slots, one row block each
    tokens: torch.Tensor  # [G, S] token index (padding repeats a valid token; its delta is dropped)
    valid: torch.Tensor  # [G*S] bool
    all_valid: bool
    long_segments: SGMVMetadata | None  # the metadata narrowed to the other segments (None: there are none)
    _rows: dict[tuple[int, ...], Any] | None = None
    _layouts: dict[tuple[int, ...], Any] | None = None

    def layout_of(self, group_slots: tuple[int, ...]) -> Any:
        """Where a gathered group's slots sit in this plan: (plan rows as a tuple, the same as a tensor, the
        group positions that are active as a tensor, or None when all are, in group order); None when
        none of the group's slots is in this step."""
        if self._layouts is None:
            self._layouts = {}
        if group_slots not in self._layouts:
            pos = {slot: i for i, slot in enumerate(self.slots)}
            rows = [(j, pos[s]) for j, s in enumerate(group_slots) if s in pos]
            dev = self.tokens.device
            self._layouts[group_slots] = (
                None
                if not rows
                else (
                    tuple(r for _, r in rows),
                    torch.tensor([r for _, r in rows], dtype=torch.long, device=dev),
                    None
                    if len(rows) == len(group_slots)
                    else torch.tensor([j for j, _ in rows], dtype=torch.long, device=dev),
                )
            )
        return self._layouts[group_slots]

    def rows_of(self, key: tuple[int, ...], rows: torch.Tensor) -> Any:
        """For a subset of the plan's row blocks: (input token of each padded row, output token of each
        kept row, mask of kept rows or None), computed once per forward for every projection using it."""
        if self._rows is None:
            self._rows = {}
        hit = self._rows.get(key)
        if hit is None:
            tokens = self.tokens.index_select(0, rows).view(-1)
            if self.all_valid:
                hit = (tokens, tokens, None)
            else:
                keep = self.valid.view(self.tokens.shape).index_select(0, rows).view(-1)
                hit = (tokens, tokens[keep], keep)
            self._rows[key] = hit
        return hit


def _padded_plan(meta: SGMVMetadata) -> _PaddedPlan:
    cached: _PaddedPlan | None = meta.__dict__.get("_padded_plan")
    if cached is not None:
        return cached
    sorted_tokens = meta.sorted_tokens.cpu()
    short = [(slot, a, b) for slot, a, b in meta.segments if b - a <= PAD_SEGMENT_MAX]
    rows = meta.segment_rows or (-1,) * len(meta.segments)
    long = [(seg, row) for seg, row in zip(meta.segments, rows) if seg[2] - seg[1] > PAD_SEGMENT_MAX]
    # Same tokens and sorted order, fewer segments: sgmv_shrink/sgmv_expand then visit only these.
    long_meta = (
        dataclasses.replace(meta, segments=tuple(seg for seg, _ in long), segment_rows=tuple(row for _, row in long))
        if long
        else None
    )
    S = max((b - a for _, a, b in short), default=0)
    if short:
        pos = torch.tensor([a for _, a, _ in short])[:, None] + torch.arange(S)[None, :]
        valid = pos < torch.tensor([b for _, _, b in short])[:, None]
        tokens = sorted_tokens[torch.where(valid, pos, pos[:, :1])]
        valid_flat = valid.reshape(-1)
    else:
        tokens = torch.zeros(0, 0, dtype=torch.long)
        valid_flat = torch.zeros(0, dtype=torch.bool)
    dev = meta.sorted_tokens.device
    plan = _PaddedPlan(
        tuple(s for s, _, _ in short), tokens.to(dev), valid_flat.to(dev), bool(valid_flat.all()), long_meta
    )
    object.__setattr__(meta, "_padded_plan", plan)  # the metadata is frozen; the plan is derived from it
    return plan


def _gathered(lora: PackedLoraWeights, p: _PaddedPlan) -> list[tuple[tuple[int, ...], torch.Tensor, torch.Tensor]]:
    """The plan's slots grouped by this projection's total rank (next power of two), per group
    (its slots, A [g, in, R], B [g, R, out]) with R the group's largest rank: every slice's B rows
    placed at the v columns each slot's slice reads, so one bmm expands q/k/v (or gate/up) together.
    Grouping keeps rank padding under 2x (one group padded to the batch's largest rank read ~2x the
    bytes with demo-like mixes of ranks 4-16 over 2-3 slices).  One cached entry per projection, reused
    while the bank is unchanged and the step's slots are a subset holding at least half of it."""
    entry = lora._torch_gathered
    if entry is not None and entry[0][1] == lora.generation:
        cached = entry[0][0]
        if cached == p.slots or (set(p.slots) <= set(cached) and 2 * len(p.slots) >= len(cached)):
            factors: list[tuple[tuple[int, ...], torch.Tensor, torch.Tensor]] = entry[1]
            return factors
    dev = p.tokens.device
    groups: dict[int, list[int]] = {}
    for i, slot in enumerate(p.slots):
        r = lora.total_ranks_host[slot]
        if r:
            groups.setdefault(1 << (r - 1).bit_length(), []).append(i)
    value = []
    for rows in groups.values():
        slots = [p.slots[i] for i in rows]
        slots_t = torch.tensor(slots, dtype=torch.long, device=dev)
        R, G = max(lora.total_ranks_host[s] for s in slots), len(slots)
        a = lora.lora_a[:, :R].index_select(0, slots_t).transpose(1, 2).contiguous()
        b_all = torch.zeros(G, R, lora.out_features, dtype=lora.lora_b.dtype, device=dev)
        for s in range(lora.num_slices):
            rs = max(lora.ranks_host[slot][s] for slot in slots)
            if rs == 0:
                continue
            offs = torch.tensor([lora.rank_offsets_host[slot][s] for slot in slots], device=dev)
            # Rows past a slot's rank are zero in the bank; clamped duplicates add zeros.
            cols = (offs[:, None] + torch.arange(rs, device=dev)[None, :]).clamp_(max=R - 1)
            b = lora.b_slice(s)[:, :rs].index_select(0, slots_t)  # [G, rs, w]
            w, y0 = lora.slice_widths[s], lora.y_offsets[s]
            b_all[:, :, y0 : y0 + w].scatter_add_(1, cols[:, :, None].expand(G, rs, w), b)
        value.append((tuple(slots), a, b_all))
    lora._torch_gathered = ((p.slots, lora.generation), value)
    return value


def _add_delta(ys: list[torch.Tensor], lora: PackedLoraWeights, rows: torch.Tensor, delta: torch.Tensor) -> None:
    for s, out in enumerate(ys):
        y0, w = lora.y_offsets[s], lora.slice_widths[s]
        out.index_add_(0, rows, delta[:, y0 : y0 + w].to(out.dtype))


def sgmv_apply(
    x: torch.Tensor,
    lora: PackedLoraWeights,
    meta: SGMVMetadata,
    y: torch.Tensor | Sequence[torch.Tensor],
    v: torch.Tensor | None = None,
) -> None:
    """``y += scale_i · (x · A_i) · B_i`` for each token's slot i: shrink and expand, or the padded path
    (module docstring) when the batch holds several short segments that the plain bmm path cannot take."""
    if meta.num_lora_tokens == 0 or lora.max_total_rank == 0:
        return
    p = _padded_plan(meta)
    plain_bmm = _use_bmm(meta) and _common(lora.total_ranks_host[slot] for slot, _, _ in meta.segments) is not None
    if len(p.slots) < 2 or plain_bmm:
        sgmv_expand(sgmv_shrink(x, lora, meta, v), lora, meta, y)
        return
    ys = _split_outputs(y, lora)
    packed = y if isinstance(y, torch.Tensor) else None
    S = p.tokens.shape[1]
    for group_slots, a, b_all in _gathered(lora, p):
        layout = p.layout_of(group_slots)
        if layout is None:  # none of this group's adapters has a token in this step
            continue
        rows_key, rows, active = layout
        tokens, out_rows, keep = p.rows_of(rows_key, rows)
        xs = x.index_select(0, tokens).view(len(rows_key), S, -1)
        if active is not None:  # some of the group's slots are idle this step: zero rows in their place
            xs = xs.new_zeros(len(group_slots), S, xs.shape[-1]).index_copy_(0, active, xs)
        if a.dtype != xs.dtype:
            a, b_all = a.to(xs.dtype), b_all.to(xs.dtype)
        d = torch.bmm(torch.bmm(xs, a), b_all)
        if active is not None:
            d = d.index_select(0, active)
        d = d.view(len(rows_key) * S, -1)
        if keep is not None:
            d = d[keep]
        if packed is not None and packed.dtype == d.dtype:
            packed.index_add_(0, out_rows, d)
        else:
            _add_delta(ys, lora, out_rows, d)
    if p.long_segments is not None:  # the plain per-segment path, over the long segments only
        sgmv_expand(sgmv_shrink(x, lora, p.long_segments, v), lora, p.long_segments, ys)
