"""Read PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors).

The result is a plain :class:`LoraAdapter`: per target module, ``lora_A`` of
shape ``[r, in]``, ``lora_B`` of shape ``[out, r]`` and the scale PEFT applies
(``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA), with ``rank_pattern`` and
``alpha_pattern`` resolved per module the way PEFT resolves them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["LoraModuleWeights", "LoraAdapter", "load_peft_adapter", "lora_scale", "adapter_from_peft_state"]

_PEFT_PREFIX = "base_model.model."
_KEY_RE = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")


@dataclass
class LoraModuleWeights:
    """One target module's LoRA factors: ``delta_y = scale * (x @ lora_a.T) @ lora_b.T``."""

    lora_a: torch.Tensor  # [r, in]
    lora_b: torch.Tensor  # [out, r]
    scale: float

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])


@dataclass
class LoraAdapter:
    """A LoRA adapter as plain tensors, keyed by the base model's module path
    (e.g. ``model.layers.0.self_attn.q_proj``)."""

    name: str
    modules: dict[str, LoraModuleWeights] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict[str, Any])


def lora_scale(alpha: float, r: int, use_rslora: bool = False) -> float:
    """The factor PEFT multiplies ``B·A`` by: ``alpha/r``, or ``alpha/sqrt(r)`` with rsLoRA."""
    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got r={r}")
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def _pattern_value(patterns: dict[str, Any] | None, module: str, default: Any) -> Any:
    # Same rule as peft.utils.other.get_pattern_key: a key matches a module path
    # when the path ends with it at a dot boundary (keys may be regexes).
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def adapter_from_peft_state(
    state: dict[str, torch.Tensor], config: dict[str, Any], name: str = "adapter"
) -> LoraAdapter:
    """Build a :class:`LoraAdapter` from a PEFT state dict and its config dict.

    Refuses (ValueError) what a plain LoRA bank cannot apply: DoRA, LoRA biases,
    ``modules_to_save``/trainable-token weights, and non-LoRA PEFT types.
    """
    peft_type = config.get("peft_type", "LORA")
    peft_type = str(getattr(peft_type, "value", peft_type)).upper()  # enum from LoraConfig.to_dict()
    if peft_type != "LORA":
        raise ValueError(f"adapter {name!r}: peft_type {peft_type!r} is not supported (only LORA)")
    if config.get("use_dora"):
        raise ValueError(f"adapter {name!r}: DoRA (use_dora=true) is not supported; export a plain LoRA adapter")
    default_r = int(config.get("r", 8))
    default_alpha = float(config.get("lora_alpha", default_r))
    use_rslora = bool(config.get("use_rslora", False))
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module_key = key[len(_PEFT_PREFIX) :] if key.startswith(_PEFT_PREFIX) else key
        m = _KEY_RE.match(module_key)
        if m is None:
            raise ValueError(
                f"adapter {name!r}: tensor {key!r} is not a LoRA A/B weight "
                "(biases, modules_to_save and DoRA magnitudes are not supported)"
            )
        factors.setdefault(m.group("module"), {})[m.group("which")] = tensor
    adapter = LoraAdapter(name=name, config=dict(config))
    for module, ab in factors.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"adapter {name!r}: module {module!r} has lora_{'A' if 'A' in ab else 'B'} only")
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"adapter {name!r}: module {module!r} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}; "
                "expected [r, in] and [out, r] (only Linear targets are supported)"
            )
        r = int(a.shape[0])
        expected_r = int(_pattern_value(config.get("rank_pattern"), module, default_r))
        if r != expected_r:
            raise ValueError(f"adapter {name!r}: module {module!r} has rank {r} but the config says {expected_r}")
        alpha = float(_pattern_value(config.get("alpha_pattern"), module, default_alpha))
        adapter.modules[module] = LoraModuleWeights(a, b, lora_scale(alpha, r, use_rslora))
    return adapter


def load_peft_adapter(path: str | Path, name: str | None = None) -> LoraAdapter:
    """Load a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).

    Tensors are loaded on CPU in their stored dtype; the bank casts them.
    """
    from safetensors.torch import load_file

    path = Path(path)
    config_file, weights_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a PEFT adapter directory: expected adapter_config.json and adapter_model.safetensors"
        )
    config = json.loads(config_file.read_text())
    return adapter_from_peft_state(load_file(str(weights_file)), config, name=name or path.name)
