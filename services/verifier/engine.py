"""The verifier's re-execution engine: the claimed base model plus an LRU of adapters, one prefill per audit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from loranet.model.adapters import adapter_from_blobs
from loranet.model.catalog import resolve_model
from loranet.model.checkpoint import cache_root
from loranet.model.generate import ReferenceModel
from loranet.model.tokenizers import Tokenizer


class AuditEngine:
    """ONE forward over prompt + output with the claimed adapter; thread-safe (one audit at a time)."""

    def __init__(
        self,
        model_path: str,
        model_id: str,
        device: str,
        cache_dir: str,
        adapter_slots: int,
        attn_implementation: str | None = None,
    ) -> None:
        resolved = resolve_model(model_path, cache_dir or None)
        self.model = ReferenceModel.from_path(resolved.path, model_id or resolved.known_id or None, device=device)
        if self.model.tokenizer is None or self.model.model_id is None:
            raise ValueError(f"{resolved.path}: the audit engine needs the model's tokenizer and content id")
        self.tokenizer: Tokenizer = self.model.tokenizer
        if attn_implementation:
            self.model.base.config._attn_implementation = attn_implementation
        self.model_id: str = self.model.model_id
        self.adapter_dir = cache_root(cache_dir or None) / "verifier-adapters"
        self.adapter_slots = adapter_slots
        self._loaded: OrderedDict[str, str] = OrderedDict()  # adapter_id -> peft adapter name
        self._lock = threading.Lock()

    def has_adapter(self, adapter_id: str) -> bool:
        return adapter_id in self._loaded

    def install_adapter(self, adapter_id: str, config: bytes, weights: bytes) -> None:
        """Rebuild the adapter from its blobs (hash checked before writing) and load it; evict the LRU one."""
        dest = self.adapter_dir / adapter_id
        if not (dest / "adapter_config.json").exists():
            adapter_from_blobs(config, weights, dest, expected_adapter_id=adapter_id)
        self.load_adapter_dir(adapter_id, dest)

    def load_adapter_dir(self, adapter_id: str, path: str | Path) -> None:
        with self._lock:
            if adapter_id in self._loaded:
                self._loaded.move_to_end(adapter_id)
                return
            name = f"a{adapter_id[:16]}"
            self.model.add_adapter(name, path, expected_adapter_id=adapter_id)
            self._loaded[adapter_id] = name
            while len(self._loaded) > self.adapter_slots:
                _, old = self._loaded.popitem(last=False)
                self.model.peft.delete_adapter(old)
                del self.model.adapter_ids[old]

    def prefill(self, ids: Sequence[int], adapter_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """([T, H] final-norm hidden states, [T, V] logits) over `ids` with `adapter_id` ("" = base)."""
        with self._lock:
            name = self._loaded.get(adapter_id) if adapter_id else None
            if adapter_id and name is None:
                raise KeyError(f"adapter {adapter_id} is not loaded")
            if adapter_id:
                self._loaded.move_to_end(adapter_id)
            return self.model.prefill_hidden(ids, name)

    def prefill_many(
        self, seqs: Sequence[Sequence[int]], adapter_id: str, pad_id: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batched audit: one padded forward for several results of the same adapter."""
        with self._lock:
            name = self._loaded.get(adapter_id) if adapter_id else None
            if adapter_id and name is None:
                raise KeyError(f"adapter {adapter_id} is not loaded")
            return prefill_batch(self.model, seqs, name, pad_id)


def prefill_batch(
    model: ReferenceModel, seqs: Sequence[Sequence[int]], adapter_name: str | None, pad_id: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ONE right-padded forward over several sequences (same adapter); per sequence ([T, H] hidden, [T, V] logits).

    Right padding keeps every real token's positions and causal context unchanged, so each row equals
    the single-sequence prefill up to floating-point reduction order (calibrated in loranet.thresholds)."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long, device=model.device)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long, device=model.device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    with torch.no_grad(), model._using(adapter_name) as m:
        out = m(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
    hidden, logits = out.hidden_states[-1].float().cpu(), out.logits.float().cpu()
    return [(hidden[i, : len(s)], logits[i, : len(s)]) for i, s in enumerate(seqs)]
