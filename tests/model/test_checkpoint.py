import json

import pytest
import torch

from loranet.model import (
    ContentHashMismatch,
    build_base_checkpoint,
    ensure_tiny_model,
    load_base_model,
    model_content_id,
)
from loranet.model import tokenizer as T


def test_build_is_byte_identical(base_ckpt, tmp_path):
    path, model_id = base_ckpt
    again = tmp_path / "again"
    assert build_base_checkpoint(again, seed=0) == model_id
    for name in ("config.json", "model.safetensors"):
        assert (again / name).read_bytes() == (path / name).read_bytes()
    assert sorted(p.name for p in again.iterdir()) == ["config.json", "model.safetensors"]


def test_seed_changes_id(base_ckpt, other_base_ckpt):
    assert base_ckpt[1] != other_base_ckpt[1]


def test_config_shape(base_ckpt):
    cfg = json.loads((base_ckpt[0] / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (128, 352, 4)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (4, 2, 259)
    assert cfg["tie_word_embeddings"] is False and cfg["model_type"] == "llama"


def test_id_ignores_volatile_config_keys_and_file_layout(base_ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    path, model_id = base_ckpt
    cfg = json.loads((path / "config.json").read_text())
    cfg["transformers_version"] = "0.0.0"
    cfg["_name_or_path"] = "/somewhere/else"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(path / "model.safetensors")
    names = sorted(tensors)
    # two shards, reversed order, different metadata: same content
    save_file({n: tensors[n] for n in names[::2]}, tmp_path / "model-00001-of-00002.safetensors", metadata={"x": "1"})
    save_file({n: tensors[n] for n in names[1::2]}, tmp_path / "model-00002-of-00002.safetensors")
    assert model_content_id(tmp_path) == model_id


def test_id_sees_one_changed_config_value(base_ckpt, tmp_path):
    import shutil

    path, model_id = base_ckpt
    shutil.copytree(path, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    assert model_content_id(tmp_path / "m") != model_id


def test_load_checks_hash_and_refuses_tampered_weights(base_ckpt, tmp_path):
    import shutil

    path, model_id = base_ckpt
    model = load_base_model(path, model_id)
    assert model.loranet_model_id == model_id and not model.training
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    blob = bytearray((bad / "model.safetensors").read_bytes())
    blob[-3] ^= 0x01  # one bit of one weight
    (bad / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ContentHashMismatch) as err:
        load_base_model(bad, model_id)
    assert model_id in str(err.value) and err.value.found in str(err.value) and err.value.found != model_id


def test_final_hidden_state_is_after_the_final_norm(base_ckpt):
    """hidden_states[-1] of HF Llama is post-norm: lm_head of it is the logits."""
    model = load_base_model(*base_ckpt)
    ids = torch.tensor([T.encode("check the norm")])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        last = out.hidden_states[-1]
        torch.testing.assert_close(model.lm_head(last), out.logits)
        torch.testing.assert_close(last.pow(2).mean(-1), torch.ones(last.shape[:2]), atol=1e-3, rtol=0)


def test_greedy_output_depends_on_prompt(base_ckpt):
    model = load_base_model(*base_ckpt)
    prompts = ["Hello world", "The quick brown fox", "12345", "loranet", "What is 2+2?"]
    outs = set()
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([T.encode(p)])
            outs.add(
                tuple(model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist())
            )
    assert len(outs) == len(prompts)


def test_ensure_tiny_model_uses_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORANET_CACHE", str(tmp_path))
    path, model_id = ensure_tiny_model()
    assert path == tmp_path / "models" / "loranet-tiny-llama" and model_content_id(path) == model_id
    assert ensure_tiny_model() == (path, model_id)  # reused, same id
