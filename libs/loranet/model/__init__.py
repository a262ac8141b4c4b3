"""The model layer shared by the inference node and the verifier.

Byte tokenizer, the embedded default base model and demo adapters (built
from seeds, content-addressed), and reference generation with HF + PEFT.
"""

from .content import ContentHashMismatch, InvalidSafetensors, adapter_content_id, model_content_id
from .checkpoint import (
    DEFAULT_MODEL_NAME,
    TinyLlamaSpec,
    build_base_checkpoint,
    cache_root,
    default_model_path,
    ensure_default_model,
    load_base_model,
)
from .adapters import (
    LoadedAdapter,
    adapter_from_blobs,
    adapter_id_of_blobs,
    adapter_to_blobs,
    build_demo_adapters,
    load_adapter,
)
from .generate import Generation, ReferenceModel
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, TOKENIZER_ID, VOCAB_SIZE, ByteTokenizer

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "TOKENIZER_ID", "VOCAB_SIZE", "ByteTokenizer",
    "ContentHashMismatch", "InvalidSafetensors", "adapter_content_id", "model_content_id",
    "DEFAULT_MODEL_NAME", "TinyLlamaSpec", "build_base_checkpoint", "cache_root",
    "default_model_path", "ensure_default_model", "load_base_model",
    "LoadedAdapter", "adapter_from_blobs", "adapter_id_of_blobs", "adapter_to_blobs", "build_demo_adapters",
    "load_adapter", "Generation", "ReferenceModel",
]
