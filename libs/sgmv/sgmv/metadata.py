"""Per-forward SGMV metadata: which tokens belong to which adapter slot.

Built once per forward from a token -> slot map (``-1`` = base model only) and
shared by every LoRA projection of that forward. Tokens need not be sorted: a
stable argsort groups them into one contiguous *segment* per active slot.

Everything is computed on the host from the map the caller already holds, then
copied to the device once, so neither backend calls ``.item()`` (no host
synchronisation) while the forward runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SGMVMetadata", "build_metadata"]


@dataclass(frozen=True)
class SGMVMetadata:
    """Token grouping for one forward.

    Tensors (on the compute device):
      token_slots:   [T] int64, the map as given (-1 = base only).
      sorted_tokens: [T] int64 permutation; ``sorted_tokens[p]`` is the token at
                     sorted position ``p``. Adapter tokens come first, grouped by
                     slot in ascending slot order (stable), base-only tokens last.
      seg_counts:    [num_slots] int32, tokens per slot (0 for inactive slots).
      seg_starts:    [num_slots] int32, start of each slot's segment in sorted order.
      active_slots:  [num_active] int64, slots with at least one token, ascending.

    Host values (python ints, read by launchers and the torch path):
      segments:          tuple of (slot, start, end) per active slot.
      num_tokens:        T.
      num_lora_tokens:   tokens with a slot >= 0 (they occupy sorted positions [0, n)).
      max_segment:       longest segment (sizes the Triton grid's token axis).
      num_slots:         size of the slot space the map was validated against.
      segment_rows:      per active segment, the first token index when the
                         segment's tokens are one contiguous run of the batch
                         (a request's tokens, typically), else -1: such a
                         segment can be read and written in place.
    """

    token_slots: torch.Tensor
    sorted_tokens: torch.Tensor
    seg_counts: torch.Tensor
    seg_starts: torch.Tensor
    active_slots: torch.Tensor
    segments: tuple[tuple[int, int, int], ...]
    num_tokens: int
    num_lora_tokens: int
    max_segment: int
    num_slots: int
    segment_rows: tuple[int, ...] = ()

    @property
    def lora_tokens(self) -> torch.Tensor:
        """Token indices that use an adapter, in sorted (segment) order."""
        return self.sorted_tokens[: self.num_lora_tokens]

    @property
    def uniform_segments(self) -> bool:
        """True when every active segment has the same length (typical decode)."""
        return len({end - start for _, start, end in self.segments}) <= 1


def build_metadata(
    token_slots: torch.Tensor | list[int],
    num_slots: int,
    device: torch.device | str | None = None,
) -> SGMVMetadata:
    """Build the per-forward metadata from a token -> slot map.

    Args:
        token_slots: 1-D ints, one per token (flattened batch x sequence order),
            each in ``[-1, num_slots)``; ``-1`` means base model only. Any order.
        num_slots: number of slots of the adapter bank.
        device: where the kernels run; defaults to ``token_slots``' device.

    The map is read on the host (a CUDA tensor is copied once, here, before the
    forward: pass a CPU tensor or a list to avoid even that).
    """
    if isinstance(token_slots, torch.Tensor):
        if device is None:
            device = token_slots.device
        host = token_slots.detach().to("cpu", torch.int64).reshape(-1)
    else:
        host = torch.as_tensor(list(token_slots), dtype=torch.int64).reshape(-1)
        device = torch.device("cpu") if device is None else device
    device = torch.device(device)
    if host.numel() and (int(host.min()) < -1 or int(host.max()) >= num_slots):
        raise ValueError(
            f"token_slots must be in [-1, {num_slots}) (num_slots of the bank); "
            f"got min {int(host.min())}, max {int(host.max())}"
        )
    # -1 sorts last: key = slot, with base-only tokens mapped past the last slot.
    key = torch.where(host < 0, torch.full_like(host, num_slots), host)
    sorted_tokens = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=num_slots + 1)[:num_slots]
    starts = torch.cumsum(counts, 0) - counts
    active = torch.nonzero(counts, as_tuple=False).reshape(-1)
    counts_l, starts_l = counts.tolist(), starts.tolist()
    segments = tuple((s, starts_l[s], starts_l[s] + counts_l[s]) for s in active.tolist())
    num_lora = int(counts.sum())
    max_seg = max(counts_l) if counts_l else 0
    sorted_l = sorted_tokens.tolist()
    segment_rows = tuple(sorted_l[a] if sorted_l[b - 1] - sorted_l[a] == b - 1 - a else -1 for _, a, b in segments)
    nb = device.type != "cpu"
    return SGMVMetadata(
        token_slots=host.to(device, non_blocking=nb),
        sorted_tokens=sorted_tokens.to(device, non_blocking=nb),
        seg_counts=counts.to(device=device, dtype=torch.int32, non_blocking=nb),
        seg_starts=starts.to(device=device, dtype=torch.int32, non_blocking=nb),
        active_slots=active.to(device, non_blocking=nb),
        segments=segments,
        num_tokens=host.numel(),
        num_lora_tokens=num_lora,
        max_segment=max_seg,
        num_slots=num_slots,
        segment_rows=segment_rows,
    )
