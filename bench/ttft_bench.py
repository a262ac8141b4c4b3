"""Time to first token through the gateway: tokens as the node generates them against verified-only.

A devnet (every service its own process, one inference node, one verifier, the demo adapters) serves
SmolLM2-135M-Instruct (default); its gateway answers OpenAI chat requests with `stream: true`. The same
chat turns go through twice, one request at a time, as:

  provisional     tokens from the node as it generates them (jobs.tokens.<client>.<job>), marked provisional
  verified_only   today's behaviour: the text once the verifier accepted it and settlement paid it on chain

Measured at the HTTP client: time to first token (the first content chunk), and time to the verified end
(the last chunk, carrying the verdict and receipt). ttft_ratio = verified_only TTFT / provisional TTFT.

    python bench/ttft_bench.py --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from loranet.model.catalog import resolve_model  # noqa: E402
from loranet_ops import devnet as dn  # noqa: E402
from loranet_ops.demo import TRAINED  # noqa: E402
from loranet_ops.servers import free_port  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Explain what a LoRA adapter is in one sentence.",
    "Why is the sky blue?",
    "Give me a tip for writing clear code.",
    "What is the boiling point of water at sea level?",
    "Write a haiku about networks.",
    "What does a verifier do?",
]


async def one(session, url: str, key: str, model: str, question: str, max_tokens: int, verified_only: bool) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "verified_only": verified_only,
    }
    t0 = time.perf_counter()
    first = end = None
    status = ""
    provisional = 0
    text = ""
    async with session.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        r.raise_for_status()
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            ext = chunk.get("loranet") or {}
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
            if delta.get("content") and first is None:
                first = time.perf_counter() - t0
            text += delta.get("content") or ""
            provisional += bool(ext.get("provisional"))
            if ext.get("verified"):
                end = time.perf_counter() - t0
                status = ext["status"]
    return {"ttft_s": first, "end_s": end, "provisional_chunks": provisional, "status": status, "text": text}


async def run(url: str, key: str, model: str, n: int, max_tokens: int) -> dict:
    out: dict[str, list[dict]] = {"provisional": [], "verified_only": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await one(session, url, key, model, "Hello", 4, False)  # warm-up: adapter load, first touch
        for i in range(n):
            q = QUESTIONS[i % len(QUESTIONS)]
            for mode in ("provisional", "verified_only"):  # interleaved: the same load for both
                out[mode].append(await one(session, url, key, model, q, max_tokens, mode == "verified_only"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 chat turns of at most 48 tokens each way")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--requests", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    n = args.requests or (6 if args.quick else 24)
    max_tokens = args.max_tokens or (48 if args.quick else 128)
    model = resolve_model(args.model)
    root = Path(tempfile.mkdtemp(prefix="ttftbench-"))
    config = dn.DevnetConfig.scratch(
        root,
        demo_adapters=len(TRAINED),
        model=model.name,
        epoch_max_s=0.5,
        gateway_port=free_port(),
    )
    t = time.perf_counter()
    dn.start_detached(config, timeout=600)
    log(
        f"# devnet up in {time.perf_counter() - t:.0f}s; model {model.name}, {n} chat turns each way, "
        f"at most {max_tokens} tokens, one request at a time"
    )
    try:
        key = dn.gateway_key(Path(config.state_dir))
        url = f"http://127.0.0.1:{config.gateway_port}/v1"
        chat_model = f"{model.name}:{TRAINED[0]}" if TRAINED else model.name
        res = asyncio.run(run(url, key, chat_model, n, max_tokens))
    finally:
        dn.stop(config.state_dir)
    summary = {}
    for mode, rows in res.items():
        summary[mode] = {
            "ttft_p50_s": statistics.median(r["ttft_s"] for r in rows),
            "ttft_max_s": max(r["ttft_s"] for r in rows),
            "end_p50_s": statistics.median(r["end_s"] for r in rows),
            "provisional_chunks_mean": statistics.mean(r["provisional_chunks"] for r in rows),
            "settled": sum(r["status"] == "settled" for r in rows),
        }
        s = summary[mode]
        log(
            f"{mode:14} TTFT p50 {s['ttft_p50_s']:.3f}s (max {s['ttft_max_s']:.3f}s)   verified end p50 "
            f"{s['end_p50_s']:.3f}s   provisional chunks/answer {s['provisional_chunks_mean']:.1f}   "
            f"settled {s['settled']}/{n}"
        )
    same = sum(a["text"] == b["text"] for a, b in zip(res["provisional"], res["verified_only"]))
    out = {
        "quick": args.quick,
        "model": chat_model,
        "requests": n,
        "max_tokens": max_tokens,
        "provisional_ttft_p50_s": summary["provisional"]["ttft_p50_s"],
        "verified_only_ttft_p50_s": summary["verified_only"]["ttft_p50_s"],
        "ttft_ratio": summary["verified_only"]["ttft_p50_s"] / summary["provisional"]["ttft_p50_s"],
        "provisional_end_p50_s": summary["provisional"]["end_p50_s"],
        "verified_only_end_p50_s": summary["verified_only"]["end_p50_s"],
        "end_ratio": summary["verified_only"]["end_p50_s"] / summary["provisional"]["end_p50_s"],
        "same_text": same,
        "settled": summary["provisional"]["settled"] + summary["verified_only"]["settled"],
        "modes": summary,
    }
    log(
        f"verified_only / provisional: TTFT {out['ttft_ratio']:.1f}x, verified end {out['end_ratio']:.2f}x; "
        f"same text in {same}/{n} pairs (greedy)"
    )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
