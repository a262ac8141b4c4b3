"""Verification cost and soundness on CPU: the seeded tiny model (default) or SmolLM2 (--model smollm2).

With --model smollm2 the node and the verifier serve SmolLM2-135M-Instruct with two trained demo adapters
(pirate, terse), the cheaper/other model is SmolLM2 cut to its first 8 layers, and --calibrate adds the
serving engine's honest variations: each job alone or in a batch of 16 mixed-adapter jobs, 1 or 2 torch
threads, and a bfloat16 node (which the verifier must reject: it is the lower-precision attack).

Measures, on one torch thread:
  * generation on the node (incremental decode + fingerprint commitments) vs the verifier's
    cheap checks and full audit (ONE prefill + fingerprint comparison + sampler replay), for 32, 128
    and 512 output tokens, single and batched (one padded prefill for 8 results) audits;
  * cheap checks per second;
  * calibration: honest jobs generated and re-executed under the variations the network tolerates
    (node: torch threads 1/2 x attention eager/sdpa; verifier: single prefill, padded batch of
    several prompts, merged LoRA via peft merge_and_unload, 2 threads, sdpa) — worst honest figures
    against loranet.thresholds;
  * the adversarial suite of tests/verifier/attacks.py: detection per attack, false positives.

    python bench/verify_bench.py [--quick] [--full] [--json] [--calibrate]

--quick: under a minute (few trials); default: 20 trials per attack, 100 honest jobs;
--full: the issue's sizes (300 trials per attack, 1000 honest jobs; about an hour on 2 cores).
--calibrate: only the calibration and the closest attacks (10 honest jobs per variation pair, 20 trials
per close attack; --quick 1 and 3, --full 50 and 50), the figures loranet/thresholds.py quotes.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "verifier"))

import torch  # noqa: E402
from attacks import ATTACKS, build_kit, judge_once, local_verifier, random_job, run_attack  # noqa: E402
from verifier_nodes import PROMPTS, Client, Generated, HonestNode  # noqa: E402

from loranet import protocol as p  # noqa: E402
from loranet import thresholds
from loranet.fingerprint import CHUNK_TOKENS, chunk_spans, compare_chunk, fingerprint_chunks  # noqa: E402
from loranet.model import build_base_checkpoint, ensure_tiny_model  # noqa: E402
from loranet.model.adapters import build_demo_adapters  # noqa: E402
from loranet.model.generate import ReferenceModel  # noqa: E402
from loranet.sampling import GREEDY  # noqa: E402
from services.verifier import domain  # noqa: E402
from services.verifier.engine import AuditEngine, prefill_batch  # noqa: E402


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


class Setup:
    def __init__(self, cache: Path, model: str = "tiny") -> None:
        other = cache / "other"
        if model == "smollm2":
            from loranet.model.catalog import resolve_model
            from loranet.model.content import adapter_content_id
            from loranet_ops.demo import TRAINED_DIR
            from tests.realmodel.test_attacks_real import ADAPTERS, truncated_copy

            m = resolve_model("smollm2-135m-instruct")
            self.base_path, self.model_id = m.path, m.model_id
            self.adapters = [(n, TRAINED_DIR / n, adapter_content_id(TRAINED_DIR / n)) for n in ADAPTERS]
            truncated_copy(m.path, other, 8)
        else:
            self.base_path, self.model_id = ensure_tiny_model(str(cache))
            self.adapters = build_demo_adapters(
                self.base_path, 3, seed=0, out_dir=cache / "demo", expected_model_id=self.model_id
            )
            build_base_checkpoint(other, seed=1)
        self.cache = cache
        self.engine = AuditEngine(str(self.base_path), self.model_id, "cpu", str(cache), 8)
        self.tok = self.engine.tokenizer
        for _, path, aid in self.adapters:
            self.engine.load_adapter_dir(aid, path)
        self.node_model = ReferenceModel.from_path(self.base_path, self.model_id)
        for name, path, aid in self.adapters:
            self.node_model.add_adapter(name, path, aid)
        self.client = Client()
        self.node = HonestNode("node-bench", self.node_model, {aid: name for name, _, aid in self.adapters})
        self.kit = build_kit(
            self.node, self.client, self.model_id, self.adapters, str(other), str(self.base_path), seed=7
        )
        self.verifier = local_verifier(self.engine, [self.node])


# ---------------------------------------------------------------------------
# Timings
# ---------------------------------------------------------------------------


def fixed_length_result(s: Setup, n: int, adapter_id: str) -> tuple[p.InferenceResult, float]:
    """A greedy honest result of exactly n tokens (no EOS) and the node's generation time."""
    for prompt in PROMPTS:
        job = s.client.job(s.model_id, adapter_id, prompt, n)
        ids = s.tok.encode(prompt)
        name = s.node.adapter_names.get(adapter_id)
        t0 = time.perf_counter()
        gen = s.node_model.generate(ids, name, n, GREEDY, 0, stop_ids=())
        chunks = fingerprint_chunks(gen.hidden, len(ids), n_generated=len(gen.output_ids))
        elapsed = time.perf_counter() - t0
        if not s.tok.stop_ids & set(gen.output_ids):
            return s.node.result(job, Generated(ids, gen.output_ids, "length", chunks)), elapsed
    raise RuntimeError(f"every prompt produced EOS within {n} tokens")


