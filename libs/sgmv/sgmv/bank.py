"""The adapter bank: the slots of every projection's packed weights (packed.py), and loading into them.

Loading is two halves. :meth:`AdapterBank.pack` does the work on the host
(checks, scale folded in, B transposed, cast to the bank's dtype, pinned when
the bank is on CUDA) and can run on any thread, ahead of time; a
:class:`PackedAdapter` is what a server keeps in host memory.
:meth:`AdapterBank.load` then only copies it into the slot: per projection
one copy for A, one per slice for B, zeros for the rows past the ranks and
one small copy per rank table, all asynchronous from pinned memory.
sgmv.llama.bank_for_model sizes a bank for a transformers Llama model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .packed import PackedLoraWeights, ProjectionSpec, SlotWeights
from .peft_loader import LoraAdapter, LoraModuleWeights, load_peft_adapter

__all__ = ["AdapterBank", "PackedAdapter"]


@dataclass(frozen=True)
class PackedAdapter:
    """An adapter packed for one bank (:meth:`AdapterBank.pack`): one :class:`SlotWeights` per projection of
    the bank (rank 0 where the adapter has no LoRA)."""

    name: str
    projections: dict[str, SlotWeights]

    @property
    def nbytes(self) -> int:
        ts = [t for w in self.projections.values() for t in (w.a, *w.b) if t is not None]
        return sum(t.numel() * t.element_size() for t in ts)


class AdapterBank:
    """Fixed slots of LoRA adapters over one base model.

    ``sgmv.llama.bank_for_model(model, num_slots)`` sizes it for a transformers
    Llama-family model; ``load(slot, peft_dir)`` puts an adapter in a slot and
    ``clear(slot)`` empties it. A forward then names, per token, the slot it uses.
    """

    def __init__(
        self,
        specs: Iterable[ProjectionSpec],
        num_slots: int,
        max_rank: int = 64,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if num_slots < 1 or max_rank < 1:
            raise ValueError(f"num_slots and max_rank must be >= 1 (got {num_slots}, {max_rank})")
        self.num_slots, self.max_rank = num_slots, max_rank
        self.dtype, self.device = dtype, torch.device(device)
        self.projections: dict[str, PackedLoraWeights] = {}
        self.module_index: dict[str, tuple[str, int]] = {}
        for spec in specs:
            self.projections[spec.name] = PackedLoraWeights(spec, num_slots, max_rank, dtype, device)
            for i, module in enumerate(spec.slice_modules):
                self.module_index[module] = (spec.name, i)
        self.slot_names: list[str | None] = [None] * num_slots

    def pack(self, adapter: LoraAdapter | str | Path) -> PackedAdapter:
        """An adapter (a PEFT directory or a :class:`LoraAdapter`) in this bank's layout, on the host: every
        check and conversion of a load, none of the copies. Raises ValueError when it does not fit the bank."""
        if not isinstance(adapter, LoraAdapter):
            adapter = load_peft_adapter(adapter)
        per_projection: dict[str, list[LoraModuleWeights | None]] = {
            name_: [None] * proj.num_slices for name_, proj in self.projections.items()
        }
        unknown = [m for m in adapter.modules if m not in self.module_index]
        if unknown:
            raise ValueError(
                f"adapter {adapter.name!r} targets modules this bank does not hold: {unknown[:3]}"
                f"{' ...' if len(unknown) > 3 else ''}; bank modules look like {next(iter(self.module_index), None)!r}"
            )
        for module, mw in adapter.modules.items():
            proj, s = self.module_index[module]
            per_projection[proj][s] = mw
        return PackedAdapter(
            adapter.name, {name_: self.projections[name_].pack(slices) for name_, slices in per_projection.items()}
        )

    def load(self, slot: int, adapter: PackedAdapter | LoraAdapter | str | Path, name: str | None = None) -> None:
        """Load an adapter into ``slot`` (packed by :meth:`pack`, or a PEFT directory or :class:`LoraAdapter`,
        packed here).

        Every projection of the slot is rewritten (projections the adapter does
        not target get rank 0), so no weight of the slot's previous adapter stays.
        """
        self._check_slot(slot)
        if not isinstance(adapter, PackedAdapter):
            adapter = self.pack(adapter)
        if adapter.projections.keys() != self.projections.keys():
            raise ValueError(f"adapter {adapter.name!r} was packed for another bank")
        for proj_name, w in adapter.projections.items():
            self.projections[proj_name].write_slot(slot, w)
        self.slot_names[slot] = name or adapter.name

    def clear(self, slot: int) -> None:
        """Empty ``slot``: tokens mapped to it then get the base model only."""
        self._check_slot(slot)
        for proj in self.projections.values():
            proj.clear_slot(slot)
        self.slot_names[slot] = None

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.num_slots:
            raise IndexError(f"slot {slot} out of range: this bank has slots 0..{self.num_slots - 1}")

    def nbytes_per_slot(self) -> int:
        """Bytes one slot occupies (at max_rank) across all projections."""
        return sum(
            (p.lora_a[0].numel() + p.lora_b[0].numel()) * p.lora_a.element_size() for p in self.projections.values()
        )
