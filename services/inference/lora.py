"""LoRA for a packed batch on CPU: padded segments in one bmm, instead of one small matmul per adapter.

`sgmv`'s torch path does one matmul per active slot (and a batched bmm only
when every segment has the same length and every adapter the same rank).  A
continuous batch of decodes over 64 adapters of ranks 4/8/16 is the opposite
case: 64 one-token segments of mixed ranks, i.e. ~64 x 2 tiny matmuls per
projection per step, where Python overhead dominates on CPU.  Here the short
segments are padded to the longest of them and every slot's factors to the
largest rank among them, then shrink and expand are one `bmm` each:

- A rows beyond a slot's rank and B rows beyond a slice's rank are zero in
  the bank (a slot is zeroed before each load), so padding adds exact zeros;
- a slot's slice s reads v columns `rank_offsets[slot][s] + j`: gathered per
  slot, clamped into the written range (clamped columns meet zero B rows).

Long segments (prefills) still take one matmul each.  Same bank, same
metadata (`sgmv.build_metadata`), same result up to float summation order.
On CUDA the engine uses `sgmv.apply_lora` (the Triton kernels) instead.
This belongs in `sgmv.torch_ops` (see the engine's report); it is here
because the service must not change libs/.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sgmv import PackedLoraWeights, SGMVMetadata

# Segments up to this many tokens are padded together; longer ones get their own matmul.
PAD_SEGMENT_MAX = 8


@dataclass
class LoraPlan:
    """Per-forward grouping of the metadata's segments (shared by every projection)."""

    meta: SGMVMetadata
    slots: list[int]  # padded group: slot of each row block
    slots_t: torch.Tensor  # [G]
    tokens: torch.Tensor  # [G, S] token index (padding repeats a valid token; its delta is dropped)
    valid: torch.Tensor  # [G*S] bool
    valid_tokens: torch.Tensor  # tokens of the valid rows, in row order
    all_valid: bool
    long_segments: list[tuple[int, torch.Tensor]]  # (slot, token indices)


def plan(meta: SGMVMetadata) -> LoraPlan | None:
    if meta.num_lora_tokens == 0:
        return None
    sorted_tokens = meta.sorted_tokens.cpu()
    short = [(slot, a, b) for slot, a, b in meta.segments if b - a <= PAD_SEGMENT_MAX]
    long = [(slot, sorted_tokens[a:b]) for slot, a, b in meta.segments if b - a > PAD_SEGMENT_MAX]
    G = len(short)
    S = max((b - a for _, a, b in short), default=0)
    if G:
        pos = torch.tensor([a for _, a, _ in short])[:, None] + torch.arange(S)[None, :]
        ends = torch.tensor([b for _, _, b in short])[:, None]
        valid = pos < ends
        pos = torch.where(valid, pos, pos[:, :1])
        tokens = sorted_tokens[pos]
        valid_flat = valid.reshape(-1)
        valid_tokens = tokens.reshape(-1)[valid_flat]
    else:
        tokens = torch.zeros(0, 0, dtype=torch.long)
        valid_flat = torch.zeros(0, dtype=torch.bool)
        valid_tokens = torch.zeros(0, dtype=torch.long)
    dev = meta.sorted_tokens.device
    return LoraPlan(meta, [s for s, _, _ in short], torch.tensor([s for s, _, _ in short], dtype=torch.long, device=dev),
                    tokens.to(dev), valid_flat.to(dev), valid_tokens.to(dev), bool(valid_flat.all()),
                    [(s, t.to(dev)) for s, t in long])


class GatheredWeights:
    """The padded group's factors of one projection, kept while the group's slots and the bank stay the same.

    A: [G, in, R]; B of every slice combined into one [G, R, sum(widths)]
    whose rows sit at the v columns each slot's slice reads (scatter of the
    slice's B rows to `rank_offsets + j`), so expand is one bmm for q/k/v or
    gate/up together.  A decode batch keeps the same adapters for many steps,
    so the gather is paid when sequences join or leave, not per step.
    Bounded: one entry per projection."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple] = {}

    def get(self, lora: PackedLoraWeights, slots: list[int], slots_t: torch.Tensor, generation: int):
        key = (tuple(slots), generation)
        entry = self._entries.get(lora.spec.name)
        if entry is not None and entry[0] == key:
            return entry[1]
        R = max(lora.total_ranks_host[s] for s in slots)
        value = None
        if R:
            dev, G = slots_t.device, len(slots)
            a = lora.lora_a[:, :R].index_select(0, slots_t).transpose(1, 2).contiguous()  # [G, in, R]
            b_all = torch.zeros(G, R, lora.out_features, dtype=lora.lora_b.dtype, device=dev)
            for s in range(lora.num_slices):
                rs = max(lora.ranks_host[slot][s] for slot in slots)
                if rs == 0:
                    continue
                offs = torch.tensor([lora.rank_offsets_host[slot][s] for slot in slots], device=dev)
                # Rows past a slot's rank are zero in the bank; clamped duplicates add zeros.
                cols = (offs[:, None] + torch.arange(rs, device=dev)[None, :]).clamp_(max=R - 1)  # [G, rs]
                b = lora.b_slice(s)[:, :rs].index_select(0, slots_t)  # [G, rs, w]
                w, y0 = lora.slice_widths[s], lora.y_offsets[s]
                b_all[:, :, y0: y0 + w].scatter_add_(1, cols[:, :, None].expand(G, rs, w), b)
            value = (a, b_all)
        self._entries[lora.spec.name] = (key, value)
        return value


def apply(x: torch.Tensor, lora: PackedLoraWeights, p: LoraPlan, y: torch.Tensor,
          gathered: GatheredWeights, generation: int) -> None:
    """y += LoRA of each token's slot, in place; x: [T, in], y: [T, sum(widths)] (slices side by side).

    `generation` changes whenever a bank slot is (re)loaded (it keys the gathered-weights cache)."""
    if p.slots:
        w = gathered.get(lora, p.slots, p.slots_t, generation)
        if w is not None:
            a, b_all = w
            G, S = p.tokens.shape
            xs = x.index_select(0, p.tokens.view(-1)).view(G, S, -1)
            d = torch.bmm(torch.bmm(xs, a), b_all).view(G * S, -1)
            y.index_add_(0, p.valid_tokens, d if p.all_valid else d[p.valid])
    for slot, tokens in p.long_segments:
        r = lora.total_ranks_host[slot]
        if r == 0:
            continue
        v = x.index_select(0, tokens) @ lora.lora_a[slot, :r].t()
        delta = torch.zeros(tokens.numel(), lora.out_features, dtype=y.dtype, device=y.device)
        for s in range(lora.num_slices):
            rs = lora.ranks_host[slot][s]
            if rs:
                off, y0, w = lora.rank_offsets_host[slot][s], lora.y_offsets[s], lora.slice_widths[s]
                delta[:, y0: y0 + w] = v[:, off: off + rs] @ lora.b_slice(s)[slot, :rs]
        y.index_add_(0, tokens, delta)