def timings(s: Setup, lengths: list[int], reps: int) -> dict:
    out = {}
    adapter_id = s.adapters[1][2]
    for n in lengths:
        gens, cheap, audits, batched = [], [], [], []
        results = []
        for _ in range(reps):
            r, g = fixed_length_result(s, n, adapter_id)
            gens.append(g)
            results.append(r)
        key, address = s.node.identity.public, s.node.address
        for r in results:
            t0 = time.perf_counter()
            domain.authenticate(r, p.results(r.node_id), key)
            checks = domain.cheap_checks(r, s.model_id, s.engine.tokenizer, address)
            cheap.append(time.perf_counter() - t0)
            # The verifier's work per audited result (what Verifier.judge does, without the event loop):
            t0 = time.perf_counter()
            domain.authenticate(r, p.results(r.node_id), key)
            audit = domain.cheap_checks(r, s.model_id, s.engine.tokenizer, address)
            hidden, logits = s.engine.prefill([*r.prompt_tokens, *r.output_tokens], adapter_id)
            audit += domain.audit_checks(r, hidden, logits)
            audits.append(time.perf_counter() - t0)
            assert all(c.ok for c in audit), [c for c in audit if not c.ok]
            outcome = judge_once(s.verifier, r)  # the service's own path agrees
            assert outcome.how == "accepted", outcome.how
            assert all(c.ok for c in checks)
        batch = [fixed_length_result(s, n, adapter_id)[0] for _ in range(8)]
        t0 = time.perf_counter()
        pairs = s.engine.prefill_many(
            [[*r.prompt_tokens, *r.output_tokens] for r in batch], adapter_id, s.tok.pad_token_id
        )
        oks = [all(c.ok for c in domain.audit_checks(r, h, lg)) for r, (h, lg) in zip(batch, pairs)]
        batched.append((time.perf_counter() - t0) / len(batch))
        assert all(oks)
        g, a = statistics.median(gens), statistics.median(audits)
        out[n] = {
            "generate_s": g,
            "cheap_s": statistics.median(cheap),
            "audit_s": a,
            "audit_batched_s": statistics.median(batched),
            "audit_over_generate": a / g,
            "audit_batched_over_generate": statistics.median(batched) / g,
        }
        log(
            f"  {n:4d} tokens: generate {g * 1e3:8.1f} ms | cheap {out[n]['cheap_s'] * 1e3:6.2f} ms | "
            f"audit {a * 1e3:7.1f} ms (1/{g / a:5.1f}) | batched audit {out[n]['audit_batched_s'] * 1e3:7.1f} "
            "ms/result "
            f"(1/{g / out[n]['audit_batched_s']:5.1f})"
        )
    return out


def cheap_rate(s: Setup, n_results: int) -> float:
    results = [s.node.run(random_job(s.kit, max_tokens=128)) for _ in range(min(n_results, 20))]
    key, address = s.node.identity.public, s.node.address
    done, t0 = 0, time.perf_counter()
    while done < n_results:
        r = results[done % len(results)]
        domain.authenticate(r, p.results(r.node_id), key)
        domain.cheap_checks(r, s.model_id, s.engine.tokenizer, address)
        done += 1
    return done / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------
