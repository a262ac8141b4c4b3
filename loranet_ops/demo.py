"""The demo catalogue: a base model and its demo adapters, registered with the datastore.

SmolLM2-135M-Instruct (the default) comes with four adapters trained on the
datanets in datasets/ (`pirate`, `french`, `json`, `terse`; files committed in
adapters/demo/, rebuilt by `make demo-adapters`), each attributed to the
contributors named in its dataset. Those datasets are also registered as the
devnet's datanets (`register_demo_datanets`): one signed contribution per
contributor, each version's root recorded on chain, so `loranet datanet show
pirate` lists who gave which records. The seeded tiny model (the tests' fixture)
gets seeded random adapters named demo-0, demo-1, …, each with three
contributors (devnet addresses) whose weights sum to 10000.
"""

from __future__ import annotations

import hashlib
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
from loranet.signing import Identity, devnet_address, sign

DEMO_WEIGHTS = (5000, 3000, 2000)
# Trained demo adapters of the default model, in the order the demo shows them.
TRAINED_DIR = Path(__file__).resolve().parents[1] / "adapters" / "demo"
TRAINED = ("pirate", "french", "json", "terse")
DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets"


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
    if resolved.name != TINY_MODEL_NAME:
        await register_demo_datanets(nc, names)
    return resolved.model_id, names


def demo_contributions(name: str) -> list[tuple[str, bytes]]:
    """(payout address, chat JSONL records) per contributor of demo dataset `name`, in order of first line."""
    groups: dict[str, list[str]] = {}
    for line in (DATASETS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            groups.setdefault(row["contributor"], []).append(json.dumps({"messages": row["messages"]}))
    return [(address, ("\n".join(lines) + "\n").encode()) for address, lines in groups.items()]


def contributor_identity(name: str, address: str) -> Identity:
    """The devnet's signing key for a demo contributor (deterministic; a devnet placeholder, like its address)."""
    return Identity.from_seed(hashlib.sha256(f"loranet-devnet-contributor:{name}:{address}".encode()).digest())


async def register_demo_datanets(nc: NATS, names: list[str]) -> None:
    """Each demo dataset as a datanet: one contribution per contributor, signed by that contributor's devnet
    key, then the latest version's root recorded on chain. Idempotent (the same records again change nothing)."""
    for name in names:
        if not (DATASETS_DIR / f"{name}.jsonl").is_file():
            continue
        await request(
            nc, p.DATASTORE_DATANET_CREATE, p.DatanetCreate(name=name, description=f"the {name} demo adapter's data")
        )
        version = None
        for address, records in demo_contributions(name):
            identity = contributor_identity(name, address)
            contribution = p.Contribution(
                datanet=name,
                contributor_key=identity.public,
                payout_address=address,
                license="cc-by-4.0",
                records=records,
                created_at=time.time(),
            )
            version = await request(nc, p.DATASTORE_DATANET_CONTRIBUTE, sign(contribution, identity), timeout=60)
        if version is not None:
            await request(
                nc, p.SETTLEMENT_DATANET_RECORD, p.DatanetRecord(name=name, version=version.version), timeout=60
            )
