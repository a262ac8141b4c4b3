"""The packed-weights layout: every slot's LoRA weights, stacked, for each projection (the bottom of sgmv).

A *projection* may be packed: several Linear modules that read the same input
(q/k/v under grouped-query attention, gate/up) are one projection with one
*slice* per module, each with its own output width. Per slot and slice the
bank keeps the rank actually loaded, so a rank-4 adapter beside a rank-64 one
costs rank-4 work.

Layout (R = max_rank, n = number of slices, w_s = width of slice s):
  lora_a: [num_slots, n*R, in]   the slot's A rows for all slices, packed
                                 back to back by their true ranks (slice s
                                 starts at row ``rank_offsets[slot, s]``), so
                                 one matmul shrinks every slice at once.
  lora_b: [num_slots, sum_s R*w_s]  slice s is the block [R, w_s] at column
                                 ``b_offsets[s]``; rows beyond the rank are 0.
The LoRA scale is folded into B at load: ``B_stored = scale * lora_B.T``.

The bank (bank.py) loads adapters into these slots; the kernels (ops.py) read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .peft_loader import LoraModuleWeights


@dataclass(frozen=True)
class ProjectionSpec:
    """One (possibly packed) projection: its input width and its slices.

    ``slice_modules`` are the base model's module paths, one per slice, e.g.
    ``("model.layers.0.self_attn.q_proj", ..k_proj, ..v_proj)``.
    """

    name: str
    in_features: int
    slice_modules: tuple[str, ...]
    slice_widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.slice_modules) != len(self.slice_widths) or not self.slice_modules:
            raise ValueError(f"projection {self.name!r}: need one width per slice module, at least one")


class PackedLoraWeights:
    """Stacked LoRA weights of one projection for every slot (see module docstring)."""

    def __init__(
        self, spec: ProjectionSpec, num_slots: int, max_rank: int, dtype: torch.dtype, device: torch.device | str
    ) -> None:
        self.spec = spec
        self.num_slots, self.max_rank = num_slots, max_rank
        self.in_features = spec.in_features
        self.slice_widths = tuple(spec.slice_widths)
        self.num_slices = len(self.slice_widths)
        n, R = self.num_slices, max_rank
        offs, acc = [], 0
        for w in self.slice_widths:
            offs.append(acc)
            acc += R * w
        self.b_offsets = tuple(offs)
        self.y_offsets = tuple(sum(self.slice_widths[:i]) for i in range(n))
        self.out_features = sum(self.slice_widths)
        # Uninitialised: a slot is read only after write_slot, which writes all of it (zeros past the ranks),
        # so on the host a bank's memory becomes resident as slots are loaded, not at start (a 16-slot,
        # rank-64 bank for SmolLM2-135M is 1.25 GB; a node serving four adapters touches a quarter of it).
        self.lora_a = torch.empty(num_slots, n * R, spec.in_features, dtype=dtype, device=device)
        self.lora_b = torch.empty(num_slots, acc, dtype=dtype, device=device)
        # Host copies (read by the torch path and by launchers: no device sync).
        self.ranks_host = [[0] * n for _ in range(num_slots)]
        self.rank_offsets_host = [[0] * n for _ in range(num_slots)]
        self.total_ranks_host = [0] * num_slots
        # Device copies (read by the Triton kernels).
        self.ranks = torch.zeros(num_slots, n, dtype=torch.int32, device=device)
        self.rank_offsets = torch.zeros(num_slots, n, dtype=torch.int32, device=device)
        self.total_ranks = torch.zeros(num_slots, dtype=torch.int32, device=device)
        # Bumped whenever a slot is written or cleared: anything derived from the slots' weights
        # (the torch path's gathered factors) is stale once it moves.
        self.generation = 0
        self._torch_gathered: Any = None  # torch_ops.sgmv_apply's cache: ((slots, generation), factors)
        # Per slice: (width, b_offset, y_offset) for the Triton expand.
        self.slice_table = torch.tensor(
            [[w, bo, yo] for w, bo, yo in zip(self.slice_widths, self.b_offsets, self.y_offsets)],
            dtype=torch.int64,
            device=device,
        )

    @property
    def v_width(self) -> int:
        """Columns of the float32 shrink buffer: room for every slice at max rank."""
        return self.num_slices * self.max_rank

    @property
    def max_total_rank(self) -> int:
        return max(self.total_ranks_host, default=0)

    def b_slice(self, s: int) -> torch.Tensor:
        """View ``[num_slots, R, w_s]`` of slice ``s``'s B blocks."""
        w = self.slice_widths[s]
        return self.lora_b[:, self.b_offsets[s] : self.b_offsets[s] + self.max_rank * w].view(
            self.num_slots, self.max_rank, w
        )

    def clear_slot(self, slot: int) -> None:
        """Zero the slot's weights and ranks (writes the empty share: every slice without LoRA)."""
        self.write_slot(slot, self.pack([None] * self.num_slices))

    def pack(self, slices: Sequence[LoraModuleWeights | None]) -> SlotWeights:
        """One adapter's share of this projection (per slice the module's factors, or None: no LoRA there),
        ready for :meth:`write_slot`. Host work only; safe on any thread."""
        if len(slices) != self.num_slices:
            raise ValueError(f"projection {self.spec.name!r}: expected {self.num_slices} slices, got {len(slices)}")
        pin = self.lora_a.device.type == "cuda"
        a_rows: list[torch.Tensor] = []
        bs: list[torch.Tensor | None] = []
        ranks: list[int] = []
        offsets: list[int] = []
        row = 0
        for s, mw in enumerate(slices):
            offsets.append(row)
            if mw is None:
                ranks.append(0)
                bs.append(None)
                continue
            r, w = mw.rank, self.slice_widths[s]
            module = self.spec.slice_modules[s]
            if r > self.max_rank:
                raise ValueError(f"{module}: adapter rank {r} exceeds the bank's max_rank {self.max_rank}")
            if tuple(mw.lora_a.shape) != (r, self.in_features) or tuple(mw.lora_b.shape) != (w, r):
                raise ValueError(
                    f"{module}: lora_A {tuple(mw.lora_a.shape)} / lora_B {tuple(mw.lora_b.shape)} do not fit "
                    f"the base module (expected [{r}, {self.in_features}] / [{w}, {r}])"
                )
            a_rows.append(mw.lora_a.detach().to("cpu", torch.float32))
            b = (mw.lora_b.detach().to("cpu", torch.float32).t() * mw.scale).to(self.lora_b.dtype).contiguous()
            bs.append(b.pin_memory() if pin else b)
            ranks.append(r)
            row += r
        a = torch.cat(a_rows).to(self.lora_a.dtype).contiguous() if a_rows else None
        meta = torch.tensor([*ranks, *offsets, row], dtype=torch.int32)
        if pin:
            a, meta = (a.pin_memory() if a is not None else None), meta.pin_memory()
        return SlotWeights(a, tuple(bs), tuple(ranks), tuple(offsets), row, meta)

    def write_slot(self, slot: int, w: SlotWeights) -> None:
        """Copy a packed share into ``slot``; every row past its ranks is zeroed, so nothing of a previous
        adapter remains."""
        n = self.num_slices
        if len(w.ranks) != n:
            raise ValueError(f"projection {self.spec.name!r}: packed for {len(w.ranks)} slices, not {n}")
        if w.total:
            assert w.a is not None  # total > 0: the slot's A rows
            self.lora_a[slot, : w.total].copy_(w.a, non_blocking=True)
        self.lora_a[slot, w.total :].zero_()
        self.lora_b[slot].zero_()
        for s, b in enumerate(w.b):
            if b is not None:
                self.b_slice(s)[slot, : b.shape[0]].copy_(b, non_blocking=True)
        self.ranks_host[slot], self.rank_offsets_host[slot] = list(w.ranks), list(w.offsets)
        self.total_ranks_host[slot] = w.total
        self.ranks[slot].copy_(w.meta[:n], non_blocking=True)
        self.rank_offsets[slot].copy_(w.meta[n : 2 * n], non_blocking=True)
        self.total_ranks[slot].copy_(w.meta[2 * n], non_blocking=True)
        self.generation += 1


@dataclass(frozen=True)
class SlotWeights:
    """One projection's share of an adapter in the bank's layout and dtype (see :meth:`PackedLoraWeights.pack`):
    A rows of every slice back to back ``[total, in]`` (None when total is 0), per slice ``scale * B.T``
    ``[r_s, w_s]`` or None, and the rank table ``meta`` = ranks, offsets, total (int32)."""

    a: torch.Tensor | None
    b: tuple[torch.Tensor | None, ...]
    ranks: tuple[int, ...]
    offsets: tuple[int, ...]
    total: int
    meta: torch.Tensor
