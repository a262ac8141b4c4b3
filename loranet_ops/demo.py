"""The demo catalogue: a base model and its demo adapters, registered with the datastore.

SmolLM2-135M-Instruct (the default) comes with four adapters trained on the
datanets in datasets/ (`pirate`, `french`, `json`, `terse`; files committed in
adapters/demo/, rebuilt by `make demo-adapters`), each attributed to the
contributors named in its dataset. The seeded tiny model (the tests' fixture)
gets seeded random adapters named demo-0, demo-1, …, each with three
contributors (devnet addresses) whose weights sum to 10000.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from loranet import protocol as p
from loranet.attribution import read_index_file
from loranet.model.adapters import adapter_to_blobs, build_demo_adapters
from loranet.model.catalog import ResolvedModel, resolve_model
from loranet.model.checkpoint import TINY_MODEL_NAME, cache_root
from loranet.model.content import adapter_content_id
from loranet.model.tokenizers import load_tokenizer
from loranet.runtime import request
from loranet.signing import devnet_address

DEMO_WEIGHTS = (5000, 3000, 2000)
# Trained demo adapters of the default model, in the order the demo shows them.
TRAINED_DIR = Path(__file__).resolve().parents[1] / "adapters" / "demo"
TRAINED = ("pirate", "french", "json", "terse")


def build_catalogue(
    model: str, n_adapters: int, cache_dir: str | None = None
) -> tuple[ResolvedModel, list[tuple[str, Path, str, list[p.Contributor]]]]:
    """The model and its demo adapters: (model, [(name, path, adapter id, contributors)])."""
    resolved = resolve_model(model, cache_dir)
    if resolved.name == TINY_MODEL_NAME:
        built = build_demo_adapters(
            resolved.path, n_adapters, out_dir=cache_root(cache_dir) / "adapters", expected_model_id=resolved.model_id
        )
        return resolved, [(name, path, adapter_id, seeded_contributors(name)) for name, path, adapter_id in built]
    adapters = []
    for name in TRAINED[:n_adapters]:
        path = TRAINED_DIR / name
        if not (path / "adapter_config.json").is_file():
            continue
        draft = json.loads((path / "manifest.draft.json").read_text())
        adapters.append((name, path, adapter_content_id(path), [p.Contributor(**c) for c in draft["contributors"]]))
    return resolved, adapters


def seeded_contributors(name: str) -> list[p.Contributor]:
    return [
        p.Contributor(
            contributor_id=f"{name}-data-{i}", address=devnet_address(f"contributor:{name}:{i}"), weight_bps=w
        )
        for i, w in enumerate(DEMO_WEIGHTS)
    ]


def demo_manifest(
    name: str,
    adapter_id: str,
    model_id: str,
    config: dict,
    contributors: list[p.Contributor] | None = None,
    attribution_index: str = "",
) -> p.AdapterManifest:
    return p.AdapterManifest(
        adapter_id=adapter_id,
        name=name,
        base_model_id=model_id,
        owner_address=devnet_address(f"developer:{name}"),
        contributors=contributors or seeded_contributors(name),
        rank=int(config.get("r", 8)),
        target_modules=sorted(config.get("target_modules", [])),
        registered_at=time.time(),
        attribution_index=attribution_index,
    )


def model_manifest(model: ResolvedModel) -> p.ModelManifest:
    """The registry record of a model: content id, tokenizer id, chat template, vocabulary."""
    tok = load_tokenizer(model.path)
    return p.ModelManifest(
        model_id=model.model_id,
        name=model.name,
        architecture="LlamaForCausalLM",
        tokenizer_id=tok.tokenizer_id,
        chat_template=tok.chat_template,
        vocab_size=tok.vocab_size,
        registered_at=time.time(),
    )


async def register_catalogue(
    nc: NATS, model: str, n_adapters: int, cache_dir: str | None = None
) -> tuple[str, list[str]]:
    """Register the model and its demo adapters; idempotent. Returns (model_id, adapter names)."""
    import asyncio

    resolved, adapters = await asyncio.to_thread(build_catalogue, model, n_adapters, cache_dir)
    manifest = await asyncio.to_thread(model_manifest, resolved)
    await request(nc, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=manifest), timeout=30)
    names = []
    for name, path, adapter_id, contributors in adapters:
        config_bytes, weights = adapter_to_blobs(path)
        index_id, index = read_index_file(path)  # the trained demo adapters: an index over their datanet
        adapter = demo_manifest(name, adapter_id, resolved.model_id, json.loads(config_bytes), contributors, index_id)
        await request(
            nc,
            p.DATASTORE_ADAPTER_PUT,
            p.AdapterPut(manifest=adapter, config=config_bytes, weights=weights, attribution=index),
            timeout=30,
        )
        names.append(name)
    return resolved.model_id, names