# Calibration across honest execution variations
# ---------------------------------------------------------------------------


def _set_attn(model: ReferenceModel, impl: str) -> None:
    model.base.set_attn_implementation(impl)


def _merged(s: Setup, cache: dict, adapter_id: str):
    if adapter_id not in cache:
        ref = copy.deepcopy(s.node_model)
        name = s.node.adapter_names[adapter_id]
        ref.peft.set_adapter(name)
        cache[adapter_id] = ref.peft.merge_and_unload()
    return cache[adapter_id]


def figures(result: p.InferenceResult, hidden: torch.Tensor, logits: torch.Tensor) -> tuple[float, float, float, float]:
    f = domain.fingerprint_figures(result, hidden)
    m = domain.replay_margins(result, logits)
    return min(x[1] for x in f), max(x[2] for x in f), max(x[3] for x in f), float(m.min())


WINDOWS = (1e-3, 3e-3, 1e-2, 2e-2, 5e-2)  # candidate FP_MATCH_REL values


def raw_max_error(result: p.InferenceResult, hidden: torch.Tensor) -> float:
    """Largest |recomputed - committed| / hi over the matched indices of every chunk, half-step included."""
    spans = chunk_spans(len(result.prompt_tokens), len(result.output_tokens), CHUNK_TOKENS)
    scores = [compare_chunk(c, hidden[a:b]) for c, (a, b) in zip(result.fingerprint.chunks, spans)]
    return max(sc.max_abs_err / max(sc.hi, 1e-12) for sc in scores)


def window_overlaps(result: p.InferenceResult, hidden: torch.Tensor) -> list[float]:
    """The result's worst-chunk index overlap if FP_MATCH_REL were each of WINDOWS (how wide a match must be)."""
    spans = chunk_spans(len(result.prompt_tokens), len(result.output_tokens), CHUNK_TOKENS)
    out = []
    for w in WINDOWS:
        try:
            out.append(
                min(
                    compare_chunk(c, hidden[a:b], match_rel=w).index_overlap
                    for c, (a, b) in zip(result.fingerprint.chunks, spans)
                )
            )
        except ValueError:
            out.append(0.0)
    return out


def calibrate(s: Setup, per_variant: int) -> dict:
    node_variants = [(t, a) for t in (1, 2) for a in ("eager", "sdpa")]
    verifier_variants = ["single", "padded_batch", "merged_lora", "threads_2", "sdpa"]
    merged_cache: dict = {}
    worst = {
        v: [1.0, 0.0, 0.0, float("inf"), 0, 0] for v in verifier_variants
    }  # overlap, mean, max, margin, n, rejected
    honest_win = [1.0] * len(WINDOWS)
    raw: dict[str, float] = {}
    for threads, attn in node_variants:
        torch.set_num_threads(threads)
        _set_attn(s.node_model, attn)
        results = [s.node.run(random_job(s.kit)) for _ in range(per_variant)]
        torch.set_num_threads(1)
        _set_attn(s.node_model, "eager")
        for r in results:
            ids = [*r.prompt_tokens, *r.output_tokens]
            s.node.adapter_names.get(r.adapter_id)
            for v in verifier_variants:
                if v == "single":
                    h, lg = s.engine.prefill(ids, r.adapter_id)
                elif v == "padded_batch":
                    others = [s.tok.encode(random_job(s.kit).prompt) * 2 for _ in range(3)]
                    h, lg = prefill_batch(
                        s.engine.model, [ids, *others], s.engine._loaded.get(r.adapter_id), s.tok.pad_token_id
                    )[0]
                elif v == "merged_lora":
                    if not r.adapter_id:
                        h, lg = s.engine.prefill(ids, "")
                    else:
                        m = _merged(s, merged_cache, r.adapter_id)
                        with torch.no_grad():
                            out = m(input_ids=torch.tensor([ids]), output_hidden_states=True)
                        h, lg = out.hidden_states[-1][0].float(), out.logits[0].float()
                elif v == "threads_2":
                    torch.set_num_threads(2)
                    h, lg = s.engine.prefill(ids, r.adapter_id)
                    torch.set_num_threads(1)
                else:
                    _set_attn(s.engine.model, "sdpa")
                    h, lg = s.engine.prefill(ids, r.adapter_id)
                    _set_attn(s.engine.model, "eager")
                ov, mx, xx, mg = figures(r, h, lg)
                honest_win[:] = [min(a, b) for a, b in zip(honest_win, window_overlaps(r, h))]
                raw[v] = max(raw.get(v, 0.0), raw_max_error(r, h))
                w = worst[v]
                w[0], w[1], w[2], w[3] = min(w[0], ov), max(w[1], mx), max(w[2], xx), min(w[3], mg)
                w[4] += 1
                w[5] += int(not all(c.ok for c in domain.audit_checks(r, h, lg)))
    for v, w in worst.items():
        log(
            f"  honest vs verifier[{v:12s}]: n={w[4]:4d} rejected={w[5]} min overlap {w[0]:.3f} "
            f"max mean excess {w[1]:.2e} max excess {w[2]:.2e} (max |error|/hi {raw.get(v, 0.0):.2e}) "
            f"min replay margin {w[3]:+.3e}"
        )
    log(
        "  honest worst-chunk overlap per candidate FP_MATCH_REL (all variations): "
        + "  ".join(f"{w:g}: {o:.3f}" for w, o in zip(WINDOWS, honest_win))
    )
    return {
        **{
            v: {
                "n": w[4],
                "rejected": w[5],
                "min_overlap": w[0],
                "max_mean_excess": w[1],
                "max_excess": w[2],
                "max_abs_err_over_hi": raw.get(v, 0.0),
                "min_replay_margin": w[3],
            }
            for v, w in worst.items()
        },
        "honest_window_overlap_min": dict(zip(map(str, WINDOWS), honest_win)),
    }


