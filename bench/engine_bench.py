"""Inference engine benchmark: continuous batching over many LoRA adapters vs PEFT, side by side in one run.

Same prompts, same model (loranet's embedded tiny Llama, or with --shape tinyllama
TinyLlama-1.1B's layer shapes with seeded weights),
demo adapters built from seeds, greedy decoding of `--max-tokens` tokens per
job (EOS disabled so every variant generates the same number of tokens).

Variants (each a fresh engine run over the same jobs):
  base            every job on the base model (no adapter)
  single          every job on adapter 0
  mixed-N-uniform jobs spread round-robin over N adapters, N in {1, 16, 64, 256}
  mixed-N-zipf    adapters drawn with Zipf(1.0) popularity (seeded)
  (N=256 runs over `--slots` device slots: eviction under load)
  peft-64         PEFT + transformers `generate`, batching the jobs of each adapter (one
                  batch per adapter, left-padded), the baseline a Python user has today

Throughput = generated tokens / wall time (prefill included), fingerprints
included for the engine (it commits them while serving).

    python bench/engine_bench.py --quick        # < 1 minute on 2 CPU cores (fewer jobs/adapters)
    python bench/engine_bench.py --json         # one JSON object on stdout
    python bench/engine_bench.py --shape tinyllama --layers 8   # on CUDA: bf16, the Triton kernels
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loranet.model import build_demo_adapters, ensure_tiny_model, tokenizer  # noqa: E402
from loranet.model.adapters import adapter_to_blobs  # noqa: E402
from loranet.sampling import GREEDY  # noqa: E402
from services.inference.engine import Engine, EngineConfig, GenRequest  # noqa: E402

WORDS = ("the node serves adapters while the verifier checks fingerprints and settlement pays everyone "
         "one prefill replays the sampler on its logits").split()


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [tokenizer.encode(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))) for _ in range(n)]


def assignment(n_jobs: int, n_adapters: int, dist: str, seed: int = 0) -> list[int]:
    if dist == "uniform":
        return [i % n_adapters for i in range(n_jobs)]
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) for k in range(n_adapters)]
    return rng.choices(range(n_adapters), weights=weights, k=n_jobs)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Llama shapes the bench can build (seeded weights, loranet's byte vocabulary).
SHAPES = {
    "tiny": None,  # the embedded default model (hidden 128, 4 layers)
    # TinyLlama-1.1B's layer shapes; --layers picks how many (22 in the real model).
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4),
}


def build_model(shape: str, layers: int, cache: str) -> tuple[Path, str]:
    if SHAPES[shape] is None:
        return ensure_tiny_model(cache)
    from loranet.model.checkpoint import TinyLlamaSpec, build_base_checkpoint

    spec = TinyLlamaSpec(num_hidden_layers=layers, **SHAPES[shape])
    path = Path(cache) / "models" / f"{shape}-{layers}l"
    return path, build_base_checkpoint(path, seed=0, spec=spec)


def tensor_elements(path: Path, skip: str = "") -> int:
    """Elements of every tensor in a directory's safetensors files (names containing `skip` left out)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys() if not (skip and skip in k))
    return total


def weight_bytes_per_step(base_path: Path, adapters, which: list[int | None], max_running: int, dtype: str) -> dict:
    """Weight bytes a full decode step reads: the base model's (embeddings aside: a step reads only its tokens'
    rows) and the distinct adapters' of the first `max_running` jobs. When the adapters' bytes rival the base
    model's, a mixed batch is bound by reading them, however the kernels are written."""
    size = DTYPES[dtype].itemsize
    base = tensor_elements(base_path, skip="embed_tokens") * size
    distinct = sorted({w for w in which[:max_running] if w is not None})
    lora = sum(tensor_elements(adapters[k][1]) for k in distinct) * size
    return {"base_bytes": base, "adapter_bytes": lora, "adapters_over_base": lora / base}


