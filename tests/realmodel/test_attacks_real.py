"""The verifier's adversarial suite on SmolLM2-135M-Instruct (vocabulary 49,152, hidden 576).

Honest node: HF + PEFT over the real model with two trained demo adapters; the verifier's audit engine
loads the same. Cheaters (tests/verifier/attacks.py): the real model in bf16, with adapters scaled by
0.5, another adapter, no adapter, a "cheaper model" (SmolLM2's first 8 of 30 layers, same width and
tokenizer), edited outputs, false end of turn, wrong seed, truncated proofs, forged and replayed results.
Default sizes are small (LORANET_REAL_ATTACK_TRIALS, LORANET_REAL_HONEST_JOBS); the issue's full sizes
(300 per attack, 1,000 honest) run with `-m slow` (hours on 2 CPU cores).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verifier"))

from attacks import ATTACKS, build_kit, local_verifier  # noqa: E402
from test_attacks import _attack_runs, _honest_runs  # noqa: E402
from verifier_nodes import Client, HonestNode  # noqa: E402

TRIALS = int(os.environ.get("LORANET_REAL_ATTACK_TRIALS", "2"))
HONEST = int(os.environ.get("LORANET_REAL_HONEST_JOBS", "10"))
ADAPTERS = ("pirate", "terse")


def truncated_copy(src: Path, dest: Path, layers: int) -> Path:
    """The checkpoint at `src` cut to its first `layers` decoder layers (a cheaper model, same tokenizer)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = layers
    (dest / "config.json").write_text(json.dumps(cfg))
    keep = {
        k: v
        for k, v in load_file(src / "model.safetensors").items()
        if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers
    }
    save_file(keep, dest / "model.safetensors")
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors", ".source.json") and f.is_file():
            shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture(scope="module")
def real_kit(real_model, demo_adapters, tmp_path_factory):
    from loranet.model.generate import ReferenceModel
    from services.verifier.engine import AuditEngine

    cache = tmp_path_factory.mktemp("real-attacks")
    adapters = [(name, demo_adapters[name][0], demo_adapters[name][1]) for name in ADAPTERS]
    engine = AuditEngine(str(real_model.path), real_model.model_id, "cpu", str(cache), adapter_slots=4)
    node_model = ReferenceModel.from_path(real_model.path, real_model.model_id)
    for name, path, adapter_id in adapters:
        engine.load_adapter_dir(adapter_id, path)
        node_model.add_adapter(name, path, adapter_id)
    honest = HonestNode("node-honest", node_model, {aid: name for name, _, aid in adapters})
    cheaper = truncated_copy(real_model.path, cache / "smollm2-first8", 8)
    kit = build_kit(honest, Client(), real_model.model_id, adapters, str(cheaper), str(real_model.path), seed=99)
    return local_verifier(engine, [honest]), kit


def test_real_model_honest_jobs_are_accepted(real_kit):
    verifier, kit = real_kit
    assert _honest_runs(verifier, kit, HONEST) == []


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_real_model_attack_is_detected(real_kit, attack):
    verifier, kit = real_kit
    assert _attack_runs(verifier, kit, attack, TRIALS) == []


@pytest.mark.slow
@pytest.mark.timeout(0)  # about 25 minutes on 2 cores
def test_real_model_full_size_honest(real_kit):
    verifier, kit = real_kit
    assert _honest_runs(verifier, kit, 1000) == []


@pytest.mark.slow
@pytest.mark.timeout(0)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_real_model_full_size_attack(real_kit, attack):
    verifier, kit = real_kit
    assert _attack_runs(verifier, kit, attack, 300) == []
