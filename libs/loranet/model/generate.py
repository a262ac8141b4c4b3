"""Reference generation with Hugging Face transformers + PEFT.

The baseline path (the SGMV engine is built separately) and the verifier's
re-execution path. Positions and hidden states follow one convention, used
by `loranet.fingerprint`:

- The sequence is prompt (P tokens) + output (N tokens), positions 0..P+N-1.
- Row t of "hidden" is the final-norm hidden state at position t, i.e. after
  the model has read token t; it produces the logits that predict token t+1.
- Output token j (position P+j) is sampled from the logits of row P-1+j.
  The node's incremental decode therefore computes rows 0..P+N-2 (prefill:
  rows 0..P-1; decode step j >= 1 feeds token j-1 and yields row P-1+j), and
  never needs a forward over the last output token. The verifier's single
  prefill over prompt + output yields rows 0..P+N-1; the last is unused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..sampling import GREEDY, SamplerParams, sample
from .adapters import load_adapter
from .checkpoint import load_base_model
from .tokenizers import Tokenizer, load_tokenizer


@dataclass
class Generation:
    """Result of `ReferenceModel.generate`.

    output_ids: generated tokens, including the EOS that stopped it, if any.
    finish_reason: "stop" (EOS sampled) or "length" (max_tokens reached).
    hidden: [P + max(N-1, 0), H] float32 final-norm hidden states, rows as in
        the module docstring (the input of `fingerprint.fingerprint_chunks`).
    step_logits: [N, V] float32 logits each output token was sampled from,
        when asked for (`keep_logits=True`), else None.
    """

    output_ids: list[int]
    finish_reason: str
    hidden: torch.Tensor
    step_logits: torch.Tensor | None = None
    prompt_len: int = 0


class ReferenceModel:
    """A base model plus any number of named PEFT LoRA adapters, content-checked on load."""

    def __init__(self, base_model: Any, tokenizer: Tokenizer | None = None) -> None:
        self.base = base_model
        self.tokenizer = tokenizer
        self.model_id: str | None = getattr(base_model, "loranet_model_id", None)
        self.peft: Any = None  # PeftModel wrapping self.base once an adapter is loaded
        self.adapter_ids: dict[str, str] = {}

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        expected_model_id: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> ReferenceModel:
        """Load a checkpoint directory (hash-checked, see `load_base_model`)."""
        return cls(load_base_model(path, expected_model_id, device=device, dtype=dtype), load_tokenizer(path))

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.base.parameters()).device
        return device

    def add_adapter(self, name: str, path: str | os.PathLike[str], expected_adapter_id: str | None = None) -> str:
        """Load the PEFT adapter at `path` under `name` after checking its hash; return its adapter_id."""
        from peft import PeftModel

        if name in self.adapter_ids:
            raise ValueError(f"an adapter named {name!r} is already loaded")
        adapter_id = load_adapter(path, expected_adapter_id).adapter_id
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(Path(path)), adapter_name=name, is_trainable=False)
            self.peft.eval()
        else:
            self.peft.load_adapter(str(Path(path)), adapter_name=name, is_trainable=False)
        self.adapter_ids[name] = adapter_id
        return adapter_id

    @contextlib.contextmanager
    def _using(self, adapter_name: str | None) -> Iterator[torch.nn.Module]:
        if adapter_name is None:
            if self.peft is None:
                yield self.base
            else:
                with self.peft.disable_adapter():
                    yield self.peft
            return
        if adapter_name not in self.adapter_ids:
            raise KeyError(f"adapter {adapter_name!r} is not loaded (loaded: {sorted(self.adapter_ids)})")
        self.peft.set_adapter(adapter_name)
        yield self.peft

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        if len(ids) == 0:
            raise ValueError("token ids must not be empty (encode with add_bos=True)")
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[int],
        adapter_name: str | None = None,
        max_tokens: int = 64,
        params: SamplerParams = GREEDY,
        seed: int = 0,
        stop_ids: Collection[int] | None = None,
        keep_logits: bool = False,
    ) -> Generation:
        """Decode incrementally with a KV cache from `prompt_ids`, with `adapter_name` (None = base).

        Token j is `sampling.sample(logits of row P-1+j, params, seed, j)`; stops after one of `stop_ids`
        (default: the model's tokenizer's; `finish_reason="stop"`) or `max_tokens` tokens ("length")."""
        if stop_ids is None:
            stop_ids = self.tokenizer.stop_ids if self.tokenizer is not None else ()
        prompt_len = len(prompt_ids)
        rows: list[torch.Tensor] = []
        step_logits: list[torch.Tensor] = []
        output: list[int] = []
        finish = "length"
        with self._using(adapter_name) as model:
            out = model(input_ids=self._ids(prompt_ids), use_cache=True, output_hidden_states=True)
            rows.append(out.hidden_states[-1][0].float())
            for step in range(max_tokens):
                logits = out.logits[0, -1].float()
                if keep_logits:
                    step_logits.append(logits)
                token = sample(logits, params, seed, step)
                output.append(token)
                if token in stop_ids:
                    finish = "stop"
                    break
                if step == max_tokens - 1:
                    break
                out = model(
                    input_ids=self._ids([token]),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                    output_hidden_states=True,
                )
                rows.append(out.hidden_states[-1][0].float())
        return Generation(
            output_ids=output,
            finish_reason=finish,
            hidden=torch.cat(rows).cpu(),
            step_logits=torch.stack(step_logits).cpu() if keep_logits and step_logits else None,
            prompt_len=prompt_len,
        )

    @torch.no_grad()
    def prefill_hidden(self, ids: Sequence[int], adapter_name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ONE forward over `ids` (prompt + output): ([T, H] final-norm hidden states, [T, V] logits), float32 on CPU.

        `hidden_states[-1]` of HF Llama is taken after the final RMSNorm
        (lm_head of it is the logits; checked in tests)."""
        with self._using(adapter_name) as model:
            out = model(input_ids=self._ids(ids), use_cache=False, output_hidden_states=True)
        return out.hidden_states[-1][0].float().cpu(), out.logits[0].float().cpu()
