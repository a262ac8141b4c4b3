"""SGMV multi-LoRA benchmark: this library vs PEFT, side by side in one run.

Model: Llama architecture with TinyLlama-1.1B's layer shapes (hidden 2048,
intermediate 5632, 32 heads, 4 KV heads), few layers, seeded random weights, a
byte-level vocabulary (as loranet's embedded model). Adapters: r=16 on all
seven projections. Decode = batch 64 x 1 new token (no KV cache: attention over
one position, so the LoRA share of the time is if anything overstated);
prefill = batch 8 x 128 tokens, logits of the last position only.

Variants on the same model and inputs: base model alone; sgmv with one
adapter for the whole batch; sgmv with N distinct adapters (sequence i uses
adapter i mod N); PEFT's mixed batch (``adapter_names``) with N adapters;
PEFT with one adapter; a per-adapter Python loop (one sgmv forward per
adapter's sub-batch). On CUDA the sgmv variants use the Triton kernels (bf16), on CPU
the torch path (float32).

    python bench/sgmv_bench.py --quick          # < 1 minute on 2 CPU cores
    python bench/sgmv_bench.py --json           # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

RANK, ALPHA = 16, 32
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(layers: int, vocab: int, device, dtype):
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


def build_peft(base, n_adapters: int):
    import peft

    torch.manual_seed(1)
    cfg = dict(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    pm = peft.get_peft_model(base, peft.LoraConfig(**cfg), adapter_name="a0")
    for i in range(1, n_adapters):
        pm.add_adapter(f"a{i}", peft.LoraConfig(**cfg))
    return pm.eval()


def build_sgmv(base, peft_model, n_adapters: int, backend):
    import peft

    import sgmv

    model = copy.deepcopy(base)
    bank = sgmv.bank_for_model(model, num_slots=n_adapters, max_rank=RANK)
    for i in range(n_adapters):
        state = peft.get_peft_model_state_dict(peft_model, adapter_name=f"a{i}")
        config = peft_model.peft_config[f"a{i}"].to_dict()
        bank.load(i, sgmv.adapter_from_peft_state(state, config, name=f"a{i}"))
    sgmv.wrap_llama(model, bank, backend=backend)
    return model, bank


def timed_interleaved(variants: dict, reps: int, sync) -> dict[str, float]:
    """Best-of-``reps`` seconds per variant. Rounds run every variant in turn,
    so load from other processes on a shared machine hits all of them alike,
    and the minimum discards rounds a neighbour disturbed."""
    for fn in variants.values():  # warm-up
        fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 layer, fewer repetitions (< 1 minute on CPU)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: 1 quick, 2 full; 4 on CUDA)")
    ap.add_argument("--vocab", type=int, default=320)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument(
        "--backend",
        choices=["torch", "triton"],
        default=None,
        help="sgmv backend (default: triton on CUDA, torch on CPU)",
    )
    args = ap.parse_args(argv)

    import sgmv
    import sgmv.ops

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    layers = args.layers or (4 if cuda else (1 if args.quick else 2))
    reps = args.reps or (5 if args.quick else 7)
    prefill_reps = 2 if args.quick and not cuda else reps
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    backend_mod = sgmv.ops.select_backend(device, args.backend)
    backend = backend_mod.__name__.rsplit(".", 1)[-1].replace("_ops", "")
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    n_max = 64
    t_start = time.perf_counter()
    base = build_model(layers, args.vocab, device, dtype)
    peft_model = build_peft(copy.deepcopy(base), n_max)
    ours, bank = build_sgmv(base, peft_model, n_max, args.backend)
    log(
        f"device={device} dtype={dtype} backend={backend} layers={layers} vocab={args.vocab} "
        f"threads={torch.get_num_threads()} setup={time.perf_counter() - t_start:.1f}s"
    )

    shapes = {"decode": (64, 1), "prefill": (8, 128)}
    results: dict[str, dict[str, float]] = {}
    g = torch.Generator().manual_seed(0)
    for phase, (batch, seq) in shapes.items():
        ids = torch.randint(3, args.vocab, (batch, seq), generator=g).to(device)
        keep = 1 if phase == "prefill" else 0  # prefill: last position's logits only
        n_reps = reps if phase == "decode" else prefill_reps
        r: dict[str, float] = {}

        def run_base():
            base(input_ids=ids, logits_to_keep=keep)

        def run_ours(slots):
            def f():
                with sgmv.lora_context(ours, slots):
                    ours(input_ids=ids, logits_to_keep=keep)

            return f

        def run_peft_mixed(n):
            names = [f"a{i % n}" for i in range(batch)]
            return lambda: peft_model(input_ids=ids, adapter_names=names, logits_to_keep=keep)

        def run_peft_single():
            peft_model(input_ids=ids, logits_to_keep=keep)  # active adapter: a0

        def run_loop(n):
            # What a user without mixed batches does: one forward per adapter's sub-batch.
            groups: dict[int, list[int]] = {}
            for i in range(batch):
                groups.setdefault(i % n, []).append(i)

            def f():
                for slot, rows in groups.items():
                    with sgmv.lora_context(ours, [slot] * len(rows)):
                        ours(input_ids=ids[rows], logits_to_keep=keep)

            return f

        variants = {"base": run_base, "single": run_ours([0] * batch)}
        for n in (1, 8, 32, 64):
            variants[f"mixed{n}"] = run_ours([i % n for i in range(batch)])
        variants["peft_single"] = run_peft_single
        for n in (32,) if args.quick else (8, 32, 64):
            variants[f"peft_mixed{n}"] = run_peft_mixed(n)
        variants["loop32"] = run_loop(32)
        with torch.inference_mode():
            r = timed_interleaved(variants, n_reps, sync)
        results[phase] = r
        log(f"\n{phase}: batch {batch} x {seq} tokens (distinct adapters in the batch = min(N, {batch}))")
        for k, v in r.items():
            log(f"  {k:<14} {v * 1e3:9.1f} ms   {v / r['base']:5.2f}x base   {v / r['single']:5.2f}x single")

    # Bytes a decode step must read: every base weight (embedding rows aside) + the adapters in use.
    base_bytes = sum(p.numel() * p.element_size() for n, p in base.named_parameters() if "embed_tokens" not in n)
    adapter_bytes = sum(
        (p.spec.in_features * RANK * p.num_slices + RANK * p.out_features)
        * bank.projections[name].lora_a.element_size()
        for name, p in bank.projections.items()
    )
    floor = (base_bytes + 64 * adapter_bytes) / (base_bytes + adapter_bytes)
    d, p = results["decode"], results["prefill"]
    summary = {
        "decode_mixed64_over_single": round(d["mixed64"] / d["single"], 4),
        "decode_byte_floor_ratio": round(floor, 4),
        "prefill_mixed64_over_single": round(p["mixed64"] / p["single"], 4),
        "decode_lora_over_base": round(d["single"] / d["base"], 4),
        "decode_mixed64_over_base": round(d["mixed64"] / d["base"], 4),
        "prefill_lora_over_base": round(p["single"] / p["base"], 4),
        "decode_speedup_vs_peft_mixed32": round(d["peft_mixed32"] / d["mixed32"], 4),
        "prefill_speedup_vs_peft_mixed32": round(p["peft_mixed32"] / p["mixed32"], 4),
        "decode_speedup_vs_loop32": round(d["loop32"] / d["mixed32"], 4),
        "peft_decode_mixed32_over_base": round(d["peft_mixed32"] / d["base"], 4),
        "device": f"{device.type}:{torch.cuda.get_device_name() if cuda else 'cpu'} ({torch.get_num_threads()} "
        "threads)",
        "backend": backend,
        "dtype": str(dtype).replace("torch.", ""),
        "layers": layers,
        "targets": {
            "prefill_mixed64_over_single<=1.10": p["mixed64"] / p["single"] <= 1.10,
            "decode_mixed64_over_single<=1.10*floor": d["mixed64"] / d["single"] <= 1.10 * floor,
            "decode_speedup_vs_peft_mixed32>=2": d["peft_mixed32"] / d["mixed32"] >= 2.0,
            "prefill_speedup_vs_peft_mixed32>=1": p["peft_mixed32"] / p["mixed32"] >= 1.0,
        },
        "ms": {ph: {k: round(v * 1e3, 2) for k, v in res.items()} for ph, res in results.items()},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print()
        for k, v in summary.items():
            if k != "ms":
                print(f"{k}: {v}")
    return summary


if __name__ == "__main__":
    main()
