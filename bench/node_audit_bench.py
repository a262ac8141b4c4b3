"""Per-node statistical audits: can a node's running statistics separate honest nodes from cheaper ones that
per-job checks let through?  (Issue 18, item 2: measured here; not yet wired into the verifier.)

On the seeded tiny model (the test suite's) or, with `--model smollm2`, the real model
(SmolLM2-135M-Instruct), one run, side by side:

  honest nodes     `--honest` differently configured honest nodes (torch threads 1/2, eager or SDPA
                   attention, each its own prompts), greedy, each committing its own fingerprint
  fp16 node        generates and fingerprints with its weights rounded to float16 (serves a cheaper
                   precision than declared; its tokens rarely differ)
  int8 / int4      generates with weights rounded to int8 (per row) / int4 (groups of 32), then "proves"
                   its tokens with ONE honest prefill (the fingerprint is the honest model's over its tokens)

Every job of every node is audited by the verifier's own checks (services/verifier/domain.py:
fingerprint_check, replay_check). Two running statistics per node, over every audited chunk and token:

  S_fp   the mean, over its chunks, of the fingerprint's mean excess error (beyond half a quantisation
         step, relative to the chunk's largest value): honest nodes sit at or near 0
  S_tie  the count of its tokens that are not the verifier's greedy choice (margin < 0), near ties
         included: honest nodes show none

A node is flagged when S_fp over at least 4 chunks exceeds FP_FLAG (20 x the worst honest chunk, at least
1e-6), or when S_tie reaches TIE_FLAG (the count an honest node would reach in 10,000 tokens with
probability below 1e-6 at the honest rate's 95% upper bound, from the honest tokens measured here).
Reported: honest_false_flags, and for each cheat the tokens it generated before it was flagged
(flag_tokens_*), the share of its jobs per-job checks rejected, and the honest figures the thresholds
came from. Honest false-flag rates below what `--honest` nodes x their tokens can show are not claimed.

    python bench/node_audit_bench.py --quick --json
    python bench/node_audit_bench.py --quick --json --model smollm2    # calibrated on the real model
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from loranet import protocol as p  # noqa: E402
from loranet.fingerprint import fingerprint_chunks  # noqa: E402
from loranet.model import ensure_tiny_model  # noqa: E402
from loranet.model.generate import ReferenceModel  # noqa: E402
from loranet.signing import Identity, sign  # noqa: E402
from services.inference.domain import build_result  # noqa: E402
from services.verifier import domain  # noqa: E402

PROMPTS = [
    "The quick brown fox",
    "Once upon a time",
    "def add(a, b):",
    "LoRA adapters let one base model",
    "Hello",
    "1, 2, 3, 4,",
    "A verifier re-executes",
    "In the beginning",
    "Numbers: 7 11 13",
    "The network pays",
    "Tokens arrive",
    "Q: what is 2+2? A:",
]
CLIENT = Identity.from_seed(b"b" * 32)
NODE = Identity.from_seed(b"d" * 32)
MIN_FP_CHUNKS = 4
WINDOW_TOKENS = 10_000
ALPHA = 1e-6


def quantize(model: ReferenceModel, kind: str) -> ReferenceModel:
    """A copy whose Linear weights are rounded as a cheaper node would serve them."""
    cheap = copy.deepcopy(model)
    with torch.no_grad():
        for module in cheap.base.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            w = module.weight.data
            if kind == "fp16":
                module.weight.data = w.half().float()
            elif kind == "int8":
                s = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
                module.weight.data = torch.round(w / s).clamp(-127, 127) * s
            elif kind == "int4":
                rows, cols = w.shape
                g = w.reshape(rows, cols // 32, 32)
                s = g.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / 7
                module.weight.data = (torch.round(g / s).clamp(-8, 7) * s).reshape(rows, cols)
    return cheap


def job(model_id: str, prompt: str, max_tokens: int) -> p.JobRequest:
    now = time.time()
    req = p.JobRequest(
        job_id=p.new_job_id(),
        client_key=CLIENT.public,
        client_address="0x" + "2" * 40,
        model_id=model_id,
        adapter_id="",
        prompt=prompt,
        max_tokens=max_tokens,
        max_fee=10**18,
        created_at=now,
        expires_at=now + 600,
    )
    return sign(req, CLIENT)


class NodeStats:
    def __init__(self) -> None:
        self.chunks = 0
        self.fp_sum = 0.0
        self.ties = 0
        self.tokens = 0
        self.jobs = 0
        self.rejected = 0
        self.flagged_at: int | None = None
        self.worst_chunk = 0.0

    def add(self, figures: list[tuple[bool, float, float, float]], margins, ok: bool, n_tokens: int) -> None:
        self.jobs += 1
        self.rejected += not ok
        self.tokens += n_tokens
        for _, _, mean_x, _ in figures:
            self.chunks += 1
            self.fp_sum += min(mean_x, 1.0)
            self.worst_chunk = max(self.worst_chunk, min(mean_x, 1.0))
        self.ties += int((margins < 0).sum())

    @property
    def s_fp(self) -> float:
        return self.fp_sum / self.chunks if self.chunks else 0.0

    def check(self, fp_flag: float, tie_flag: int) -> bool:
        flagged = (self.chunks >= MIN_FP_CHUNKS and self.s_fp > fp_flag) or self.ties >= tie_flag
        if flagged and self.flagged_at is None:
            self.flagged_at = self.tokens
        return flagged


def run_node(
    node: ReferenceModel,
    verifier: ReferenceModel,
    model_id: str,
    tokenizer,
    prompts: list[str],
    max_tokens: int,
    honest_proof: bool,
    stats: NodeStats,
    fp_flag: float = math.inf,
    tie_flag: int = 1 << 30,
    stop_when_flagged: bool = False,
) -> None:
    """Each prompt once as a job: the node generates (greedy) and commits a fingerprint (its own hidden
    states, or, with `honest_proof`, one honest prefill over its tokens); the verifier audits it."""
    for prompt in prompts:
        req = job(model_id, prompt, max_tokens)
        ids = tokenizer.encode(prompt)
        gen = node.generate(ids, None, max_tokens)
        if honest_proof:
            hidden, _ = verifier.prefill_hidden([*ids, *gen.output_ids])
        else:
            hidden = gen.hidden
        chunks = fingerprint_chunks(hidden, len(ids), n_generated=len(gen.output_ids))
        result = build_result(
            job=req,
            node_id="node-x",
            node_key=NODE.public,
            node_address="0x" + "3" * 40,
            node_seq=1,
            model_id=model_id,
            tokenizer_id=tokenizer.tokenizer_id,
            prompt_tokens=ids,
            output_tokens=gen.output_ids,
            output_text=tokenizer.decode(gen.output_ids),
            finish_reason="eos" if gen.finish_reason == "stop" else "length",
            chunks=chunks,
            started_at=0.0,
            finished_at=0.0,
        )
        v_hidden, v_logits = verifier.prefill_hidden([*ids, *gen.output_ids])
        fp = domain.fingerprint_check(result, v_hidden)
        replay = domain.replay_check(result, v_logits)
        figures = domain.fingerprint_figures(result, v_hidden)
        margins = domain.replay_margins(result, v_logits)
        stats.add(figures, margins, fp.ok and replay.ok, len(gen.output_ids))
        if stats.check(fp_flag, tie_flag) and stop_when_flagged:
            return


def binom_sf(k: int, n: int, q: float) -> float:
    """P(Binomial(n, q) >= k)."""
    if k <= 0:
        return 1.0
    term = (1 - q) ** n
    cdf = term
    for i in range(1, k):
        term *= (n - i + 1) / i * q / (1 - q)
        cdf += term
    return max(0.0, 1.0 - cdf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs per node")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--honest", type=int, default=20, help="honest nodes (>= 20 for the issue's figure)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.model == "smollm2":
        from loranet.model.catalog import resolve_model

        m = resolve_model("smollm2-135m-instruct")
        path, model_id = m.path, m.model_id
    else:
        path, model_id = ensure_tiny_model()
    verifier = ReferenceModel.from_path(path, model_id)
    tokenizer = verifier.tokenizer
    honest_jobs = 6 if args.quick else 12
    cheat_budget = 160 if args.quick else 400  # jobs a cheat may run before it is counted as never flagged

    # Honest nodes, differently configured: threads x attention x prompts.
    honest: list[NodeStats] = []
    for k in range(args.honest):
        threads, attn = (1, 2)[k % 2], ("eager", "sdpa")[(k // 2) % 2]
        torch.set_num_threads(threads)
        node = ReferenceModel.from_path(path, model_id)
        node.base.config._attn_implementation = attn
        prompts = [f"{PROMPTS[(k + j) % len(PROMPTS)]} #{k}-{j}" for j in range(honest_jobs)]
        stats = NodeStats()
        run_node(node, verifier, model_id, tokenizer, prompts, args.max_tokens, False, stats)
        honest.append(stats)
    torch.set_num_threads(2)
    honest_tokens = sum(s.tokens for s in honest)
    honest_ties = sum(s.ties for s in honest)
    worst_chunk = max(s.worst_chunk for s in honest)
    fp_flag = max(20 * worst_chunk, 1e-6)
    tie_rate = (honest_ties + 3.0) / honest_tokens  # about the 95% upper bound (rule of three when none)
    tie_flag = next(k for k in range(1, 10_000) if binom_sf(k, WINDOW_TOKENS, tie_rate) < ALPHA)
    false_flags = sum(1 for s in honest if s.check(fp_flag, tie_flag))

    out: dict = {
        "model": "SmolLM2-135M-Instruct"
        if args.model == "smollm2"
        else "loranet-tiny-llama (the test suite's seeded model)",
        "honest_nodes": args.honest,
        "honest_tokens": honest_tokens,
        "honest_false_flags": false_flags,
        "honest_rejected_jobs": sum(s.rejected for s in honest),
        "honest_worst_chunk_mean_excess": worst_chunk,
        "honest_tie_tokens": honest_ties,
        "fp_flag": fp_flag,
        "tie_flag": tie_flag,
    }
    for kind, honest_proof in (("int8", True), ("int4", True), ("fp16", False)):
        node = quantize(verifier, kind)
        prompts = [f"{PROMPTS[j % len(PROMPTS)]} :{kind}{j}" for j in range(cheat_budget)]
        stats = NodeStats()
        run_node(
            node, verifier, model_id, tokenizer, prompts, args.max_tokens, honest_proof, stats, fp_flag, tie_flag, True
        )
        out[f"flag_tokens_{kind}"] = stats.flagged_at  # None: not flagged within the budget
        out[f"{kind}_tokens_run"] = stats.tokens
        out[f"{kind}_jobs_rejected_per_job"] = f"{stats.rejected}/{stats.jobs}"
        out[f"{kind}_s_fp"] = stats.s_fp
        out[f"{kind}_tie_tokens"] = stats.ties
    out["elapsed_s"] = round(time.perf_counter() - t0, 1)
    if not args.json:
        print(
            f"{args.honest} honest nodes, {honest_tokens} tokens: {false_flags} flagged, worst chunk mean excess "
            f"{worst_chunk:.2e} (flag above {fp_flag:.1e}), {honest_ties} tokens off the greedy choice "
            f"(flag at {tie_flag} in a node)"
        )
        for kind in ("int8", "int4", "fp16"):
            print(
                f"{kind}: flagged after {out[f'flag_tokens_{kind}']} tokens (ran {out[f'{kind}_tokens_run']}); "
                f"per-job checks rejected {out[f'{kind}_jobs_rejected_per_job']} jobs; S_fp "
                f"{out[f'{kind}_s_fp']:.2e}; {out[f'{kind}_tie_tokens']} tokens off the greedy choice"
            )
    print(json.dumps({k: (round(v, 8) if isinstance(v, float) else v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
