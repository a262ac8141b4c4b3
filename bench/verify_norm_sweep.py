"""How detection of a "no adapter / wrong adapter" cheat varies with the claimed adapter's weight norm.

A cheating node claims adapter A but generates with the base model alone, and
commits the fingerprint of what it really ran.  The verifier audits with A.
Here A's LoRA update is scaled by s (so ‖ΔW‖ ∝ s) and, for each s, side by
side on the same prompts: how often A changes the greedy output at all (the
harm the cheat does), and how often the audit catches the cheat.

    .venv/bin/python bench/verify_norm_sweep.py [--quick] [--json]

Expected shape: detection stays at 100% as long as the adapter changes the
outputs; it falls only where the adapter is so small that skipping it changes
(almost) nothing, which is also where the cheat gains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from loranet.fingerprint import fingerprint_chunks  # noqa: E402
from loranet.model import TOKENIZER_ID, ensure_tiny_model, tokenizer  # noqa: E402
from loranet.model.adapters import build_demo_adapters  # noqa: E402
from loranet.model.generate import ReferenceModel  # noqa: E402
from services.inference.domain import build_result  # noqa: E402
from services.verifier.domain import audit_checks  # noqa: E402
from tests import factories  # noqa: E402

PROMPTS = [
    "The quick brown fox",
    "Verification by one prefill",
    "Adapters over one base model",
    "Hello, loranet!",
    "Settlement in OPEN tokens",
    "Multi-LoRA serving",
    "A node claims one adapter",
    "and runs another",
]
SCALES = [1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001]


def lora_modules(model: ReferenceModel, name: str):
    for module in model.peft.modules():
        if hasattr(module, "lora_B") and name in module.lora_B:
            yield module


def relative_update_norm(model: ReferenceModel, name: str) -> float:
    """Mean over adapted projections of ‖scaling·B·A‖_F / ‖W‖_F."""
    ratios = []
    for m in lora_modules(model, name):
        delta = m.scaling[name] * (m.lora_B[name].weight @ m.lora_A[name].weight)
        ratios.append(float(delta.norm() / m.base_layer.weight.norm()))
    return sum(ratios) / len(ratios)


@torch.no_grad()
def sweep(prompts: list[str], scales: list[float], max_tokens: int) -> list[dict]:
    torch.set_num_threads(1)
    cache = Path(tempfile.mkdtemp(prefix="loranet-norm-"))
    path, model_id = ensure_tiny_model(str(cache))
    # demo-3 adapts all seven projections.
    name, adapter_path, adapter_id = build_demo_adapters(
        path, 4, out_dir=cache / "adapters", expected_model_id=model_id
    )[3]
    model = ReferenceModel.from_path(path, model_id)
    model.add_adapter("a", adapter_path, adapter_id)
    originals = {m: m.lora_B["a"].weight.detach().clone() for m in lora_modules(model, "a")}
    base_norm = relative_update_norm(model, "a")
    rows = []
    cheats = {}
    for prompt in prompts:  # what the cheater runs does not depend on s
        ids = tokenizer.encode(prompt)
        cheats[prompt] = (ids, model.generate(ids, None, max_tokens))
    for s in scales:
        for m, w in originals.items():
            m.lora_B["a"].weight.copy_(w * s)
        changed = detected = 0
        worst_overlap = 1.0
        for prompt in prompts:
            ids, cheat = cheats[prompt]
            honest = model.generate(ids, "a", max_tokens)
            changed += honest.output_ids != cheat.output_ids
            job = factories.job(prompt=prompt, max_tokens=max_tokens, model_id=model_id, adapter_id=adapter_id)
            result = build_result(
                job=job,
                node_id="cheater",
                node_key=factories.NODE.public,
                node_address=factories.ADDR,
                node_seq=1,
                model_id=model_id,
                tokenizer_id=TOKENIZER_ID,
                prompt_tokens=ids,
                output_tokens=cheat.output_ids,
                output_text=tokenizer.decode(cheat.output_ids),
                finish_reason="eos" if cheat.finish_reason == "stop" else "length",
                chunks=fingerprint_chunks(cheat.hidden, len(ids), n_generated=len(cheat.output_ids)),
                started_at=time.time(),
                finished_at=time.time(),
            )
            hidden, logits = model.prefill_hidden(ids + cheat.output_ids, "a")
            checks = audit_checks(result, hidden, logits)
            detected += not all(c.ok for c in checks)
            for c in checks:
                if c.name == "fingerprint" and "worst overlap" in c.detail:
                    try:
                        worst_overlap = min(
                            worst_overlap, float(c.detail.split("worst overlap/mean/max excess ")[1].split("/")[0])
                        )
                    except (IndexError, ValueError):
                        pass
        rows.append(
            {
                "scale": s,
                "relative_update_norm": base_norm * s,
                "outputs_changed": changed / len(prompts),
                "detected": detected / len(prompts),
                "worst_overlap": worst_overlap,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 prompts, 32 tokens")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.time()
    rows = sweep(PROMPTS[:4] if args.quick else PROMPTS, SCALES, 32 if args.quick else 64)
    if args.json:
        print(json.dumps({"rows": rows, "elapsed_s": round(time.time() - started, 1)}))
        return
    print("claimed adapter scaled by s; the cheater runs the base model alone")
    print(f"{'s':>6} {'‖ΔW‖/‖W‖':>10} {'outputs changed':>16} {'detected':>9} {'worst overlap':>14}")
    for r in rows:
        print(
            f"{r['scale']:6g} {r['relative_update_norm']:10.4f} {100 * r['outputs_changed']:15.0f}% "
            f"{100 * r['detected']:8.0f}% {r['worst_overlap']:14.3f}"
        )
    print(f"elapsed {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
