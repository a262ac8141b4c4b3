"""The devnet demo: one question answered by the base model and by each adapter, each verified and settled.

On a model with a chat template (SmolLM2, the default) every job is the same
question sent through the template (`Client.submit(chat=True)`), so the table
shows what each adapter changes. On the tiny test model (no real language)
the jobs are raw prompts spread over its adapters.
"""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from loranet.client import Client
from loranet.signing import Identity

QUESTION = "What is the capital of France?"
PROMPTS = [
    "The quick brown fox",
    "Multi-LoRA serving means",
    "Verification by re-execution",
    "Settlement in OPEN tokens",
    "Hello, loranet!",
    "Adapters over one base model",
]


async def run_demo(nats_url: str, identity: Identity, n_jobs: int = 6, max_tokens: int = 48, model: str = "") -> int:
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for the answers, not rich's 80 columns
        console = Console(width=140)
    async with await Client.connect(nats_url, identity) as client:
        base = await client.model(model)
        adapters = [a.name for a in await client.adapters(base.model_id)]
        if not adapters:
            console.print("[red]no adapters registered[/]")
            return 1
        balance = await client.faucet(10**20, 10**19)
        console.print(f"client {client.address}: {balance.escrow} wei of OPEN in escrow; model {base.name}")
        chat = bool(base.chat_template)
        if chat:
            plan = [("", QUESTION)] + [(a, QUESTION) for a in adapters]
        else:
            plan = [
                (adapters[i % len(adapters)] if i % 5 != 4 else "", PROMPTS[i % len(PROMPTS)]) for i in range(n_jobs)
            ]
        jobs = [
            (await client.submit(a, prompt, max_tokens, model=base.model_id, chat=chat), a or "(base)")
            for a, prompt in plan
        ]
        title = f"loranet devnet demo: {QUESTION!r}" if chat else "loranet devnet demo"
        with console.status(f"{len(jobs)} jobs submitted over {len({a for _, a in jobs})} adapters; waiting"):
            outcomes = await asyncio.gather(*(client.wait(job_id, 600) for job_id, _ in jobs))
        table = Table(
            "adapter",
            "answer",
            "node",
            "verdict",
            "status",
            "fee (OPEN)",
            "node/dev/data/verif/treas %",
            title=title,
            show_lines=True,
        )
        ok = True
        for (_job_id, adapter), out in zip(jobs, outcomes):
            ok &= out.status == "settled" and sum(out.payouts.values()) == out.fee
            pay = out.payouts
            data = sum(v for k, v in pay.items() if k.startswith("contributor:"))
            verif = sum(v for k, v in pay.items() if k.startswith("verifier:"))
            fee = max(out.fee, 1)
            split = "/".join(
                f"{100 * x / fee:.0f}"
                for x in (pay.get("node", 0), pay.get("developer", 0), data, verif, pay.get("treasury", 0))
            )
            verdict = "accepted" if out.verdict.get("accepted") else (out.verdict and "rejected") or "-"
            answer = out.output if chat else repr(out.output)
            table.add_row(adapter, answer.strip(), out.node_id, verdict, out.status, f"{out.fee / 1e18:.6f}", split)
        console.print(table)
        console.print(
            "every job verified and settled; payouts sum to each fee" if ok else "[red]some jobs did not settle[/]"
        )
        first = adapters[min(1, len(adapters) - 1)]
        console.print(
            f"\nAsk your own:     .venv/bin/loranet chat --adapter {first} 'What is the largest ocean?'\n"
            "Read a record:    .venv/bin/loranet job <job_id> --json\n"
            "Status / stop:    .venv/bin/loranet devnet status  |  .venv/bin/loranet devnet down"
        )
        return 0 if ok else 1
