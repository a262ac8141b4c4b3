"""Where one engine step's time goes: host (Python, launches) vs device, for one adapter vs 64.

Runs the engine (as bench/engine_bench.py builds it) to a steady decode batch of
64 sequences, then profiles `--steps` steps with torch.profiler and prints the
wall time per step, the device-busy time per step (sum of kernel times) and the
top host-side functions. On CPU the "device" column is empty.

    python bench/engine_profile.py --shape tinyllama --layers 8     # on CUDA
    python bench/engine_profile.py --quick                          # tiny model, CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_bench as eb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(eb.SHAPES), default="tiny")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dtype = "bfloat16" if eb.DEVICE == "cuda" else "float32"
    cache = tempfile.mkdtemp(prefix="engine-profile-")
    path, mid = eb.build_model(args.shape, args.layers, cache)
    adapters = eb.build_demo_adapters(path, 64, seed=0, out_dir=Path(cache) / "adapters", expected_model_id=mid)
    jp = eb.equal_workload(eb.load_tokenizer(path), 64, 0)
    cuda = eb.DEVICE == "cuda"
    for name, which in (("single", [0] * 64), ("mixed64", list(range(64)))):
        engine = eb.Engine(
            str(path),
            mid,
            eb.DEVICE,
            cache,
            config=eb.EngineConfig(adapter_slots=64, max_running=64, host_adapters=64, dtype=dtype),
        )
        for k in sorted(set(which)):
            engine.install_adapter(adapters[k][2], *eb.adapter_to_blobs(adapters[k][1]))
        reqs = [
            eb.GenRequest(f"{name}{i}", p, adapters[w][2], 400, eb.GREEDY, 0, ignore_eos=True)
            for i, (p, w) in enumerate(zip(jp, which))
        ]
        for r in reqs:
            engine.submit(r)
        for _ in range(5):  # admission, prefill, slot loads, first decodes: not profiled
            engine.step()
        if cuda:
            torch.cuda.synchronize()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                engine.step()
            if cuda:
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / args.steps
        events = prof.key_averages()
        dev_us = sum(e.self_device_time_total for e in events) if cuda else 0.0
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx"))
        print(
            f"\n== {name}: {wall * 1e3:.2f} ms/step wall, device busy {dev_us / 1e3 / args.steps:.2f} ms/step, "
            f"{launches / args.steps:.0f} kernel launches/step"
        )
        print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48))
        engine.close() if hasattr(engine, "close") else None


if __name__ == "__main__":
    main()
