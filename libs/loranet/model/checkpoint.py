"""The embedded default base model, and loading any Llama-family checkpoint by content id.

No machine here may download weights, so the default base model is a small
Llama built deterministically from a seed and saved as an ordinary Hugging
Face checkpoint (config.json + model.safetensors). It is then loaded through
the same `load_base_model` path as any real checkpoint directory: the
content hash (`model_id`, see `content.py`) is checked first, then
`LlamaForCausalLM.from_pretrained` reads it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import tokenizer
from .content import ContentHashMismatch, model_content_id

TINY_MODEL_NAME = "loranet-tiny-llama"  # the seeded test model (byte tokenizer)
DEFAULT_SEED = 0


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape of the embedded default model."""

    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = tokenizer.VOCAB_SIZE
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Root of loranet's local cache: the argument, else $LORANET_CACHE, else ~/.cache/loranet."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LORANET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "loranet"


def llama_config(spec: TinyLlamaSpec = TinyLlamaSpec()) -> Any:
    """A `transformers.LlamaConfig` for `spec`, float32, untied embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(  # type: ignore[call-arg]  # rope_theta is read from kwargs
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        vocab_size=spec.vocab_size,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps,
        rope_theta=spec.rope_theta,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.BOS_ID,
        eos_token_id=tokenizer.EOS_ID,
        pad_token_id=tokenizer.PAD_ID,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=0.02,
        dtype="float32",
    )


def _init_weights(model: torch.nn.Module, seed: int) -> None:
    """Fill every parameter from one seeded generator, in sorted name order.

    Scales are chosen so a random model is not degenerate (greedy output
    depends on the prompt): unit-variance embeddings, 1/sqrt(fan_in) linear
    layers (so activations keep their scale through the residual stream),
    an lm_head a few times larger than that so logits have a spread of a few
    nats, RMSNorm weights 1.
    """
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32))
            elif name.startswith("lm_head"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * (3.0 / math.sqrt(p.shape[1])))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) / math.sqrt(p.shape[1]))
            else:
                raise ValueError(f"no init rule for parameter {name} of shape {tuple(p.shape)}")


def build_base_checkpoint(
    dest_dir: str | os.PathLike[str], seed: int = DEFAULT_SEED, spec: TinyLlamaSpec = TinyLlamaSpec()
) -> str:
    """Build the seeded tiny Llama and save it as a HF checkpoint in `dest_dir`; return its model_id.

    Deterministic: the same (seed, spec) and library versions give
    byte-identical config.json and model.safetensors. Written to a temporary
    sibling directory and moved into place, so concurrent builders never see
    a half-written checkpoint; an existing identical checkpoint is kept.
    """
    from transformers import LlamaForCausalLM

    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    config = llama_config(spec)
    torch.manual_seed(seed)  # HF's own init runs first; ours overwrites all of it
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.float32)
    _init_weights(model, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        # generation_config.json is not part of the model's identity; keep the directory minimal.
        (tmp / "generation_config.json").unlink(missing_ok=True)
        os.chmod(tmp, 0o755)
        model_id = model_content_id(tmp)
        _install_dir(tmp, dest, model_content_id, model_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model_id


def _install_dir(tmp: Path, dest: Path, id_of: Callable[[Path], str], new_id: str) -> None:
    """Move `tmp` to `dest` unless `dest` already holds the same content."""
    if dest.exists():
        try:
            if id_of(dest) == new_id:
                return
        except (OSError, ValueError):
            pass
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.replace(dest, old / "x")
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, dest)
    except OSError:
        # Another builder installed it first; it must be the same content.
        if id_of(dest) != new_id:
            raise


def tiny_model_path(cache_dir: str | os.PathLike[str] | None = None, name: str = TINY_MODEL_NAME) -> Path:
    """Where the embedded default model lives: <cache>/models/<name>."""
    return cache_root(cache_dir) / "models" / name


def ensure_tiny_model(
    cache_dir: str | os.PathLike[str] | None = None, name: str = TINY_MODEL_NAME, seed: int = DEFAULT_SEED
) -> tuple[Path, str]:
    """Build the default model in the cache if it is not there yet; return (path, model_id).

    The model is always rebuilt (about 2 s on CPU) and compared with what the
    cache holds: an identical directory is kept, anything else is replaced,
    so a corrupted cache heals itself and the returned id is always the
    seed's, never a stale file's."""
    path = tiny_model_path(cache_dir, name)
    model_id = build_base_checkpoint(path, seed)
    return path, model_id


def load_base_model(
    path: str | os.PathLike[str],
    expected_model_id: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """Load a Llama-family HF checkpoint directory after checking its content hash.

    Returns the `LlamaForCausalLM` in eval mode on `device` / `dtype`, with
    the checked id in `model.loranet_model_id`. Raises `ContentHashMismatch`
    when `expected_model_id` is given and the directory hashes to something
    else; without it, the hash is still computed and attached.
    """
    from transformers import LlamaForCausalLM

    path = Path(path)
    found = model_content_id(path)
    if expected_model_id is not None and found != expected_model_id:
        raise ContentHashMismatch("model", str(path), expected_model_id, found)
    model: Any = LlamaForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    model.loranet_model_id = found
    return model
