"""PEFT LoRA adapters: demo adapters built from seeds, content-checked loading, blob transport.

An adapter is a PEFT directory: adapter_config.json + adapter_model.safetensors.
Its `adapter_id` is the content hash of both (see `content.py`). The demo
adapters are built deterministically from (base model, seed, index) through
`peft.get_peft_model` + `save_pretrained`, with the saved config rewritten
canonically (sorted keys, no PEFT version, no README) so that the id is
stable across builds; `base_model_name_or_path` is set to the base model's
`model_id`, which binds each demo adapter to the base it was made for.

For transport, an adapter is two blobs (config bytes, weights bytes);
`adapter_from_blobs` checks the hash before anything is written, and
installs the directory atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import _install_dir, cache_root, load_base_model
from .content import ADAPTER_DOMAIN, ContentHashMismatch, adapter_content_id, content_id

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_OPTIONAL_TARGETS = ("k_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_RANKS = (4, 8, 16)


@dataclass(frozen=True)
class DemoAdapterSpec:
    """The shape of one demo adapter, derived from (seed, index)."""

    rank: int
    targets: tuple[str, ...]
    use_rslora: bool
    lora_alpha: float
    strength: float  # target ratio |ΔW x| / |W x|, sets the scale of lora_B
    weight_seed: int


@dataclass
class LoadedAdapter:
    """A content-checked adapter: its id, parsed config and tensors (on CPU)."""

    adapter_id: str
    path: Path
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def scaling(self) -> float:
        """The LoRA scale PEFT applies: alpha/r, or alpha/sqrt(r) with rsLoRA."""
        r, alpha = float(self.config["r"]), float(self.config["lora_alpha"])
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r


def _derived_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in ("loranet/demo-adapter", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def demo_adapter_spec(seed: int, index: int) -> DemoAdapterSpec:
    """Rank, targets and scaling of demo adapter `index`.

    Ranks cycle 4, 8, 16; q_proj and v_proj are always targeted, the other
    projections are a seeded subset (index 0 is q/v only, index 3 all seven);
    every fourth adapter (index 2, 6, ...) uses rsLoRA.
    """
    gen = torch.Generator().manual_seed(_derived_seed(seed, index, "spec"))
    rank = _RANKS[index % len(_RANKS)]
    if index == 0:
        extra: tuple[str, ...] = ()
    elif index == 3:
        extra = _OPTIONAL_TARGETS
    else:
        pick = torch.rand(len(_OPTIONAL_TARGETS), generator=gen) < 0.5
        extra = tuple(t for t, keep in zip(_OPTIONAL_TARGETS, pick.tolist()) if keep)
    targets = tuple(t for t in ALL_TARGETS if t in ("q_proj", "v_proj") or t in extra)
    use_rslora = index % 4 == 2
    lora_alpha = 2.0 * math.sqrt(rank) if use_rslora else 2.0 * rank  # scale 2 either way
    strength = 0.3 + 0.3 * float(torch.rand((), generator=gen))
    return DemoAdapterSpec(rank, targets, use_rslora, lora_alpha, strength, _derived_seed(seed, index, "weights"))


def _fill_lora_weights(peft_model: torch.nn.Module, spec: DemoAdapterSpec) -> None:
    """Seeded lora_A / lora_B, non-zero B, sized so each target's delta is
    about `spec.strength` of the base projection's output."""
    gen = torch.Generator().manual_seed(spec.weight_seed)
    scale = spec.lora_alpha / math.sqrt(spec.rank) if spec.use_rslora else spec.lora_alpha / spec.rank
    params = {n: p for n, p in peft_model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if ".lora_A." in name:  # [r, in]: x·Aᵀ keeps x's per-element scale
                p.copy_(noise / math.sqrt(p.shape[1]))
            else:  # [out, r]
                p.copy_(noise * (spec.strength / (scale * math.sqrt(p.shape[1]))))


def check_adapter_targets(model_config: dict[str, Any], targets: Any, where: str) -> None:
    """Refuse (ValueError) LoRA target modules the Llama engine does not have."""
    if not isinstance(targets, (list, tuple)) or not targets:
        raise ValueError(f"{where}: target_modules must be a non-empty list of module names")
    unknown = sorted(set(map(str, targets)) - set(ALL_TARGETS))
    if unknown:
        raise ValueError(
            f"{where}: target modules {unknown} do not exist in a {model_config.get('model_type', 'llama')} "
            f"model (one of {', '.join(ALL_TARGETS)})"
        )


def canonical_adapter_config(config: dict[str, Any], base_model_id: str | None = None) -> bytes:
    """The adapter_config.json bytes we save: sorted keys and target list, no PEFT version/revision."""
    clean = {k: v for k, v in config.items() if k not in ("peft_version", "revision")}
    # PEFT keeps target_modules as a set: its saved order follows string hashing,
    # which differs between processes.
    if isinstance(clean.get("target_modules"), list):
        clean["target_modules"] = sorted(clean["target_modules"])
    if base_model_id is not None:
        clean["base_model_name_or_path"] = base_model_id
    return (json.dumps(clean, sort_keys=True, indent=2) + "\n").encode()


def build_demo_adapter(base_model: Any, dest_dir: str | os.PathLike[str], seed: int, index: int) -> str:
    """Build demo adapter `index` for the loaded `base_model` into `dest_dir`; return its adapter_id."""
    # get_peft_model injects layers into the model it is given: work on a copy.
    return _build_demo_adapter_in_place(
        copy.deepcopy(base_model), dest_dir, seed, index, getattr(base_model, "loranet_model_id", None)
    )


def _build_demo_adapter_in_place(
    model: Any, dest_dir: str | os.PathLike[str], seed: int, index: int, base_id: str | None
) -> str:
    """As `build_demo_adapter`, injecting the LoRA layers into `model` itself and removing them
    afterwards (PEFT's `unload`), so one loaded model serves many adapters without a copy each."""
    from peft import LoraConfig, get_peft_model

    spec = demo_adapter_spec(seed, index)
    lora_config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.lora_alpha,  # type: ignore[arg-type]  # PEFT takes a float alpha
        target_modules=list(spec.targets),
        lora_dropout=0.0,
        bias="none",
        use_rslora=spec.use_rslora,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora_config)
    _fill_lora_weights(peft_model, spec)
    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        for extra in tmp.iterdir():  # README.md model card and anything else
            if extra.name not in (CONFIG_NAME, WEIGHTS_NAME):
                extra.unlink()
        saved = json.loads((tmp / CONFIG_NAME).read_text())
        (tmp / CONFIG_NAME).write_bytes(canonical_adapter_config(saved, base_id))
        os.chmod(tmp, 0o755)
        adapter_id = adapter_content_id(tmp)
        _install_dir(tmp, dest, adapter_content_id, adapter_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.unload()  # the model's own Linear modules back in place
    return adapter_id


def build_demo_adapters(
    base_path: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    expected_model_id: str | None = None,
) -> list[tuple[str, Path, str]]:
    """Build `n` demo adapters for the checkpoint at `base_path`.

    Saved to `<out_dir>/demo-<i>` (default `<cache>/adapters`, see
    `cache_root`). Returns [(name, path, adapter_id)], name = "demo-<i>".
    Same base, n and seed give byte-identical directories and the same ids.
    """
    base = load_base_model(base_path, expected_model_id)  # ours alone: adapters are injected into it and removed
    root = Path(out_dir) if out_dir is not None else cache_root() / "adapters"
    out = []
    for i in range(n):
        name = f"demo-{i}"
        path = root / name
        out.append((name, path, _build_demo_adapter_in_place(base, path, seed, i, base.loranet_model_id)))
    return out


def load_adapter(path: str | os.PathLike[str], expected_adapter_id: str | None = None) -> LoadedAdapter:
    """Check an adapter directory's content hash, then read its config and tensors.

    Raises `ContentHashMismatch` if `expected_adapter_id` is given and differs."""
    from safetensors.torch import load_file

    path = Path(path)
    found = adapter_content_id(path)
    if expected_adapter_id is not None and found != expected_adapter_id:
        raise ContentHashMismatch("adapter", str(path), expected_adapter_id, found)
    config = json.loads((path / CONFIG_NAME).read_text())
    return LoadedAdapter(found, path, config, load_file(path / WEIGHTS_NAME))


def adapter_to_blobs(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(adapter_config.json bytes, adapter_model.safetensors bytes) of an adapter directory."""
    path = Path(path)
    return (path / CONFIG_NAME).read_bytes(), (path / WEIGHTS_NAME).read_bytes()


def adapter_id_of_blobs(config_bytes: bytes, weights_bytes: bytes) -> str:
    """The adapter_id the directory made of these two blobs would have."""
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise ValueError(f"adapter config blob is not JSON: {exc}") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise ValueError("adapter config blob is not a PEFT LoRA config (peft_type must be LORA)")
    return content_id(ADAPTER_DOMAIN, config, [(WEIGHTS_NAME, weights_bytes)])


def adapter_from_blobs(
    config_bytes: bytes, weights_bytes: bytes, dest_dir: str | os.PathLike[str], expected_adapter_id: str | None = None
) -> str:
    """Rebuild an adapter directory from its two blobs; return its adapter_id.

    The hash is checked before anything is written (`ContentHashMismatch`
    if `expected_adapter_id` differs); the directory is installed atomically."""
    found = adapter_id_of_blobs(config_bytes, weights_bytes)
    dest = Path(dest_dir)
    if expected_adapter_id is not None and found != expected_adapter_id:
        raise ContentHashMismatch("adapter", f"blobs for {dest}", expected_adapter_id, found)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / CONFIG_NAME).write_bytes(config_bytes)
        (tmp / WEIGHTS_NAME).write_bytes(weights_bytes)
        os.chmod(tmp, 0o755)
        _install_dir(tmp, dest, adapter_content_id, found)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return found
