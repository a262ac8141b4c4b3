"""Segmented gather matrix-vector multiplication (SGMV) for multi-LoRA serving.

Quick start::

    from sgmv import bank_for_model, wrap_llama, lora_context
    bank = bank_for_model(model, num_slots=64, max_rank=64)
    bank.load(0, "adapters/support-bot")          # a PEFT adapter directory
    wrap_llama(model, bank)
    with lora_context(model, [0, -1, 0]):         # one slot per sequence (or per token)
        logits = model(input_ids).logits
"""

from .bank import AdapterBank, PackedAdapter
from .llama import (
    LLAMA_TARGETS,
    SGMVLinear,
    bank_for_model,
    llama_projection_specs,
    lora_context,
    set_token_slots,
    wrap_llama,
)
from .metadata import SGMVMetadata, build_metadata
from .ops import apply_lora, select_backend
from .packed import PackedLoraWeights, ProjectionSpec, SlotWeights
from .peft_loader import LoraAdapter, LoraModuleWeights, adapter_from_peft_state, load_peft_adapter, lora_scale

__all__ = [
    "AdapterBank",
    "bank_for_model",
    "PackedAdapter",
    "PackedLoraWeights",
    "SlotWeights",
    "ProjectionSpec",
    "LLAMA_TARGETS",
    "SGMVLinear",
    "llama_projection_specs",
    "lora_context",
    "set_token_slots",
    "wrap_llama",
    "SGMVMetadata",
    "build_metadata",
    "apply_lora",
    "select_backend",
    "LoraAdapter",
    "LoraModuleWeights",
    "adapter_from_peft_state",
    "load_peft_adapter",
    "lora_scale",
]
