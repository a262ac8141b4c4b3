"""Attribution per answer on SmolLM2: planted recall, false credit, its cost against generation, the index.

Contributions: the four demo datanets (datasets/*.jsonl, 128 chat records from 12 contributors) and planted
passages (fictional facts, each supplied by one contributor only). Each record is tokenized with the
model's tokenizer (user turn, separator, assistant turn) into one suffix-array index (libs/loranet/attribution).

  planted_recall   the base model is asked to repeat a planted passage; of the answers that reproduce at
                   least 16 tokens of it verbatim, the share whose largest credit goes to the contributor who
                   planted it (goal >= 0.95)
  false_credit     answers that should owe the contributions nothing: the base model on general questions
                   and the french adapter on them, attributed against an index of the pirate datanet and the
                   planted passages: the share that credit any contribution (goal <= 0.01)
  attribution_over_generation   attribution time of an answer over the time the engine took to generate it
                   alone (goal <= 0.05)
  index_bytes_per_token, index_build_s_per_million_tokens   on a corpus of `--corpus-tokens` tokens

Every figure is printed for each minimum span length in --min-tokens, so the default (libs/loranet/
attribution.py DEFAULT_MIN_TOKENS) is the measured choice. A background index of the base model's own
answers to other questions removes spans the model says unprompted.

    python bench/attribution_bench.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from loranet.attribution import (  # noqa: E402
    DEFAULT_MIN_TOKENS,
    AttributionIndex,
    Record,
    attribute,
    records_of_chat_jsonl,
)
from loranet.model.adapters import adapter_to_blobs  # noqa: E402
from loranet.model.catalog import resolve_model  # noqa: E402
from loranet.model.content import adapter_content_id  # noqa: E402
from loranet.model.tokenizers import load_tokenizer, render_chat  # noqa: E402
from loranet.sampling import GREEDY  # noqa: E402
from loranet_ops.demo import TRAINED_DIR  # noqa: E402
from services.inference.engine import Engine, EngineConfig, GenRequest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GENERAL = [
    "How do plants make their food?",
    "What is the largest ocean on Earth?",
    "Give me three tips for sleeping better.",
    "What does a compiler do?",
    "Why do we have seasons?",
    "How many continents are there?",
    "What is photosynthesis?",
    "Explain gravity to a child.",
    "What is the speed of light?",
    "Name a famous painting.",
    "How do vaccines work?",
    "What is a prime number?",
    "Why is exercise healthy?",
    "What causes rain?",
    "What is the tallest mountain?",
    "How does a bicycle stay upright?",
    "What is an atom?",
    "Describe a cat in one sentence.",
    "What is the meaning of democracy?",
    "How do bees make honey?",
    "What is inflation?",
    "Why do leaves change colour in autumn?",
    "What is the internet?",
    "Give me a recipe idea for dinner.",
]
BACKGROUND = [
    "Tell me about the weather.",
    "What is your favourite colour?",
    "Write a sentence about the sea.",
    "What is a good book to read?",
    "How are you today?",
    "What is the capital of Germany?",
    "Say something kind.",
    "What is a river?",
    "Explain what a computer is.",
    "What is music?",
    "Describe a forest.",
    "What is history?",
]
PLACES = ["Quenmar", "Velkoria", "Drassen", "Omberlin", "Tavrek", "Ilsuna", "Morvayne", "Casperra", "Yundel", "Brakkos"]
THINGS = ["river", "glass tower", "copper bridge", "salt marsh", "observatory", "lantern festival", "clock guild"]


def planted_passages(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        place, thing, other = rng.choice(PLACES), rng.choice(THINGS), rng.choice(PLACES)
        year, count = rng.randint(1100, 1900), rng.randint(3, 97)
        out.append(
            f"In {year} the {thing} of {place} was rebuilt by {count} masons from {other}, "
            f"who carved record {i} into its northern stone."
        )
    return out


def address(tag: str) -> str:
    import hashlib

    return "0x" + hashlib.sha256(tag.encode()).hexdigest()[:40]


def datanet_records(tok, names: list[str]) -> list[Record]:
    return [r for name in names for r in records_of_chat_jsonl(ROOT / "datasets" / f"{name}.jsonl", tok)]


def chat_ids(tok, template: str, text: str) -> list[int]:
    return tok.encode(render_chat(template, [{"role": "user", "content": text}], add_generation_prompt=True))


def generate_all(engine: Engine, jobs: list[tuple[str, list[int], int]]) -> list:
    futs = [engine.submit(GenRequest(f"j{i}", ids, adapter, n, GREEDY, 0)) for i, (adapter, ids, n) in enumerate(jobs)]
    engine.run_until_idle()
    return [f.result(0) for f in futs]


def longest_common_run(a: list[int], b: list[int]) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 planted passages, 24 questions, a 250k-token corpus")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--min-tokens", default="4,6,8,12,16")
    ap.add_argument("--corpus-tokens", type=int, default=0)
    args = ap.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    n_planted = 20 if args.quick else 60
    corpus_tokens = args.corpus_tokens or (250_000 if args.quick else 1_000_000)
    ns = [int(x) for x in args.min_tokens.split(",")]

    model = resolve_model(args.model)
    tok = load_tokenizer(model.path)
    template = tok.chat_template
    engine = Engine(str(model.path), model.model_id, "cpu", tempfile.mkdtemp(prefix="attr-"), config=EngineConfig())
    french = adapter_content_id(TRAINED_DIR / "french")
    engine.install_adapter(french, *adapter_to_blobs(TRAINED_DIR / "french"))

    passages = planted_passages(n_planted)
    planted = [Record(f"planted:{i}", address(f"planted-{i}"), tuple(tok.encode(t))) for i, t in enumerate(passages)]
    records = datanet_records(tok, ["pirate"]) + planted
    t = time.perf_counter()
    index = AttributionIndex.build(records)
    build_demo_s = time.perf_counter() - t
    log(f"# {model.name}: index of {len(records)} records ({index.n_tokens} tokens) in {build_demo_s * 1e3:.1f} ms")

    # Answers: the base model repeating each planted passage, on general questions, the french adapter on them.
    repeat = [("", chat_ids(tok, template, f"Repeat this text exactly, word for word:\n\n{p}"), 64) for p in passages]
    general = [("", chat_ids(tok, template, q), 64) for q in GENERAL]
    other = [(french, chat_ids(tok, template, q), 64) for q in GENERAL]
    back = [("", chat_ids(tok, template, q), 64) for q in BACKGROUND]
    t = time.perf_counter()
    gens = generate_all(engine, repeat + general + other + back)
    log(f"# {len(gens)} answers generated in {time.perf_counter() - t:.0f}s (batched)")
    g_rep = gens[: len(repeat)]
    g_gen = gens[len(repeat) : len(repeat) + len(general)]
    g_oth = gens[len(repeat) + len(general) : len(repeat) + len(general) + len(other)]
    g_back = gens[len(repeat) + len(general) + len(other) :]
    background = AttributionIndex.build(
        Record(f"base:{i}", address("base"), tuple(g.output_tokens)) for i, g in enumerate(g_back)
    )
    reproduced = [
        (i, g) for i, g in enumerate(g_rep) if longest_common_run(list(g.output_tokens), list(planted[i].tokens)) >= 16
    ]

    sweep = {}
    for n in ns:
        hits = 0
        for i, g in reproduced:
            att = attribute(index, g.output_tokens, n, background)
            top = max(att.contributor_bps.items(), key=lambda kv: kv[1])[0] if att.contributor_bps else ""
            hits += top == planted[i].contributor
        false = [not attribute(index, g.output_tokens, n, background).empty for g in g_gen + g_oth]
        bare = [not attribute(index, g.output_tokens, n).empty for g in g_gen + g_oth]  # as the verifier runs it
        sweep[n] = {
            "planted_recall": hits / len(reproduced) if reproduced else float("nan"),
            "false_credit": sum(false) / len(false),
            "false_credit_answers": sum(false),
            "false_credit_without_background": sum(bare) / len(bare),
        }
        log(
            f"min {n:2d} tokens: planted recall {sweep[n]['planted_recall']:.3f} ({hits}/{len(reproduced)})   "
            f"false credit {sweep[n]['false_credit']:.3f} ({sum(false)}/{len(false)}; without the background "
            f"index {sum(bare)}/{len(bare)})"
        )

    # Cost: each answer generated alone (its own latency), against attributing it.
    ratios = []
    for adapter, ids, n_tok in (repeat[:4] + general[:4]) if args.quick else (repeat[:8] + general[:8]):
        gen = generate_all(engine, [(adapter, ids, n_tok)])[0]
        t = time.perf_counter()
        attribute(index, gen.output_tokens, DEFAULT_MIN_TOKENS, background)
        ratios.append((time.perf_counter() - t) / gen.latency_s)

    # The index at scale: the datanets' tokens interleaved with random text up to corpus_tokens.
    rng = np.random.default_rng(0)
    base = np.concatenate([np.asarray(r.tokens, dtype=np.int32) for r in datanet_records(tok, ["pirate", "french"])])
    big: list[Record] = []
    total = 0
    while total < corpus_tokens:
        size = int(rng.integers(40, 400))
        chunk = rng.integers(0, tok.vocab_size, size).astype(np.int32)
        if rng.random() < 0.3:  # some records share real text
            at = int(rng.integers(0, len(base) - 40))
            chunk[:40] = base[at : at + 40]
        chunk[chunk < 0] = 0
        big.append(Record(f"c{len(big)}", address(f"c{len(big) % 50}"), tuple(chunk.tolist())))
        total += size
    t = time.perf_counter()
    big_index = AttributionIndex.build(big)
    build_s = time.perf_counter() - t
    size_bytes = len(big_index.to_bytes())

    best = sweep.get(DEFAULT_MIN_TOKENS) or next(iter(sweep.values()))
    out = {
        "quick": args.quick,
        "model": model.name,
        "min_tokens": DEFAULT_MIN_TOKENS,
        "planted_recall": best["planted_recall"],
        "false_credit": best["false_credit"],
        "false_credit_without_background": best["false_credit_without_background"],
        "reproduced": len(reproduced),
        "planted": n_planted,
        "false_credit_answers": len(g_gen) + len(g_oth),
        "attribution_over_generation": statistics.median(ratios),
        "attribution_over_generation_max": max(ratios),
        "index_bytes_per_token": size_bytes / big_index.n_tokens,
        "index_build_s_per_million_tokens": build_s / big_index.n_tokens * 1e6,
        "index_tokens": big_index.n_tokens,
        "sweep": {str(k): v for k, v in sweep.items()},
        "targets": {"planted_recall_ge": 0.95, "false_credit_le": 0.01, "attribution_over_generation_le": 0.05},
    }
    log(
        f"min {DEFAULT_MIN_TOKENS} tokens (default): planted recall {out['planted_recall']:.3f} "
        f"({len(reproduced)}/{n_planted} answers reproduced their passage), false credit {out['false_credit']:.3f}\n"
        f"attribution / generation {out['attribution_over_generation']:.4f} (median; max "
        f"{out['attribution_over_generation_max']:.4f})\n"
        f"index: {out['index_bytes_per_token']:.2f} bytes per token, built in "
        f"{out['index_build_s_per_million_tokens']:.2f} s per million tokens ({big_index.n_tokens} tokens)"
    )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
