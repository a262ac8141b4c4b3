"""The devnet demo: jobs over several adapters, each shown verified and settled with its split."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from .client import Client
from .signing import Identity

PROMPTS = [
    "The quick brown fox",
    "Multi-LoRA serving means",
    "Verification by re-execution",
    "Settlement in OPEN tokens",
    "Hello, loranet!",
    "Adapters over one base model",
]


async def run_demo(nats_url: str, identity: Identity, n_jobs: int = 6, max_tokens: int = 24) -> int:
    console = Console()
    async with await Client.connect(nats_url, identity) as client:
        adapters = [a.name for a in await client.adapters()]
        if not adapters:
            console.print("[red]no adapters registered[/]")
            return 1
        balance = await client.faucet(10**20, 10**19)
        console.print(f"client {client.address}: {balance.escrow} wei of OPEN in escrow")
        jobs = []
        for i in range(n_jobs):
            adapter = adapters[i % len(adapters)] if i % 5 != 4 else ""
            job_id = await client.submit(adapter, PROMPTS[i % len(PROMPTS)], max_tokens)
            jobs.append((job_id, adapter or "(base)"))
        with console.status(f"{n_jobs} jobs submitted over {len({a for _, a in jobs})} adapters; waiting"):
            outcomes = await asyncio.gather(*(client.wait(job_id, 600) for job_id, _ in jobs))
        table = Table("job", "adapter", "node", "verdict", "status", "fee (OPEN)", "node/dev/data/verif/treas %",
                      title="loranet devnet demo")
        ok = True
        for (job_id, adapter), out in zip(jobs, outcomes):
            ok &= out.status == "settled" and sum(out.payouts.values()) == out.fee
            pay = out.payouts
            data = sum(v for k, v in pay.items() if k.startswith("contributor:"))
            verif = sum(v for k, v in pay.items() if k.startswith("verifier:"))
            fee = max(out.fee, 1)
            split = "/".join(f"{100 * x / fee:.0f}" for x in (pay.get("node", 0), pay.get("developer", 0), data, verif,
                                                             pay.get("treasury", 0)))
            verdict = "accepted" if out.verdict.get("accepted") else (out.verdict and "rejected") or "-"
            table.add_row(job_id[:8], adapter, out.node_id, verdict, out.status, f"{out.fee / 1e18:.6f}", split)
        console.print(table)
        console.print("every job verified and settled; payouts sum to each fee" if ok else "[red]some jobs did not settle[/]")
        console.print("\nSubmit your own:  .venv/bin/loranet submit --adapter demo-1 --prompt 'Hi' --max-tokens 16 --wait\n"
                      "Read a record:    .venv/bin/loranet job <job_id> --json\n"
                      "Status / stop:    .venv/bin/loranet devnet status  |  .venv/bin/loranet devnet down")
        return 0 if ok else 1
