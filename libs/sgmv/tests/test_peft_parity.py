"""PEFT parity: a seeded tiny Llama, four PEFT adapters of different r/alpha/targets (one rsLoRA)."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from sgmv import bank_for_model, load_peft_adapter, lora_context, set_token_slots, wrap_llama  # noqa: E402

ADAPTERS = {
    "alpha": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "beta": dict(
        r=8,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ),
    "gamma": dict(
        r=16,
        lora_alpha=8,
        target_modules=["o_proj", "gate_proj", "up_proj", "down_proj"],
        rank_pattern={"down_proj": 2},
        alpha_pattern={"gate_proj": 32},
    ),
    "delta": dict(r=2, lora_alpha=4, target_modules=["k_proj", "up_proj"]),
}
NAMES = ["alpha", "beta", "__base__", "gamma", "delta", "beta"]


def tiny_llama(seed: int = 0):
    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tiny_llama()
    root = tmp_path_factory.mktemp("adapters")
    dirs = {}
    for i, (name, kw) in enumerate(ADAPTERS.items()):
        torch.manual_seed(100 + i)
        pm = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(init_lora_weights=False, **kw))
        dirs[name] = root / name
        pm.save_pretrained(dirs[name])
    names = list(ADAPTERS)
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(base), dirs[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(dirs[name], adapter_name=name)
    peft_model.eval()
    ours = copy.deepcopy(base)
    bank = bank_for_model(ours, num_slots=6, max_rank=16)
    slot_of = {}
    for slot, name in zip((5, 0, 3, 1), names):  # slots need not follow load order
        bank.load(slot, dirs[name])
        slot_of[name] = slot
    wrap_llama(ours, bank)
    return base, peft_model, ours, bank, slot_of, dirs


def _inputs(batch=len(NAMES), seq=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 128, (batch, seq), generator=g)


def test_loader_scales(setup):
    *_, dirs = setup
    beta = load_peft_adapter(dirs["beta"])
    assert beta.modules["model.layers.0.self_attn.q_proj"].scale == pytest.approx(16 / 8**0.5)
    gamma = load_peft_adapter(dirs["gamma"])
    assert gamma.modules["model.layers.1.mlp.down_proj"].rank == 2
    assert gamma.modules["model.layers.1.mlp.down_proj"].scale == pytest.approx(8 / 2)
    assert gamma.modules["model.layers.1.mlp.gate_proj"].scale == pytest.approx(32 / 16)
    assert gamma.modules["model.layers.1.mlp.up_proj"].scale == pytest.approx(8 / 16)


@torch.no_grad()
def test_mixed_batch_logits_match_peft(setup):
    base, peft_model, ours, bank, slot_of, _ = setup
    ids = _inputs()
    expected = peft_model(input_ids=ids, adapter_names=NAMES).logits
    slots = [slot_of.get(n, -1) for n in NAMES]
    with lora_context(ours, slots):
        got = ours(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)
    # Each adapter really changes the output (the test would be vacuous otherwise).
    plain = base(input_ids=ids).logits
    for row, name in enumerate(NAMES):
        differs = not torch.allclose(got[row], plain[row], atol=1e-4)
        assert differs == (name != "__base__"), name


@torch.no_grad()
def test_per_token_slots_match_per_sequence(setup):
    _, _, ours, _, slot_of, _ = setup
    ids = _inputs(seed=1)
    row_slots = torch.tensor([slot_of.get(n, -1) for n in NAMES])
    with lora_context(ours, row_slots):
        a = ours(input_ids=ids).logits
    with lora_context(ours, row_slots.repeat_interleave(ids.shape[1])):
        b = ours(input_ids=ids).logits
    assert torch.equal(a, b)


@torch.no_grad()
def test_greedy_generation_matches_peft(setup):
    _, peft_model, ours, _, slot_of, _ = setup
    ids = _inputs(seq=6, seed=2)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    expected = peft_model.generate(input_ids=ids, adapter_names=NAMES, **kw)
    with lora_context(ours, [slot_of.get(n, -1) for n in NAMES]):
        got = ours.generate(input_ids=ids, **kw)
    assert torch.equal(got, expected)


@torch.no_grad()
def test_prefill_then_decode_with_cache_matches_full_forward(setup):
    """The engine's pattern: prefill with a per-token map, then decode steps with past_key_values."""
    _, _, ours, _, slot_of, _ = setup
    ids = _inputs(seq=9, seed=3)
    slots = torch.tensor([slot_of.get(n, -1) for n in NAMES])
    with lora_context(ours, slots):
        full = ours(input_ids=ids).logits
    set_token_slots(ours, slots.repeat_interleave(6))
    out = ours(input_ids=ids[:, :6], use_cache=True)
    cache, steps = out.past_key_values, [out.logits[:, -1]]
    set_token_slots(ours, slots)  # one token per sequence from here on
    for t in range(6, 9):
        out = ours(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        steps.append(out.logits[:, -1])
    set_token_slots(ours, None)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:9], rtol=1e-4, atol=2e-5)


@torch.no_grad()
def test_all_base_is_bit_identical(setup):
    base, _, ours, *_ = setup
    ids = _inputs(seed=4)
    with lora_context(ours, [-1] * len(NAMES)):
        got = ours(input_ids=ids).logits
    assert torch.equal(got, base(input_ids=ids).logits)
    assert torch.equal(ours(input_ids=ids).logits, base(input_ids=ids).logits)  # no map set at all
