"""The demo catalogue: the built-in base model and demo adapters, registered with the datastore.

Adapters are named demo-0, demo-1, …; each has a developer and three data
contributors (devnet addresses) with attribution weights summing to 10000.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from . import protocol as p
from .model import TOKENIZER_ID
from .model.adapters import adapter_to_blobs, build_demo_adapters
from .model.checkpoint import DEFAULT_MODEL_NAME, cache_root, ensure_default_model
from .runtime import request
from .signing import devnet_address

DEMO_WEIGHTS = (5000, 3000, 2000)


def build_catalogue(n_adapters: int, cache_dir: str | None = None) -> tuple[Path, str, list[tuple[str, Path, str]]]:
    """Build (or reuse) the default model and `n_adapters` demo adapters: (model path, model id, adapters)."""
    path, model_id = ensure_default_model(cache_dir)
    adapters = build_demo_adapters(path, n_adapters, out_dir=cache_root(cache_dir) / "adapters",
                                   expected_model_id=model_id)
    return path, model_id, adapters


def demo_manifest(name: str, adapter_id: str, model_id: str, config: dict) -> p.AdapterManifest:
    contributors = [p.Contributor(contributor_id=f"{name}-data-{i}", address=devnet_address(f"contributor:{name}:{i}"),
                                  weight_bps=w) for i, w in enumerate(DEMO_WEIGHTS)]
    return p.AdapterManifest(
        adapter_id=adapter_id, name=name, base_model_id=model_id, owner_address=devnet_address(f"developer:{name}"),
        contributors=contributors, rank=int(config.get("r", 8)), target_modules=sorted(config.get("target_modules", [])),
        registered_at=time.time(),
    )


async def register_catalogue(nc: NATS, n_adapters: int, cache_dir: str | None = None) -> tuple[str, list[str]]:
    """Register the default model and demo adapters; idempotent. Returns (model_id, adapter names)."""
    import asyncio

    _, model_id, adapters = await asyncio.to_thread(build_catalogue, n_adapters, cache_dir)
    await request(nc, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=p.ModelManifest(
        model_id=model_id, name=DEFAULT_MODEL_NAME, architecture="LlamaForCausalLM", tokenizer_id=TOKENIZER_ID,
        registered_at=time.time())), p.ModelManifest, timeout=30)
    names = []
    for name, path, adapter_id in adapters:
        config_bytes, weights = adapter_to_blobs(path)
        manifest = demo_manifest(name, adapter_id, model_id, json.loads(config_bytes))
        await request(nc, p.DATASTORE_ADAPTER_PUT, p.AdapterPut(manifest=manifest, config=config_bytes, weights=weights),
                      p.AdapterManifest, timeout=30)
        names.append(name)
    return model_id, names
