"""The fingerprint at TinyLlama-1.1B's width (hidden 2048): bytes per chunk, time per chunk, honest vs bf16 weights.

A seeded model with TinyLlama-1.1B's layer shapes (2 decoder layers by default, CPU float32)
generates 65 greedy tokens per prompt; the node's fingerprint is compared with the verifier's
float32 prefill over prompt + output, as services/verifier/domain.py does. The "bf16 weights"
node runs the same model in bfloat16 (the precision attack of tests/verifier/attacks.py). With a
CUDA GPU the same two nodes also run on the GPU against the CPU verifier (cross-hardware noise).
Per chunk: matched fraction / mean excess / max excess (loranet.thresholds) and the verdict.

    python bench/fingerprint_width.py [--layers 2] [--hidden 2048] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loranet.fingerprint import compare_chunks, fingerprint_chunks  # noqa: E402
from loranet.model import tokenizer  # noqa: E402
from loranet.model.checkpoint import TinyLlamaSpec, build_base_checkpoint  # noqa: E402
from loranet.model.generate import ReferenceModel  # noqa: E402
from services.verifier import domain  # noqa: E402

PROMPTS = ("Tell me about dragons and their gold.", "The verifier recomputes one prefill over the output.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = TinyLlamaSpec(
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(args.hidden // 512, 1),
    )
    tmp = Path(tempfile.mkdtemp(prefix="fp-width-"))
    model_id = build_base_checkpoint(tmp / "m", spec=spec)
    ref = ReferenceModel.from_path(tmp / "m", model_id)
    nodes = {"honest fp32": ref, "bf16 weights": ReferenceModel.from_path(tmp / "m", model_id, dtype=torch.bfloat16)}
    if torch.cuda.is_available():
        # Cross-hardware: the node generates on the GPU, the verifier recomputes on this CPU. The honest
        # fp32 row is the noise the thresholds (and the top-k boundary zone) must absorb; uncalibrated so far.
        nodes["honest fp32 cuda"] = ReferenceModel.from_path(tmp / "m", model_id, device="cuda")
        nodes["bf16 weights cuda"] = ReferenceModel.from_path(tmp / "m", model_id, device="cuda", dtype=torch.bfloat16)
    rows = []
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        for name, node in nodes.items():
            gen = node.generate(ids, None, 65, stop_ids=())
            t0 = time.perf_counter()
            chunks = fingerprint_chunks(gen.hidden.float(), len(ids), n_generated=len(gen.output_ids))
            encode_ms = (time.perf_counter() - t0) / len(chunks) * 1e3
            hidden, _ = ref.prefill_hidden(ids + gen.output_ids)
            t0 = time.perf_counter()
            scores = compare_chunks(chunks, hidden, len(ids), len(gen.output_ids))
            compare_ms = (time.perf_counter() - t0) / len(chunks) * 1e3
            figs = [(s.index_overlap, *domain.fingerprint_ok(s)) for s in scores]
            rows.append(
                {
                    "node": name,
                    "bytes": [len(c) for c in chunks],
                    "encode_ms": encode_ms,
                    "compare_ms": compare_ms,
                    "chunks": [{"overlap": o, "ok": ok, "mean_excess": m, "max_excess": x} for o, ok, m, x in figs],
                }
            )
            print(
                f"{name:17s} bytes {rows[-1]['bytes']} encode {encode_ms:.1f} ms/chunk compare {compare_ms:.1f} "
                "ms/chunk | "
                + "  ".join(f"{o:.3f}/{m:.1e}/{x:.1e}/{'ok' if ok else 'rejected'}" for o, ok, m, x in figs),
                flush=True,
            )
    if args.json:
        print(json.dumps({"hidden": args.hidden, "layers": args.layers, "rows": rows}))


if __name__ == "__main__":
    main()
