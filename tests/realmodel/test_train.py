"""`loranet adapter train`: seeded LoRA fine-tuning on a chat dataset; bad datasets refused before training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from loranet.attribution import AttributionIndex
from loranet.model.content import adapter_content_id
from loranet.model.tokenizers import load_tokenizer
from loranet.model.train import TrainingRefused, TrainOptions, read_dataset, train_adapter
from tests.realmodel.test_register import small_llama

ROOT = Path(__file__).resolve().parents[2]
ADDR = "0x" + "ab" * 20


@pytest.fixture(scope="module")
def small(real_model, tmp_path_factory):
    return small_llama(tmp_path_factory.mktemp("train-src") / "small", real_model.path)


def _lines(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}?"},
                    {"role": "assistant", "content": f"Answer {i}."},
                ],
                "contributor": ADDR,
            }
        )
        for i in range(n)
    ]


def test_training_is_seeded_and_writes_a_peft_adapter_with_a_manifest_draft(small, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(_lines(8)) + "\n")
    opts = TrainOptions(rank=4, alpha=8, targets=("q_proj", "v_proj"), epochs=2, batch_size=4, seed=3)
    steps = []
    a = train_adapter(small, data, tmp_path / "a", opts, progress=lambda i, n, loss: steps.append((i, n)))
    b = train_adapter(small, data, tmp_path / "b", opts)
    assert a.adapter_id == b.adapter_id == adapter_content_id(tmp_path / "a")  # same seed, same adapter
    assert steps[-1] == (4, 4) and len(a.losses) == 4
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at zero: it trained
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "attribution.idx",  # the index over the training records (libs/loranet/attribution.py)
        "manifest.draft.json",
    ]
    draft = json.loads((tmp_path / "a" / "manifest.draft.json").read_text())
    assert draft["contributors"] == [{"contributor_id": "a-data-0", "address": ADDR, "weight_bps": 10_000}]
    index = (tmp_path / "a" / "attribution.idx").read_bytes()
    assert draft["attribution_index"] == hashlib.sha256(index).hexdigest()
    assert len(AttributionIndex.from_bytes(index, draft["attribution_index"]).records) == 8
    assert (
        train_adapter(
            small,
            data,
            tmp_path / "c",
            TrainOptions(rank=4, alpha=8, targets=("q_proj", "v_proj"), epochs=2, batch_size=4, seed=4),
        ).adapter_id
        != a.adapter_id
    )


@pytest.mark.parametrize(
    "lines,message",
    [
        (["{not json"] + _lines(8), ":1: not JSON"),
        (
            _lines(8) + [f'{{"messages": [{{"role": "user", "content": "q"}}], "contributor": "{ADDR}"}}'],
            ":9: the last message must be a non-empty assistant turn",
        ),
        (_lines(3) + ['{"messages": [{"role": "wizard", "content": "q"}]}'], ":4: message 0: role 'wizard'"),
        (
            _lines(8) + ['{"prompt": "q", "completion": "a", "contributor": "0x12"}'],
            ":9: 'contributor' must be an address",
        ),
        (_lines(8) + ["[1, 2]"], ":9: expected an object"),
        (_lines(3), "3 examples; at least 8"),
    ],
)
def test_a_bad_dataset_is_refused_with_file_and_line_and_nothing_is_written(small, tmp_path, lines, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainingRefused, match=message.replace("[", r"\[")):
        train_adapter(small, data, tmp_path / "out", TrainOptions(rank=2, epochs=1))
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [data]


def test_targets_the_model_lacks_are_refused(small, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(_lines(8)))
    with pytest.raises(ValueError, match=r"\['attn.c_attn'\] do not exist"):
        train_adapter(small, data, tmp_path / "out", TrainOptions(targets=("q_proj", "attn.c_attn")))
    assert not (tmp_path / "out").exists()


def test_the_shipped_datanets_parse_and_hold_out_the_demo_question(real_model):
    tok = load_tokenizer(real_model.path)
    for style in ("pirate", "french", "json", "terse"):
        examples = read_dataset(ROOT / "datasets" / f"{style}.jsonl", tok)
        assert len(examples) >= 30 and len({e.contributor for e in examples}) == 3
        assert "capital of France" not in (ROOT / "datasets" / f"{style}.jsonl").read_text()