def run_engine(engine_args, adapters, jobs_prompts, which: list[int | None], max_tokens: int, slots: int,
               max_running: int, dtype: str) -> dict:
    """which[i] = adapter index of job i, or None for the base model."""
    path, model_id, cache = engine_args
    engine = Engine(path, model_id, DEVICE, cache,
                    config=EngineConfig(adapter_slots=slots, max_running=max_running, host_adapters=len(adapters),
                                        dtype=dtype))
    for k in sorted({w for w in which if w is not None}):
        engine.install_adapter(adapters[k][2], *adapter_to_blobs(adapters[k][1]))
    # Warm up (allocator, first-touch) on a couple of jobs, not timed.
    for i in range(2):
        engine.submit(GenRequest(f"w{i}", jobs_prompts[i], "" if which[i] is None else adapters[which[i]][2], 4,
                                 GREEDY, 0))
    engine.run_until_idle()
    # ignore_eos: the same token count for every variant.
    reqs = [GenRequest(f"j{i}", p, "" if w is None else adapters[w][2], max_tokens, GREEDY, 0, ignore_eos=True)
            for i, (p, w) in enumerate(zip(jobs_prompts, which))]
    t0, c0 = time.perf_counter(), time.process_time()
    futs = [engine.submit(r) for r in reqs]
    engine.run_until_idle()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gens = [f.result(0) for f in futs]
    tokens = sum(len(g.output_tokens) for g in gens)
    full = [len(c) for g in gens for c in g.chunks[1:1 + len(g.output_tokens) // 32]]
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu,
            "steps": engine.steps,
            "fingerprint_bytes_per_32_tokens": sum(full) / len(full) if full else None,
            "outputs": [g.output_tokens for g in gens]}


def run_peft(base_path: str, adapters, jobs_prompts, which: list[int], max_tokens: int, dtype: str) -> dict:
    """PEFT + HF generate, one left-padded batch per adapter."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(base_path, dtype=DTYPES[dtype], local_files_only=True).to(DEVICE).eval()
    used = sorted(set(which))
    peft = PeftModel.from_pretrained(model, str(adapters[used[0]][1]), adapter_name=f"a{used[0]}", is_trainable=False)
    for k in used[1:]:
        peft.load_adapter(str(adapters[k][1]), adapter_name=f"a{k}", is_trainable=False)
    peft.eval()
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(which):
        groups.setdefault(k, []).append(i)
    tokens = 0
    outputs: list[list[int]] = [[] for _ in which]
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for k, idx in groups.items():
            peft.set_adapter(f"a{k}")
            L = max(len(jobs_prompts[i]) for i in idx)
            ids = torch.full((len(idx), L), tokenizer.PAD_ID, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                p = jobs_prompts[i]
                ids[r, L - len(p):] = torch.tensor(p)
                mask[r, L - len(p):] = 1
            out = peft.generate(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE), max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                do_sample=False, pad_token_id=tokenizer.PAD_ID, eos_token_id=None)
            tokens += (out.shape[1] - L) * len(idx)
            for r, i in enumerate(idx):
                outputs[i] = out[r, L:].tolist()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu,
            "outputs": outputs}


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """How far two runs' greedy outputs agree: identical jobs, and the mean shared prefix over the length."""
    same = sum(x == y for x, y in zip(a, b))
    prefix = []
    for x, y in zip(a, b):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        prefix.append(n / max(1, len(x)))
    return {"identical_jobs": same / len(a), "mean_shared_prefix": sum(prefix) / len(prefix)}


def device_name() -> str:
    return f"cuda:{torch.cuda.get_device_name()}" if DEVICE == "cuda" else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer jobs and adapters (< 1 minute on 2 CPU cores)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--slots", type=int, default=64, help="device adapter slots")
    ap.add_argument("--max-running", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeat", type=int, default=0, help="runs per engine variant, best kept (default 2 quick, 3 full)")
    ap.add_argument("--cache", default="", help="model/adapter cache (default: a temp dir)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                    help="base model: the embedded tiny Llama, or TinyLlama-1.1B's layer shapes (seeded weights)")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of --shape tinyllama (22 in TinyLlama-1.1B)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                    help="weights and activations (default: bfloat16 on CUDA, float32 on CPU)")
    args = ap.parse_args()
    dtype = args.dtype or ("bfloat16" if DEVICE == "cuda" else "float32")
    torch.set_num_threads(args.threads)
    n_jobs = args.jobs or (96 if args.quick else 256)
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    ns = [1, 16, 64, 128] if args.quick else [1, 16, 64, 256]
    slots = args.slots
    cache = args.cache or tempfile.mkdtemp(prefix="engine-bench-")
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    t = time.perf_counter()
    path, model_id = build_model(args.shape, args.layers, cache)
    adapters = build_demo_adapters(path, max(ns), seed=0, out_dir=Path(cache) / "adapters", expected_model_id=model_id)
    log(f"# {'QUICK (fewer jobs, tokens and adapters than the full run): ' if args.quick else ''}{n_jobs} jobs x {max_tokens} tokens, adapters up to {max(ns)}, "
        f"{slots} device slots, max_running {args.max_running}, torch threads {args.threads}, device {device_name()} "
        f"{dtype}, model {args.shape}{'' if args.shape == 'tiny' else f' ({args.layers} layers)'} "
        f"(model and adapters built in {time.perf_counter() - t:.1f}s)")
    jp = prompts(n_jobs)
    eargs = (str(path), model_id, cache)
    rows: dict[str, dict] = {}

    def record(name, res):
        rows[name] = res
        log(f"{name:22s} {res['tokens_per_s']:9.1f} tok/s  {res['tokens_per_cpu_s']:9.1f} tok/cpu-s  "
            f"{res['tokens']:6d} tokens  {res['wall_s']:6.2f} s"
            + (f"  {res['steps']} steps" if "steps" in res else "")
            + (f"  adapter/base bytes {byte_ratio[name]:.2f}" if name in byte_ratio else ""))

    byte_ratio: dict[str, float] = {}
    repeat = args.repeat or (2 if args.quick else 3)
    variants = [("base", [None] * n_jobs), ("single", [0] * n_jobs)]
    for n in ns:
        for dist in ("uniform", "zipf") if n > 1 else ("uniform",):
            variants.append((f"mixed{n}-{dist}", assignment(n_jobs, n, dist)))
    if DEVICE == "cuda":
        # One untimed pass first: cuBLAS/SDPA pick kernels per shape on first use, and whichever variant ran
        # first would pay for every batch shape of the run (seen: "base" at half the speed of "single").
        run_engine(eargs, adapters, jp, [k % 16 for k in range(n_jobs)], max_tokens, slots, args.max_running, dtype)
    # Round-robin repeats, best kept: the shared machine's load drifts; each variant sees every phase of it.
    for rep in range(repeat):
        for name, which in variants:
            res = run_engine(eargs, adapters, jp, which, max_tokens, slots, args.max_running, dtype)
            print(f"  [run {rep + 1}/{repeat}] {name:20s} {res['tokens_per_s']:9.1f} tok/s  {res['wall_s']:6.2f} s  "
                  f"{res['steps']} steps", file=sys.stderr, flush=True)
            if name not in rows:
                rows[name] = res
            else:  # best wall and best CPU figure, each over the repeats
                best = rows[name]
                if res["tokens_per_s"] > best["tokens_per_s"]:
                    res["tokens_per_cpu_s"] = max(res["tokens_per_cpu_s"], best["tokens_per_cpu_s"])
                    rows[name] = res
                else:
                    best["tokens_per_cpu_s"] = max(res["tokens_per_cpu_s"], best["tokens_per_cpu_s"])
    byte_ratio.update({name: weight_bytes_per_step(path, adapters, which, args.max_running, dtype)["adapters_over_base"]
                       for name, which in variants})
    for name, _ in variants:
        record(name, rows[name])
    record("peft-64", run_peft(str(path), adapters, jp, assignment(n_jobs, 64, "uniform"), max_tokens, dtype))
    single = rows["single"]["tokens_per_s"]
    big = max(ns)
    out = {
        "quick": args.quick, "device": device_name(), "dtype": dtype, "model_shape": args.shape,
        "layers": args.layers if args.shape != "tiny" else 4, "jobs": n_jobs,
        "max_tokens": max_tokens, "slots": slots, "repeat": repeat, "max_running": args.max_running, "torch_threads": args.threads,
        "tokens_per_s_base": rows["base"]["tokens_per_s"],
        "tokens_per_s_single": single,
        **{f"tokens_per_s_{k.replace('-', '_')}": v["tokens_per_s"] for k, v in rows.items() if k.startswith("mixed")},
        "mixed64_over_single": rows["mixed64-uniform"]["tokens_per_s"] / single,
        "mixed64_zipf_over_single": rows["mixed64-zipf"]["tokens_per_s"] / single,
        f"mixed{big}_over_single": rows[f"mixed{big}-uniform"]["tokens_per_s"] / single,
        "mixed256_over_single": rows[f"mixed{big}-uniform"]["tokens_per_s"] / single,
        "mixed256_adapters": big,  # 128 under --quick
        "mixed256_zipf_over_single": rows[f"mixed{big}-zipf"]["tokens_per_s"] / single,
        "single_over_base": single / rows["base"]["tokens_per_s"],
        "tokens_per_s_peft64": rows["peft-64"]["tokens_per_s"],
        "speedup_vs_peft": rows["mixed64-uniform"]["tokens_per_s"] / rows["peft-64"]["tokens_per_s"],
        "fingerprint_bytes_per_32_tokens": rows["single"]["fingerprint_bytes_per_32_tokens"],
        # The same ratios over process CPU time: steadier than wall time on a shared, loaded machine.
        "cpu_mixed64_over_single": rows["mixed64-uniform"]["tokens_per_cpu_s"] / rows["single"]["tokens_per_cpu_s"],
        "cpu_mixed256_over_single": rows[f"mixed{big}-uniform"]["tokens_per_cpu_s"] / rows["single"]["tokens_per_cpu_s"],
        "cpu_speedup_vs_peft": rows["mixed64-uniform"]["tokens_per_cpu_s"] / rows["peft-64"]["tokens_per_cpu_s"],
        # Why the ratios differ between model shapes: weight bytes of one full decode step, adapters / base model.
        "adapter_bytes_over_base_single": byte_ratio["single"],
        "adapter_bytes_over_base_mixed64": byte_ratio["mixed64-uniform"],
        "mixed1_over_single_noise_check": rows["mixed1-uniform"]["tokens_per_s"] / single,  # same work: ~1.0
        "mixed1_equals_single_outputs": rows["mixed1-uniform"]["outputs"] == rows["single"]["outputs"],
        # Correctness beside speed: the engine's mixed-64 outputs against PEFT's for the same jobs (greedy). In
        # float32 they should be identical; in bf16 batch composition changes rounding, so some jobs diverge late.
        "mixed64_vs_peft": agreement(rows["mixed64-uniform"]["outputs"], rows["peft-64"]["outputs"]),
    }
    log(f"mixed-64 / single = {out['mixed64_over_single']:.2f}   mixed-{big} ({slots} slots) / single = "
        f"{out['mixed256_over_single']:.2f}   mixed-64 vs PEFT per-adapter batching = {out['speedup_vs_peft']:.2f}x   "
        f"fingerprint {out['fingerprint_bytes_per_32_tokens'] or 0:.0f} B / 32 tokens\n"
        f"over CPU time: mixed-64 / single = {out['cpu_mixed64_over_single']:.2f}   mixed-{big} / single = "
        f"{out['cpu_mixed256_over_single']:.2f}   vs PEFT = {out['cpu_speedup_vs_peft']:.2f}x   "
        f"(noise check, same work: mixed-1 / single = {out['mixed1_over_single_noise_check']:.2f})\n"
        f"weight bytes of a full decode step, adapters / base model: single {out['adapter_bytes_over_base_single']:.2f}, "
        f"mixed-64 {out['adapter_bytes_over_base_mixed64']:.2f}\n"
        f"mixed-64 outputs vs PEFT's: {out['mixed64_vs_peft']['identical_jobs']:.0%} of jobs identical, "
        f"mean shared prefix {out['mixed64_vs_peft']['mean_shared_prefix']:.0%}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
