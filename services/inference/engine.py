"""The node's generation engine and adapter cache.

This is the walking-skeleton engine: one job at a time through HF + PEFT
(`loranet.model.generate.ReferenceModel`), committing the activation
fingerprint as it decodes.  The SGMV continuous-batching engine replaces it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from loranet.fingerprint import fingerprint_chunks
from loranet.model import tokenizer
from loranet.model.adapters import adapter_from_blobs
from loranet.model.checkpoint import cache_root, ensure_default_model
from loranet.model.generate import ReferenceModel
from loranet.sampling import SamplerParams


@dataclass
class Generated:
    prompt_tokens: list[int]
    output_tokens: list[int]
    output_text: str
    finish_reason: str
    chunks: list[bytes]


class Engine:
    def __init__(self, model_path: str, model_id: str, device: str, cache_dir: str, adapter_slots: int) -> None:
        root = cache_root(cache_dir or None)
        if not model_path:
            path, built_id = ensure_default_model(cache_dir or None)
            model_path, model_id = str(path), model_id or built_id
        self.model = ReferenceModel.from_path(model_path, model_id or None, device=device)
        self.model_id: str = self.model.model_id
        self.adapter_dir = root / "node-adapters"
        self.adapter_slots = adapter_slots
        self._loaded: OrderedDict[str, str] = OrderedDict()  # adapter_id -> peft adapter name
        self._lock = threading.Lock()

    @property
    def adapters_hot(self) -> list[str]:
        return list(self._loaded)

    def has_adapter(self, adapter_id: str) -> bool:
        return adapter_id in self._loaded

    def install_adapter(self, adapter_id: str, config: bytes, weights: bytes) -> None:
        """Write the adapter from its blobs (hash checked first) and load it."""
        dest = self.adapter_dir / adapter_id
        if not (dest / "adapter_config.json").exists():
            adapter_from_blobs(config, weights, dest, expected_adapter_id=adapter_id)
        with self._lock:
            self.model.add_adapter(f"a{adapter_id[:16]}", dest, expected_adapter_id=adapter_id)
            self._loaded[adapter_id] = f"a{adapter_id[:16]}"
            self._loaded.move_to_end(adapter_id)

    def generate(self, prompt: str, adapter_id: str, max_tokens: int, params: SamplerParams, seed: int,
                 max_prompt_tokens: int) -> Generated:
        prompt_tokens = tokenizer.encode(prompt)
        if len(prompt_tokens) > max_prompt_tokens:
            raise ValueError(f"prompt is {len(prompt_tokens)} tokens; this node takes at most {max_prompt_tokens}")
        with self._lock:
            name = self._loaded.get(adapter_id) if adapter_id else None
            if adapter_id and name is None:
                raise KeyError(f"adapter {adapter_id} is not loaded")
            if adapter_id:
                self._loaded.move_to_end(adapter_id)
            gen = self.model.generate(prompt_tokens, name, max_tokens, params, seed)
        chunks = fingerprint_chunks(gen.hidden, len(prompt_tokens), n_generated=len(gen.output_ids))
        finish = "eos" if gen.finish_reason == "stop" else "length"
        return Generated(prompt_tokens, gen.output_ids, tokenizer.decode(gen.output_ids), finish, chunks)


def ensure_dir(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, 0o700)
    return p
