"""Any Llama-family checkpoint directory: checked, registered into the cache, served; bad ones refused whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from loranet.model.catalog import ModelRefused, check_checkpoint, register_checkpoint, resolve_model
from loranet.model.generate import ReferenceModel
from loranet.model.tokenizers import TOKENIZER_FILES
from loranet.sampling import GREEDY
from services.inference.engine import Engine, EngineConfig, GenRequest


def small_llama(dest: Path, tokenizer_from: Path, **shape) -> Path:
    """A seeded small Llama with another GQA ratio and untied embeddings, carrying SmolLM2's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=49_152,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        rope_theta=10_000.0,
    )
    cfg.update(shape)
    torch.manual_seed(7)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.float32)
    model.save_pretrained(dest, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copy(tokenizer_from / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def small(real_model, tmp_path_factory):
    return small_llama(tmp_path_factory.mktemp("src") / "tiny-gqa4", real_model.path)


def test_a_differently_shaped_llama_registers_and_serves_like_hf(small, tmp_path):
    cache = tmp_path / "cache"
    model, tok = register_checkpoint(small, cache_dir=cache)
    assert model.name == "tiny-gqa4" and (cache / "models" / "tiny-gqa4" / "config.json").is_file()
    assert resolve_model("tiny-gqa4", cache).model_id == model.model_id  # served by name from now on
    assert register_checkpoint(small, cache_dir=cache)[0] == model  # idempotent
    engine = Engine(
        "tiny-gqa4", "", "cpu", str(cache), config=EngineConfig(adapter_slots=2, max_running=4, kv_blocks=16)
    )
    assert engine.llama.kv_heads == 1 and engine.tokenizer.tokenizer_id == tok.tokenizer_id
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hello"}]))
    fut = engine.submit(GenRequest("j", ids, "", 12, GREEDY, 0, ignore_eos=True))
    while engine.step():
        pass
    ref = ReferenceModel.from_path(model.path, model.model_id).generate(ids, None, 12, stop_ids=())
    assert fut.result(timeout=30).output_tokens == ref.output_ids


def _broken(src: Path, tmp: Path, edit) -> Path:
    d = tmp / "broken"
    shutil.copytree(src, d)
    edit(d)
    return d


def _rebuild(d: Path, **shape) -> None:
    """`d` rebuilt with another shape, keeping its tokenizer files."""
    keep = d.parent / "tokenizer-files"
    keep.mkdir()
    for name in TOKENIZER_FILES:
        if (d / name).is_file():
            shutil.copy(d / name, keep / name)
    shutil.rmtree(d)
    small_llama(d, keep, **shape)
    shutil.rmtree(keep)


def _config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: (d / "config.json").unlink(), "config.json: missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "not readable JSON"),
        (lambda d: _config(d, model_type="gpt2", architectures=["GPT2LMHeadModel"]), "GPT2LMHeadModel"),
        (lambda d: _config(d, attention_bias=True), "attention_bias"),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"),
            "corrupt safetensors",
        ),
        (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 16), "corrupt safetensors"),
        (lambda d: _config(d, num_hidden_layers=3), "model.layers.2"),
        (lambda d: _config(d, num_key_value_heads=2), "k_proj.weight has shape"),
        (lambda d: _rebuild(d, vocab_size=1000), "do not fit the model's vocabulary of 1000"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
        (lambda d: (d / "tokenizer.json").write_text("[]"), "tokenizer.json: cannot load"),
    ],
    ids=[
        "no-config",
        "bad-config",
        "architecture",
        "bias",
        "truncated",
        "garbage",
        "missing-tensor",
        "shape",
        "vocab",
        "no-tokenizer",
        "corrupt-tokenizer",
    ],
)
def test_a_bad_model_directory_is_refused_naming_the_file_and_nothing_is_registered(small, tmp_path, edit, message):
    bad = _broken(small, tmp_path, edit)
    cache = tmp_path / "cache"
    with pytest.raises(ModelRefused, match=message.replace("(", r"\(")):
        register_checkpoint(bad, name="broken", cache_dir=cache)
    assert not (cache / "models" / "broken").exists()
    assert not any((cache / "models").glob(".broken*")) if (cache / "models").exists() else True


def test_check_checkpoint_accepts_the_real_model(real_model):
    cfg, tok = check_checkpoint(real_model.path)
    assert cfg["num_key_value_heads"] == 3 and cfg["tie_word_embeddings"] and tok.vocab_size == cfg["vocab_size"]
