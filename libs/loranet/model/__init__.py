"""The model layer shared by the inference node and the verifier.

Base models by name or directory (catalog: SmolLM2-135M-Instruct by default,
the seeded tiny Llama as the tests' fixture, any registered Llama checkpoint),
each with its own tokenizer (tokenizers), content ids, adapters, and reference
generation with HF + PEFT.
"""

from .adapters import (
    LoadedAdapter,
    adapter_from_blobs,
    adapter_id_of_blobs,
    adapter_to_blobs,
    build_demo_adapters,
    load_adapter,
)
from .checkpoint import (
    TINY_MODEL_NAME,
    TinyLlamaSpec,
    build_base_checkpoint,
    cache_root,
    ensure_tiny_model,
    load_base_model,
    tiny_model_path,
)
from .content import ContentHashMismatch, InvalidSafetensors, adapter_content_id, model_content_id
from .generate import Generation, ReferenceModel
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, TOKENIZER_ID, VOCAB_SIZE, ByteTokenizer

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "TOKENIZER_ID",
    "VOCAB_SIZE",
    "ByteTokenizer",
    "ContentHashMismatch",
    "InvalidSafetensors",
    "adapter_content_id",
    "model_content_id",
    "TINY_MODEL_NAME",
    "TinyLlamaSpec",
    "build_base_checkpoint",
    "cache_root",
    "tiny_model_path",
    "ensure_tiny_model",
    "load_base_model",
    "LoadedAdapter",
    "adapter_from_blobs",
    "adapter_id_of_blobs",
    "adapter_to_blobs",
    "build_demo_adapters",
    "load_adapter",
    "Generation",
    "ReferenceModel",
]
