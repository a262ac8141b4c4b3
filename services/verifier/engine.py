"""The verifier's re-execution engine: the claimed base model plus an LRU of adapters, one prefill per audit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from loranet.model.adapters import adapter_from_blobs
from loranet.model.checkpoint import cache_root, ensure_default_model
from loranet.model.generate import ReferenceModel


class AuditEngine:
    """ONE forward over prompt + output with the claimed adapter; thread-safe (one audit at a time)."""

    def __init__(self, model_path: str, model_id: str, device: str, cache_dir: str, adapter_slots: int,
                 attn_implementation: str | None = None) -> None:
        if not model_path:
            path, built_id = ensure_default_model(cache_dir or None)
            model_path, model_id = str(path), model_id or built_id
        self.model = ReferenceModel.from_path(model_path, model_id or None, device=device)
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