def calibrate_engine(s: Setup, n_jobs: int) -> dict:
    """Honest results of the serving engine (services/inference: SGMV, paged KV, continuous batching) under
    the variations a network of nodes runs with, each against the verifier's single float32 prefill.

    alone: each job by itself; batched: the jobs together with 16 filler jobs over the adapters (other
    batch composition, other padding of the LoRA bmm); threads_1 / threads_2: torch CPU threads;
    bf16: a node running bfloat16 weights (the verifier must reject it: it is lower_precision_bf16)."""
    from verifier_nodes import Generated as NodeGen

    from loranet.model.adapters import adapter_to_blobs
    from services.inference.domain import sampler_params
    from services.inference.engine import Engine, EngineConfig, GenRequest

    jobs = [random_job(s.kit, max_tokens=s.kit.rng.randint(8, 48)) for _ in range(n_jobs)]
    fillers = [random_job(s.kit, max_tokens=24) for _ in range(16)]
    variants = {
        "alone_threads_2": ("float32", 2, False),
        "batched_threads_2": ("float32", 2, True),
        "batched_threads_1": ("float32", 1, True),
        "alone_threads_1": ("float32", 1, False),
        "batched_bf16": ("bfloat16", 2, True),
    }
    out = {}
    for name, (dtype, threads, batched) in variants.items():
        torch.set_num_threads(threads)
        eng = Engine(
            str(s.base_path),
            s.model_id,
            "cpu",
            str(s.cache / f"engine-{name}"),
            config=EngineConfig(adapter_slots=4, max_running=32, kv_blocks=256, dtype=dtype),
        )
        for _, path, aid in s.adapters:
            eng.install_adapter(aid, *adapter_to_blobs(path))

        def req(j, tag):
            return GenRequest(
                f"{tag}{j.job_id}",
                s.tok.encode(j.prompt),
                j.adapter_id,
                j.max_tokens,
                sampler_params(j),
                j.sampling.seed,
            )

        if batched:
            futs = [eng.submit(req(j, "")) for j in jobs] + [eng.submit(req(j, "f")) for j in fillers]
            eng.run_until_idle()
            gens = [f.result(0) for f in futs[: len(jobs)]]
        else:
            gens = []
            for j in jobs:
                f = eng.submit(req(j, ""))
                eng.run_until_idle()
                gens.append(f.result(0))
        torch.set_num_threads(1)
        worst, rejected, failed = [1.0, 0.0, 0.0, float("inf")], 0, set()
        for j, g in zip(jobs, gens):
            r = s.node.result(j, NodeGen(g.prompt_tokens, g.output_tokens, g.finish_reason, g.chunks))
            h, lg = s.engine.prefill([*r.prompt_tokens, *r.output_tokens], r.adapter_id)
            ov, mx, xx, mg = figures(r, h, lg)
            worst = [min(worst[0], ov), max(worst[1], mx), max(worst[2], xx), min(worst[3], mg)]
            bad = [c.name for c in domain.audit_checks(r, h, lg) if not c.ok]
            rejected += bool(bad)
            failed.update(bad)
        out[name] = {
            "n": len(jobs),
            "rejected": rejected,
            "failed_checks": sorted(failed),
            "min_overlap": worst[0],
            "max_mean_excess": worst[1],
            "max_excess": worst[2],
            "min_replay_margin": worst[3],
        }
        log(
            f"  engine[{name:18s}] vs verifier[single]: n={len(jobs)} rejected={rejected} {sorted(failed)} "
            f"min overlap {worst[0]:.3f} max mean excess {worst[1]:.2e} max excess {worst[2]:.2e} "
            f"min replay margin {worst[3]:+.3e}"
        )
    return out


