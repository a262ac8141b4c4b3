"""Test helpers: random adapters, slot patterns, and the float64 oracle."""

from __future__ import annotations

import math

import torch

from sgmv import AdapterBank, LoraAdapter, LoraModuleWeights, ProjectionSpec

PATTERNS = ("identical", "distinct", "uniform", "zipf", "huge_and_tiny", "requests")


def random_adapter(spec: ProjectionSpec, ranks: list[int], seed: int, name: str = "a") -> LoraAdapter:
    """An adapter with rank ``ranks[s]`` on slice s (0 = slice not targeted)."""
    g = torch.Generator().manual_seed(seed)
    mods = {}
    for module, w, r in zip(spec.slice_modules, spec.slice_widths, ranks):
        if r == 0:
            continue
        a = torch.randn(r, spec.in_features, generator=g) / math.sqrt(spec.in_features)
        b = torch.randn(w, r, generator=g) / math.sqrt(r)
        mods[module] = LoraModuleWeights(a, b, scale=0.5 + (seed % 7) / 4)
    return LoraAdapter(name, mods)


def slot_pattern(pattern: str, num_tokens: int, num_slots: int, seed: int, base_fraction: float = 0.15) -> torch.Tensor:
    """Unsorted token -> slot map with interleaved -1 tokens."""
    g = torch.Generator().manual_seed(seed)
    if pattern == "identical":
        slots = torch.full((num_tokens,), int(torch.randint(num_slots, (1,), generator=g)))
    elif pattern == "distinct":
        slots = torch.arange(num_tokens) % num_slots
    elif pattern == "uniform":
        slots = torch.randint(num_slots, (num_tokens,), generator=g)
    elif pattern == "zipf":
        p = 1.0 / torch.arange(1, num_slots + 1, dtype=torch.float64) ** 1.2
        slots = torch.multinomial(p, num_tokens, replacement=True, generator=g)
    elif pattern == "huge_and_tiny":
        slots = torch.zeros(num_tokens, dtype=torch.int64)
        k = min(num_slots - 1, max(1, num_tokens // 10))
        slots[:k] = torch.arange(1, k + 1) % num_slots
    elif pattern == "requests":
        # Prefill-like: contiguous runs (one request each) of random slots, some base-only.
        parts, left = [], num_tokens
        while left:
            n = min(left, int(torch.randint(1, 40, (1,), generator=g)))
            parts.append(torch.full((n,), int(torch.randint(-1, num_slots, (1,), generator=g))))
            left -= n
        return torch.cat(parts)
    else:
        raise ValueError(pattern)
    slots = slots[torch.randperm(num_tokens, generator=g)]
    base = torch.rand(num_tokens, generator=g) < base_fraction
    return torch.where(base, torch.full_like(slots, -1), slots)


def oracle(
    x: torch.Tensor, spec: ProjectionSpec, adapters: dict[int, LoraAdapter], slots: torch.Tensor
) -> torch.Tensor:
    """float64 ``sum_s scale*(x A^T) B^T`` per token's adapter, slices side by side."""
    out = torch.zeros(x.shape[0], sum(spec.slice_widths), dtype=torch.float64)
    xd = x.double()
    for slot, adapter in adapters.items():
        rows = (slots == slot).nonzero().reshape(-1)
        if rows.numel() == 0:
            continue
        col = 0
        for module, w in zip(spec.slice_modules, spec.slice_widths):
            mw = adapter.modules.get(module)
            if mw is not None:
                out[rows, col : col + w] = (xd[rows] @ mw.lora_a.double().t()) @ mw.lora_b.double().t() * mw.scale
            col += w
    return out


def make_case(in_features, widths, num_slots, max_rank, rank_choices, seed, dtype=torch.float32, device="cpu"):
    """A bank with ``num_slots`` random adapters of mixed ranks (per slice) and its adapters."""
    spec = ProjectionSpec("proj", in_features, tuple(f"m{i}" for i in range(len(widths))), tuple(widths))
    bank = AdapterBank([spec], num_slots=num_slots, max_rank=max_rank, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(seed)
    adapters = {}
    for slot in range(num_slots):
        ranks = [rank_choices[int(torch.randint(len(rank_choices), (1,), generator=g))] for _ in widths]
        if all(r == 0 for r in ranks):
            ranks[0] = rank_choices[-1] or 1
        adapters[slot] = random_adapter(spec, ranks, seed * 1000 + slot, name=f"a{slot}")
        bank.load(slot, adapters[slot])
    return spec, bank, adapters
