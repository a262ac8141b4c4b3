"""Network benchmark: verified and settled tokens/s through a devnet against the same engine alone.

Both sides serve SmolLM2-135M-Instruct (default) with the four trained demo adapters, on this machine, and
run the same jobs: the chat mix of bench/engine_bench.py (user turns of log-uniform 16-256 tokens through
the chat template, outputs stopping at end of turn, at most --max-tokens), spread over the base model and
the adapters.

  engine alone   one in-process Engine (the node's settings), every job submitted at once
  network        a devnet (nats-server, redis-server, chain, datastore, settlement, scheduler, one inference
                 node, one verifier: each its own process), jobs signed and published by a client; a job
                 counts when its receipt says settled (verified by the verifier's audit, paid on chain)

network_over_engine = network tokens/s / engine tokens/s: the price of admission, routing, verification and
settlement. On a 2-core machine the verifier's audits share the cores with the node, so this price
includes their compute. Latency is per job, from publish to the settled receipt; nodes return whole
results (no token streaming), so a client's first token arrives with its last: time to first token is
reported inside the engine (submit to first sampled token) and at the client (= job latency).

    python bench/network_bench.py --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_bench as eb  # noqa: E402

from loranet.client import Client  # noqa: E402
from loranet.model.adapters import adapter_to_blobs  # noqa: E402
from loranet.model.catalog import resolve_model  # noqa: E402
from loranet.model.content import adapter_content_id  # noqa: E402
from loranet.model.tokenizers import load_tokenizer  # noqa: E402
from loranet.sampling import GREEDY  # noqa: E402
from loranet.signing import Identity  # noqa: E402
from loranet_ops import devnet as dn  # noqa: E402
from loranet_ops.demo import TRAINED, TRAINED_DIR  # noqa: E402
from services.inference.engine import Engine, EngineConfig, GenRequest  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def plan(n_jobs: int, quick: bool, max_tokens: int, model_path: Path):
    """[(adapter name or "", user text, prompt ids, max_tokens)] over the base and the demo adapters."""
    tok = load_tokenizer(model_path)
    prompts, _, desc, texts = eb.workload(tok, n_jobs, quick)
    names = ["", *TRAINED]
    return [(names[i % len(names)], texts[i], ids, max_tokens) for i, ids in enumerate(prompts)], desc


def run_engine_alone(model, jobs) -> dict:
    engine = Engine(
        str(model.path), model.model_id, "cpu", tempfile.mkdtemp(prefix="netbench-engine-"), config=EngineConfig()
    )
    ids = {name: adapter_content_id(TRAINED_DIR / name) for name in TRAINED}
    for name, aid in ids.items():
        engine.install_adapter(aid, *adapter_to_blobs(TRAINED_DIR / name))
    engine.submit(GenRequest("warm", jobs[0][2], "", 4, GREEDY, 0))
    engine.run_until_idle()
    t0 = time.perf_counter()
    futs = [engine.submit(GenRequest(f"j{i}", p, ids.get(a, ""), n, GREEDY, 0)) for i, (a, _, p, n) in enumerate(jobs)]
    engine.run_until_idle()
    wall = time.perf_counter() - t0
    gens = [f.result(0) for f in futs]
    firsts, done = [g.first_token_s for g in gens], [g.latency_s for g in gens]
    tokens = sum(len(g.output_tokens) for g in gens)
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_s": pct(firsts, 0.5),
        "ttft_p95_s": pct(firsts, 0.95),
        "latency_p50_s": pct(done, 0.5),
        "latency_p95_s": pct(done, 0.95),
        "outputs": [g.output_tokens for g in gens],
    }


async def run_network(config: dn.DevnetConfig, model, jobs) -> dict:
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        await client.faucet(10**21, 10**20)
        base = await client.model(model.name)
        # Warm-up: one job per adapter (slot loads, first-touch), not timed.
        warm = [await client.submit(a, "Hello", 4, model=base.model_id, chat=True) for a in ["", *TRAINED]]
        await asyncio.gather(*(client.wait(j, 600) for j in warm))
        t0 = time.perf_counter()
        sent: list[tuple[str, float]] = []
        for adapter, text, _, n in jobs:
            # Rendered by the client through the model's template (its registry record): the same ids.
            job_id = await client.submit(adapter, text, n, model=base.model_id, chat=True)
            sent.append((job_id, time.perf_counter()))
        ends: dict[str, float] = {}

        async def wait(job_id: str):
            out = await client.wait(job_id, 1800)
            ends[job_id] = time.perf_counter()
            return out

        outcomes = await asyncio.gather(*(wait(j) for j, _ in sent))
        wall = time.perf_counter() - t0
        settled = [o for o in outcomes if o.status == "settled"]
        tokens = 0
        outputs = []
        for (job_id, _), o in zip(sent, outcomes):
            rec = await client.job(job_id)
            n = len(rec.result.output_tokens) if rec.result else 0
            outputs.append(list(rec.result.output_tokens) if rec.result else [])
            if o.status == "settled":
                tokens += n
        lat = [ends[j] - s for j, s in sent]
        return {
            "tokens": tokens,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "jobs": len(jobs),
            "settled": len(settled),
            "audited": sum(bool(o.verdict.get("audited")) for o in settled),
            "latency_p50_s": pct(lat, 0.5),
            "latency_p95_s": pct(lat, 0.95),
            "outputs": outputs,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="32 jobs of at most 32 tokens")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    n_jobs = args.jobs or (32 if args.quick else 128)
    max_tokens = args.max_tokens or (32 if args.quick else 96)
    model = resolve_model(args.model)
    jobs, desc = plan(n_jobs, args.quick, max_tokens, model.path)
    log(
        f"# model {model.name}, {n_jobs} jobs over the base model and {len(TRAINED)} adapters; {desc}; "
        f"outputs stop at end of turn, at most {max_tokens} tokens"
    )
    engine = run_engine_alone(model, jobs)
    log(
        f"engine alone   {engine['tokens_per_s']:7.1f} tok/s  {engine['tokens']} tokens in {engine['wall_s']:.1f}s  "
        f"TTFT p50/p95 {engine['ttft_p50_s']:.2f}/{engine['ttft_p95_s']:.2f}s  "
        f"latency p50/p95 {engine['latency_p50_s']:.2f}/{engine['latency_p95_s']:.2f}s"
    )
    root = Path(tempfile.mkdtemp(prefix="netbench-"))
    config = dn.DevnetConfig.scratch(
        root,
        demo_adapters=len(TRAINED),
        model=model.name,
        epoch_max_s=0.5,
    )
    t = time.perf_counter()
    dn.start_detached(config, timeout=600)
    log(f"devnet up in {time.perf_counter() - t:.0f}s")
    try:
        net = asyncio.run(run_network(config, model, jobs))
        st = dn.status(config.state_dir)
        rss = {name: rss_mb(info["pid"]) for name, info in st.get("services", {}).items()}
    finally:
        dn.stop(config.state_dir)
    same = sum(a == b for a, b in zip(engine["outputs"], net["outputs"])) / len(jobs)
    out = {
        "quick": args.quick,
        "model": model.name,
        "workload": desc,
        "jobs": n_jobs,
        "max_tokens": max_tokens,
        "engine_tokens_per_s": engine["tokens_per_s"],
        "network_tokens_per_s": net["tokens_per_s"],
        "network_over_engine": net["tokens_per_s"] / engine["tokens_per_s"],
        "settled": net["settled"],
        "audited": net["audited"],
        "engine_ttft_p50_s": engine["ttft_p50_s"],
        "engine_ttft_p95_s": engine["ttft_p95_s"],
        "engine_latency_p50_s": engine["latency_p50_s"],
        "engine_latency_p95_s": engine["latency_p95_s"],
        "network_ttft_p50_s": net["latency_p50_s"],
        "network_ttft_p95_s": net["latency_p95_s"],
        "network_latency_p50_s": net["latency_p50_s"],
        "network_latency_p95_s": net["latency_p95_s"],
        "rss_mb_node": rss.get("node-0"),
        "rss_mb_verifier": rss.get("verifier-0"),
        "rss_mb": rss,
        "network_outputs_equal_engine": same,
        "targets": {"network_over_engine_ge": 0.8},
    }
    log(
        f"network        {net['tokens_per_s']:7.1f} tok/s  {net['tokens']} tokens in {net['wall_s']:.1f}s  "
        f"{net['settled']}/{n_jobs} settled ({net['audited']} audited)  latency p50/p95 "
        f"{net['latency_p50_s']:.2f}/{net['latency_p95_s']:.2f}s (= time to first token: whole results)\n"
        f"network / engine = {out['network_over_engine']:.2f}   resident memory: node {out['rss_mb_node']:.0f} MB, "
        f"verifier {out['rss_mb_verifier']:.0f} MB   outputs identical to the engine's: {same:.0%}"
    )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
