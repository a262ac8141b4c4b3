"""Inference engine benchmark: continuous batching over many LoRA adapters vs HF and PEFT, side by side in one run.

Base model: SmolLM2-135M-Instruct by default (`--shape smollm2`: the real model, its tokenizer and chat
template); `--shape tiny` is the seeded 4-layer test model, `--shape tinyllama` TinyLlama-1.1B's layer
shapes with seeded weights. Adapters: demo adapters built from seeds (ranks 4/8/16, mixed targets).

Workload (stated in the output): a chat trace drawn from a seeded distribution. Each job is one user turn
through the model's chat template whose text is cut from the datanets' sentences to a drawn prompt length
(log-uniform 16-512 tokens; 16-256 with --quick), and a drawn output length (log-uniform 8-256 tokens;
8-64 with --quick). Equal lengths (64-token prompts, --max-tokens outputs) are reported beside it.

Variants (each a fresh engine run over the same jobs):
  hf-generate       base model, HF `generate` on all prompts as ONE left-padded batch, stopping at end of
                    turn (what a Python user has without a server); the engine runs the same jobs the same way
                    (engine_over_hf_generate: useful tokens / s, both); and the same at equal lengths
  single            every job on adapter 0, exactly its drawn output length (EOS ignored: the same work in
                    every adapter variant)
  mixed-N-uniform   jobs spread round-robin over N adapters, N in {1, 64, 256}; mixed-64-zipf: Zipf(1.0)
                    popularity. N=256 runs over `--slots` (64) device slots: eviction under load
  peft-64           PEFT + HF generate, one left-padded batch per adapter (per-adapter batching)

Throughput = useful generated tokens / wall time (prefill included), fingerprints included for the engine.

    python bench/engine_bench.py --quick        # the real model, a few minutes on 2 CPU cores
    python bench/engine_bench.py --json         # one JSON object on stdout, last
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

from loranet.model import build_demo_adapters  # noqa: E402
from loranet.model.adapters import adapter_to_blobs  # noqa: E402
from loranet.model.catalog import resolve_model  # noqa: E402
from loranet.model.tokenizers import Tokenizer, load_tokenizer  # noqa: E402
from loranet.sampling import GREEDY  # noqa: E402
from services.inference.engine import Engine, EngineConfig, GenRequest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Base models the bench can use: a catalog name, or Llama shapes built with seeded weights (byte vocabulary).
SHAPES = {
    "smollm2": "smollm2-135m-instruct",
    "tiny": "loranet-tiny-llama",
    # TinyLlama-1.1B's layer shapes; --layers picks how many (22 in the real model).
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4),
}


def build_model(shape: str, layers: int, cache: str) -> tuple[Path, str]:
    if isinstance(SHAPES[shape], str):
        m = resolve_model(SHAPES[shape], None if shape == "smollm2" else cache)  # SmolLM2: the shared conversion
        return m.path, m.model_id
    from loranet.model.checkpoint import TinyLlamaSpec, build_base_checkpoint

    spec = TinyLlamaSpec(num_hidden_layers=layers, **SHAPES[shape])
    path = Path(cache) / "models" / f"{shape}-{layers}l"
    return path, build_base_checkpoint(path, seed=0, spec=spec)


def _sentences() -> list[str]:
    out = []
    for f in sorted((ROOT / "datasets").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            out.extend(m["content"] for m in json.loads(line)["messages"])
    return out


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def user_text(tok: Tokenizer, rng: random.Random, n_tokens: int, sentences: list[str]) -> str:
    """A user turn of about `n_tokens` tokens (text drawn from the datanets)."""
    words: list[str] = []
    while len(tok.encode(" ".join(words))) < n_tokens:
        words.extend(rng.choice(sentences).split())
    while len(words) > 1 and len(tok.encode(" ".join(words))) > n_tokens:
        words.pop()
    return " ".join(words)


def chat_ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]))


def workload(
    tok: Tokenizer, n_jobs: int, quick: bool, seed: int = 0
) -> tuple[list[list[int]], list[int], str, list[str]]:
    """(prompt ids, output lengths, description, user texts) of the chat-trace mix."""
    rng = random.Random(seed)
    sentences = _sentences()
    p_hi, o_hi = (256, 64) if quick else (512, 256)
    lengths = [(_log_uniform(rng, 16, p_hi), _log_uniform(rng, 8, o_hi)) for _ in range(n_jobs)]
    texts = [user_text(tok, rng, p, sentences) for p, _ in lengths]
    prompts = [chat_ids(tok, t) for t in texts]
    outs = [o for _, o in lengths]
    desc = (
        f"chat mix: {n_jobs} jobs, user turns of log-uniform 16-{p_hi} tokens through the chat template "
        f"(mean {sum(map(len, prompts)) / n_jobs:.0f} tokens with the template), outputs log-uniform 8-{o_hi} "
        f"(mean {sum(outs) / n_jobs:.0f})"
    )
    return prompts, outs, desc, texts


def equal_workload(tok: Tokenizer, n_jobs: int, max_tokens: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    sentences = _sentences()
    return [chat_ids(tok, user_text(tok, rng, 48, sentences)) for _ in range(n_jobs)]


def assignment(n_jobs: int, n_adapters: int, dist: str, seed: int = 0) -> list[int]:
    if dist == "uniform":
        return [i % n_adapters for i in range(n_jobs)]
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) for k in range(n_adapters)]
    return rng.choices(range(n_adapters), weights=weights, k=n_jobs)


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


def run_engine(
    engine_args,
    adapters,
    jobs_prompts,
    which: list[int | None],
    max_tokens: list[int],
    slots: int,
    max_running: int,
    dtype: str,
    eos: bool = False,
) -> dict:
    """which[i] = adapter index of job i, or None for the base model; max_tokens[i] its output length
    (exact unless `eos`: then the job also stops at end of turn)."""
    path, model_id, cache = engine_args
    engine = Engine(
        path,
        model_id,
        DEVICE,
        cache,
        config=EngineConfig(
            adapter_slots=slots,
            max_running=max_running,
            host_adapters=max(len(adapters), 1),
            dtype=dtype,
            kv_blocks=max_running * (1024 // 16),
        ),
    )
    for k in sorted({w for w in which if w is not None}):
        engine.install_adapter(adapters[k][2], *adapter_to_blobs(adapters[k][1]))
    # Warm up (allocator, first-touch) on a couple of jobs, not timed.
    for i in range(2):
        engine.submit(
            GenRequest(f"w{i}", jobs_prompts[i], "" if which[i] is None else adapters[which[i]][2], 4, GREEDY, 0)
        )
    engine.run_until_idle()
    reqs = [
        GenRequest(f"j{i}", p, "" if w is None else adapters[w][2], n, GREEDY, 0, ignore_eos=not eos)
        for i, (p, w, n) in enumerate(zip(jobs_prompts, which, max_tokens))
    ]
    t0, c0 = time.perf_counter(), time.process_time()
    futs = [engine.submit(r) for r in reqs]
    engine.run_until_idle()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gens = [f.result(0) for f in futs]
    tokens = sum(len(g.output_tokens) for g in gens)
    full = [len(c) for g in gens for c in g.chunks[1 : 1 + len(g.output_tokens) // 32]]
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "tokens_per_cpu_s": tokens / cpu,
        "steps": engine.steps,
        "fingerprint_bytes_per_32_tokens": sum(full) / len(full) if full else None,
        "outputs": [g.output_tokens for g in gens],
    }


def _padded(jobs_prompts: list[list[int]], idx: list[int], pad: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    width = max(len(jobs_prompts[i]) for i in idx)
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        p = jobs_prompts[i]
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    return ids.to(DEVICE), mask.to(DEVICE), width


def _useful(row: list[int], limit: int, stops: frozenset[int] | None) -> list[int]:
    """A generated row as a job would return it: at most `limit` tokens, ending at the first stop id."""
    row = row[:limit]
    if stops:
        for j, t in enumerate(row):
            if t in stops:
                return row[: j + 1]
    return row


def run_hf(model, groups: dict, jobs_prompts, max_tokens: list[int], tok: Tokenizer, eos: bool, select=None) -> dict:
    """HF generate, one left-padded batch per group (`select(key)` switches the adapter first)."""
    outputs: list[list[int]] = [[] for _ in jobs_prompts]
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for key, idx in groups.items():
            if select:
                select(key)
            ids, mask, width = _padded(jobs_prompts, idx, tok.pad_token_id)
            longest = max(max_tokens[i] for i in idx)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=None if eos else longest,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(tok.stop_ids) if eos else None,
            )
            for r, i in enumerate(idx):
                outputs[i] = _useful(out[r, width:].tolist(), max_tokens[i], tok.stop_ids if eos else None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(len(o) for o in outputs)  # useful tokens: what the jobs asked for, not the padding's
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "tokens_per_cpu_s": tokens / cpu,
        "outputs": outputs,
    }


def load_hf(base_path: str, dtype: str):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(base_path, dtype=DTYPES[dtype], local_files_only=True).to(DEVICE).eval()


def run_hf_generate(base_path: str, jobs_prompts, max_tokens: list[int], tok: Tokenizer, dtype: str, eos: bool) -> dict:
    """The base model through HF generate: every prompt in ONE left-padded batch."""
    return run_hf(load_hf(base_path, dtype), {0: list(range(len(jobs_prompts)))}, jobs_prompts, max_tokens, tok, eos)


def run_peft(
    base_path: str, adapters, jobs_prompts, which: list[int], max_tokens: list[int], tok: Tokenizer, dtype: str
) -> dict:
    """PEFT + HF generate, one left-padded batch per adapter."""
    from peft import PeftModel

    model = load_hf(base_path, dtype)
    used = sorted(set(which))
    peft = PeftModel.from_pretrained(model, str(adapters[used[0]][1]), adapter_name=f"a{used[0]}", is_trainable=False)
    for k in used[1:]:
        peft.load_adapter(str(adapters[k][1]), adapter_name=f"a{k}", is_trainable=False)
    peft.eval()
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(which):
        groups.setdefault(k, []).append(i)
    return run_hf(peft, groups, jobs_prompts, max_tokens, tok, False, select=lambda k: peft.set_adapter(f"a{k}"))


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
    ap.add_argument("--quick", action="store_true", help="fewer and shorter jobs, fewer adapters")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--jobs", type=int, default=0, help="jobs in the chat mix (default 64 quick, 256 full)")
    ap.add_argument("--max-tokens", type=int, default=0, help="output tokens of the equal-length workload")
    ap.add_argument("--slots", type=int, default=64, help="device adapter slots")
    ap.add_argument("--max-running", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine variant, best kept")
    ap.add_argument("--cache", default="", help="adapter cache (default: a temp dir)")
    ap.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="smollm2",
        help="base model: SmolLM2-135M-Instruct, the seeded tiny test Llama, or TinyLlama-1.1B's "
        "layer shapes (seeded weights)",
    )
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of --shape tinyllama (22 in TinyLlama-1.1B)")
    ap.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="weights and activations (default: bfloat16 on CUDA, float32 on CPU)",
    )
    args = ap.parse_args()
    dtype = args.dtype or ("bfloat16" if DEVICE == "cuda" else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    n_jobs = args.jobs or (64 if args.quick else 256)
    eq_tokens = args.max_tokens or (32 if args.quick else 64)
    big = 128 if args.quick else 256
    slots = args.slots
    cache = args.cache or tempfile.mkdtemp(prefix="engine-bench-")
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    t = time.perf_counter()
    path, model_id = build_model(args.shape, args.layers, cache)
    tok = load_tokenizer(path)
    adapters = build_demo_adapters(path, big, seed=0, out_dir=Path(cache) / "adapters", expected_model_id=model_id)
    prompts, lengths, desc, _ = workload(tok, n_jobs, args.quick)
    eq_prompts = equal_workload(tok, min(n_jobs, 32), eq_tokens)
    log(
        f"# {'QUICK: ' if args.quick else ''}model "
        f"{args.shape}{f' ({args.layers} layers)' if args.shape == 'tinyllama' else ''}, "
        f"vocab {tok.vocab_size}, device {device_name()} {dtype}, torch threads {torch.get_num_threads()}, "
        f"{slots} adapter slots, max_running {args.max_running}; built in {time.perf_counter() - t:.0f}s\n"
        f"# workload: {desc}; equal lengths: {len(eq_prompts)} jobs, 48-token user turns, {eq_tokens} output tokens"
    )
    eargs = (str(path), model_id, cache)
    rows: dict[str, dict] = {}
    byte_ratio: dict[str, float] = {}

    def record(name, res):
        rows[name] = res
        log(
            f"{name:24s} {res['tokens_per_s']:8.1f} tok/s  {res['tokens_per_cpu_s']:8.1f} tok/cpu-s  "
            f"{res['tokens']:6d} tokens  {res['wall_s']:7.2f} s"
            + (f"  {res['steps']} steps" if "steps" in res else "")
            + (f"  adapter/base bytes {byte_ratio[name]:.2f}" if name in byte_ratio else "")
        )

    def best_of(name, fn):
        best = None
        for _ in range(args.repeat):
            res = fn()
            if best is None or res["tokens_per_s"] > best["tokens_per_s"]:
                best = res
        record(name, best)

    caps = [max(lengths)] * n_jobs  # stop at end of turn, at most the trace's longest output
    eq = [eq_tokens] * len(eq_prompts)
    best_of(
        "engine-base-eos",
        lambda: run_engine(eargs, adapters, prompts, [None] * n_jobs, caps, slots, args.max_running, dtype, eos=True),
    )
    record("hf-generate-eos", run_hf_generate(str(path), prompts, caps, tok, dtype, eos=True))
    best_of(
        "engine-base-equal",
        lambda: run_engine(eargs, adapters, eq_prompts, [None] * len(eq), eq, slots, args.max_running, dtype),
    )
    record("hf-generate-equal", run_hf_generate(str(path), eq_prompts, eq, tok, dtype, eos=False))
    variants = [
        ("single", [0] * n_jobs),
        ("mixed1-uniform", assignment(n_jobs, 1, "uniform")),
        ("mixed64-uniform", assignment(n_jobs, 64, "uniform")),
        ("mixed64-zipf", assignment(n_jobs, 64, "zipf")),
        (f"mixed{big}-uniform", assignment(n_jobs, big, "uniform")),
    ]
    byte_ratio.update(
        {
            name: weight_bytes_per_step(path, adapters, which, args.max_running, dtype)["adapters_over_base"]
            for name, which in variants
        }
    )
    for name, which in variants:
        best_of(
            name,
            lambda which=which: run_engine(eargs, adapters, prompts, which, lengths, slots, args.max_running, dtype),
        )
    record("peft-64", run_peft(str(path), adapters, prompts, assignment(n_jobs, 64, "uniform"), lengths, tok, dtype))
    single = rows["single"]["tokens_per_s"]
    out = {
        "quick": args.quick,
        "device": device_name(),
        "dtype": dtype,
        "model_shape": args.shape,
        "vocab_size": tok.vocab_size,
        "workload": desc,
        "jobs": n_jobs,
        "slots": slots,
        "repeat": args.repeat,
        "max_running": args.max_running,
        "torch_threads": torch.get_num_threads(),
        **{f"tokens_per_s_{k.replace('-', '_')}": v["tokens_per_s"] for k, v in rows.items()},
        "engine_over_hf_generate": rows["engine-base-eos"]["tokens_per_s"] / rows["hf-generate-eos"]["tokens_per_s"],
        "engine_over_hf_generate_equal_lengths": rows["engine-base-equal"]["tokens_per_s"]
        / rows["hf-generate-equal"]["tokens_per_s"],
        "mixed64_over_single": rows["mixed64-uniform"]["tokens_per_s"] / single,
        "mixed64_zipf_over_single": rows["mixed64-zipf"]["tokens_per_s"] / single,
        "mixed256_over_single": rows[f"mixed{big}-uniform"]["tokens_per_s"] / single,
        "mixed256_adapters": big,  # 128 under --quick
        "speedup_vs_peft": rows["mixed64-uniform"]["tokens_per_s"] / rows["peft-64"]["tokens_per_s"],
        "fingerprint_bytes_per_32_tokens": rows["single"]["fingerprint_bytes_per_32_tokens"],
        "cpu_mixed64_over_single": rows["mixed64-uniform"]["tokens_per_cpu_s"] / rows["single"]["tokens_per_cpu_s"],
        "cpu_speedup_vs_peft": rows["mixed64-uniform"]["tokens_per_cpu_s"] / rows["peft-64"]["tokens_per_cpu_s"],
        "adapter_bytes_over_base_single": byte_ratio["single"],
        "adapter_bytes_over_base_mixed64": byte_ratio["mixed64-uniform"],
        "mixed1_over_single_noise_check": rows["mixed1-uniform"]["tokens_per_s"] / single,  # same work: ~1.0
        "mixed1_equals_single_outputs": rows["mixed1-uniform"]["outputs"] == rows["single"]["outputs"],
        # Correctness beside speed (greedy, float32: identical expected; bf16 rounding may diverge late).
        "engine_vs_hf_generate": agreement(rows["engine-base-eos"]["outputs"], rows["hf-generate-eos"]["outputs"]),
        "mixed64_vs_peft": agreement(rows["mixed64-uniform"]["outputs"], rows["peft-64"]["outputs"]),
        "targets": {
            "engine_over_hf_generate_ge": 1.3,
            "mixed64_over_single_ge": 0.9,
            "mixed256_over_single_ge": 0.8,
            "speedup_vs_peft_ge": 3.0,
        },
    }
    log(
        f"engine / HF generate (one padded batch, chat mix, stop at end of turn) = {out['engine_over_hf_generate']:.2f}"
        f"   at equal lengths = {out['engine_over_hf_generate_equal_lengths']:.2f}\n"
        f"mixed-64 / single = {out['mixed64_over_single']:.2f}   mixed-{big} ({slots} slots) / single = "
        f"{out['mixed256_over_single']:.2f}   mixed-64 vs PEFT per-adapter batching = {out['speedup_vs_peft']:.2f}x   "
        f"fingerprint {out['fingerprint_bytes_per_32_tokens'] or 0:.0f} B / 32 tokens\n"
        f"noise check, same work: mixed-1 / single = {out['mixed1_over_single_noise_check']:.2f}; "
        f"weight bytes of a decode step, adapters / base: single {out['adapter_bytes_over_base_single']:.2f}, "
        f"mixed-64 {out['adapter_bytes_over_base_mixed64']:.2f}\n"
        f"outputs: engine vs HF generate {out['engine_vs_hf_generate']['identical_jobs']:.0%} of jobs identical; "
        f"mixed-64 vs PEFT {out['mixed64_vs_peft']['identical_jobs']:.0%} "
        f"(mean shared prefix {out['mixed64_vs_peft']['mean_shared_prefix']:.0%})"
    )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