def attack_closeness(s: Setup, name: str, trials: int) -> dict:
    """The closest-to-honest audit figures an attack reached (for the calibration's gap), and its worst-chunk
    overlap at each candidate match window (min and max over trials)."""
    best = [0.0, float("inf"), float("inf"), -float("inf")]
    win_lo, win_hi = [1.0] * len(WINDOWS), [0.0] * len(WINDOWS)
    for _ in range(trials):
        r = ATTACKS[name](s.kit)
        try:
            h, lg = s.engine.prefill([*r.prompt_tokens, *r.output_tokens], r.adapter_id)
            ov, mx, xx, mg = figures(r, h, lg)
            wo = window_overlaps(r, h)
        except Exception:
            continue
        best = [max(best[0], ov), min(best[1], mx), min(best[2], xx), max(best[3], mg)]
        win_lo, win_hi = [min(a, b) for a, b in zip(win_lo, wo)], [max(a, b) for a, b in zip(win_hi, wo)]
    return {
        "max_overlap": best[0],
        "min_mean_excess": best[1],
        "min_max_excess": best[2],
        "max_min_margin": best[3],
        "window_overlap_min": dict(zip(map(str, WINDOWS), win_lo)),
        "window_overlap_max": dict(zip(map(str, WINDOWS), win_hi)),
    }


CLOSEST = ("adapter_scaled_0.5", "lower_precision_bf16", "wrong_adapter", "no_adapter", "wrong_base_model")


def print_closeness(closeness: dict) -> None:
    for n, c in closeness.items():
        log(
            f"  closest {n:28s} overlap {c['max_overlap']:.3f} mean excess {c['min_mean_excess']:.2e} "
            f"max excess {c['min_max_excess']:.2e}"
        )
    log("  worst-chunk overlap per candidate FP_MATCH_REL, min..max over trials:")
    for n, c in closeness.items():
        log(
            f"    {n:28s} "
            + "  ".join(
                f"{w:g}: {c['window_overlap_min'][str(w)]:.3f}..{c['window_overlap_max'][str(w)]:.3f}" for w in WINDOWS
            )
        )


