import json
import os
import subprocess
import sys

import pytest
import torch

from loranet.model import ContentHashMismatch, adapter_content_id, load_base_model
from loranet.model import tokenizer as T
from loranet.model.adapters import (
    adapter_from_blobs,
    adapter_to_blobs,
    build_demo_adapters,
    demo_adapter_spec,
    load_adapter,
)


def test_demo_adapters_are_byte_identical_across_builds(base_ckpt, demo_adapters, tmp_path):
    again = build_demo_adapters(base_ckpt[0], len(demo_adapters), seed=0, out_dir=tmp_path)
    for (n1, p1, id1), (n2, p2, id2) in zip(demo_adapters, again):
        assert (n1, id1) == (n2, id2)
        assert sorted(os.listdir(p2)) == ["adapter_config.json", "adapter_model.safetensors"]
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            assert (p1 / f).read_bytes() == (p2 / f).read_bytes()
    assert len({i for _, _, i in demo_adapters}) == len(demo_adapters)


def test_demo_adapter_ids_do_not_depend_on_the_process(base_ckpt, demo_adapters, tmp_path):
    """PEFT keeps target_modules in a set; another hash seed must not reorder the saved config."""
    code = (
        "import sys; from loranet.model.adapters import build_demo_adapters;"
        "print(build_demo_adapters(sys.argv[1], 2, seed=0, out_dir=sys.argv[2])[1][2])"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", LORANET_CACHE=str(tmp_path / "cache"))
    out = subprocess.run(
        [sys.executable, "-c", code, str(base_ckpt[0]), str(tmp_path / "a")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == demo_adapters[1][2]


def test_demo_adapters_vary(demo_adapters):
    specs = [demo_adapter_spec(0, i) for i in range(len(demo_adapters))]
    assert {s.rank for s in specs} == {4, 8, 16}
    assert all({"q_proj", "v_proj"} <= set(s.targets) for s in specs)
    assert any(s.use_rslora for s in specs) and len({s.targets for s in specs}) > 1
    cfg = json.loads((demo_adapters[2][1] / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is True and "peft_version" not in cfg


def test_load_adapter_checks_hash(demo_adapters, tmp_path):
    name, path, adapter_id = demo_adapters[1]
    loaded = load_adapter(path, adapter_id)
    assert loaded.adapter_id == adapter_id and loaded.config["r"] == 8
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in loaded.tensors.items())
    with pytest.raises(ContentHashMismatch, match="expected adapter_id " + demo_adapters[0][2]):
        load_adapter(path, demo_adapters[0][2])


def test_blobs_round_trip_and_refuse_tampering(demo_adapters, tmp_path):
    name, path, adapter_id = demo_adapters[3]
    config_bytes, weights_bytes = adapter_to_blobs(path)
    assert adapter_from_blobs(config_bytes, weights_bytes, tmp_path / "x", adapter_id) == adapter_id
    assert adapter_content_id(tmp_path / "x") == adapter_id
    tampered = bytearray(weights_bytes)
    tampered[-1] ^= 0x80
    with pytest.raises(ContentHashMismatch):
        adapter_from_blobs(config_bytes, bytes(tampered), tmp_path / "y", adapter_id)
    assert not (tmp_path / "y").exists()  # nothing written on refusal
    cfg = json.loads(config_bytes)
    cfg["lora_alpha"] = 1.0
    with pytest.raises(ContentHashMismatch):
        adapter_from_blobs(json.dumps(cfg).encode(), weights_bytes, tmp_path / "z", adapter_id)


def test_adapters_change_greedy_output(base_ckpt, demo_adapters):
    from peft import PeftModel

    model = PeftModel.from_pretrained(
        load_base_model(*base_ckpt), str(demo_adapters[0][1]), adapter_name=demo_adapters[0][0]
    )
    for name, path, _ in demo_adapters[1:]:
        model.load_adapter(str(path), adapter_name=name)
    prompts = ["Hello world", "The quick brown fox", "12345", "What is the capital of France?", "def f(x):", "zzz"]
    distinct = 0
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([T.encode(p)])
            with model.disable_adapter():
                outs = [tuple(model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0].tolist())]
            for name, _, _ in demo_adapters:
                model.set_adapter(name)
                outs.append(tuple(model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0].tolist()))
            distinct += len(set(outs)) == len(outs)
    assert distinct >= len(prompts) - 1, f"base and adapters all differ on only {distinct}/{len(prompts)} prompts"