def calibrate_only(per_variant: int, attack_trials: int, as_json: bool, model: str = "tiny") -> None:
    """What loranet.thresholds quotes: the worst honest figures and the closest attack figures."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verify-calibrate-") as tmp:
        s = Setup(Path(tmp), model)
        log(f"calibration ({model}): {per_variant} honest jobs per node variation (4) x verifier variation (5):")
        cal = calibrate(s, per_variant)
        log(f"the serving engine's variations ({max(per_variant * 2, 8)} honest jobs each):")
        cal["engine"] = calibrate_engine(s, max(per_variant * 2, 8))
        log(f"closest attacks ({attack_trials} trials each):")
        closeness = {n: attack_closeness(s, n, attack_trials) for n in CLOSEST}
        print_closeness(closeness)
    log(
        f"thresholds now: match window {thresholds.FP_MATCH_REL} x hi, overlap >= {thresholds.FP_MIN_INDEX_OVERLAP}, "
        f"mean excess <= {thresholds.FP_MAX_MEAN_EXCESS_REL}, max excess <= {thresholds.FP_MAX_EXCESS_REL}; "
        f"{time.perf_counter() - t0:.0f}s"
    )
    if as_json:
        print(json.dumps({"calibration": cal, "attack_closeness": closeness}, indent=2, default=float))


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="only the threshold calibration: honest variations and the closest attacks (no timings, no suite)",
    )
    ap.add_argument(
        "--model",
        choices=["tiny", "smollm2"],
        default="tiny",
        help="tiny: the seeded test model; smollm2: SmolLM2-135M-Instruct with two trained adapters",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    trials, honest_n, reps, calib, lengths = (20, 100, 3, 6, [32, 128, 512])
    if args.quick:
        trials, honest_n, reps, calib = 2, 10, 1, 1
    if args.full:
        trials, honest_n, reps, calib = 300, 1000, 5, 50
    started = time.perf_counter()
    if args.calibrate:
        calibrate_only(
            calib if args.quick or args.full else 10,
            3 if args.quick else (50 if args.full else 20),
            args.json,
            args.model,
        )
        return
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        s = Setup(Path(tmp), args.model)
        log(f"setup {time.perf_counter() - started:.1f}s; timings (median of {reps}, one torch thread):")
        t = timings(s, lengths, reps)
        rate = cheap_rate(s, 300 if args.quick else 3000)
        log(f"  cheap checks: {rate:,.0f} results/s (128-token results, one core)")
        log("calibration (honest jobs under node and verifier variations):")
        cal = calibrate(s, calib)
        log(
            f"thresholds: overlap >= {thresholds.FP_MIN_INDEX_OVERLAP}, mean excess <= "
            f"{thresholds.FP_MAX_MEAN_EXCESS_REL}, "
            f"max excess <= {thresholds.FP_MAX_EXCESS_REL}, replay margin >= -{thresholds.REPLAY_MARGIN}"
        )
        log(f"honest jobs ({honest_n}) and attacks ({trials} trials each):")
        false_pos = 0
        for _ in range(honest_n):
            out = judge_once(s.verifier, s.node.run(random_job(s.kit)))
            false_pos += int(out.detected)
        table = {}
        for name in ATTACKS:
            detected = sum(run_attack(s.verifier, s.kit, name).detected for _ in range(trials))
            table[name] = {"detected": detected, "trials": trials}
            log(f"  {name:40s} {detected:4d}/{trials}")
        closeness = {n: attack_closeness(s, n, 1 if args.quick else 5) for n in CLOSEST}
        print_closeness(closeness)
    report = {
        "audit_over_generate_32": t[32]["audit_over_generate"],
        "audit_over_generate_128": t[128]["audit_over_generate"],
        "audit_over_generate_512": t[512]["audit_over_generate"],
        "audit_batched_over_generate_128": t[128]["audit_batched_over_generate"],
        "audit_batched_over_generate_512": t[512]["audit_batched_over_generate"],
        "timings": {str(k): v for k, v in t.items()},
        "cheap_checks_per_s": rate,
        "false_positives": false_pos,
        "honest_runs": honest_n,
        "attacks_detected": sum(v["detected"] for v in table.values()),
        "attacks_total": sum(v["trials"] for v in table.values()),
        "attacks": table,
        "calibration": cal,
        "attack_closeness": closeness,
        "targets": {
            "audit_over_generate_128_le": 0.1,
            "audit_over_generate_512_le": 0.04,
            "cheap_checks_per_s_ge": 2000,
        },
        "elapsed_s": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(
            f"audit/generate: 32 tok {report['audit_over_generate_32']:.3f}, 128 tok "
            f"{report['audit_over_generate_128']:.3f} "
            f"(target <= 0.100), 512 tok {report['audit_over_generate_512']:.3f} (target <= 0.040)"
        )
        print(
            f"cheap checks: {rate:,.0f}/s (target >= 2,000); false positives {false_pos}/{honest_n}; "
            f"attacks detected {report['attacks_detected']}/{report['attacks_total']}; {report['elapsed_s']:.0f}s"
        )


if __name__ == "__main__":
    main()
