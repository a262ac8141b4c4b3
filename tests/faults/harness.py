"""The fault suite: load through a devnet while one process at a time is killed, restarted or paused.

For each scenario: submit `jobs` jobs over the demo adapters at a steady rate,
inject the fault once part of the load is in flight, then wait for every
admitted job to end.  Afterwards, from the job records and the chain:

- lost:        admitted jobs that never reached `settled` / `refunded` / `rejected`
- duplicated:  jobs with more than one receipt, or charged more than their fee
- credit_minus_fee: what every party was paid (credit, and the data contributors' claimable balances) minus
  the fees charged

Run the full suite with `make faults` (python -m tests.faults.harness); a short
version runs in the default suite (tests/faults/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats

from loranet import codec
from loranet import protocol as p
from loranet.client import Client
from loranet.signing import Identity
from loranet_ops import devnet as dn
from loranet_ops.servers import free_port

SCENARIOS = (
    "kill_inference",
    "kill_verifier",
    "kill_settlement",
    "kill_scheduler",
    "kill_datastore",
    "kill_chain",
    "restart_nats",
    "restart_redis",
    "pause_node",
)


@dataclass
class Report:
    scenario: str
    jobs: int = 0
    admitted: int = 0
    settled: int = 0
    refunded: int = 0
    rejected: int = 0
    lost: int = 0
    duplicated: int = 0
    credit_minus_fee: int = 0
    recovery_s: float = 0.0
    serving_after: bool = False
    notes: list[str] = field(default_factory=list)


def _pid(state_dir: str, name: str) -> int:
    state = dn.read_state(state_dir) or {}
    for group in ("services", "servers"):
        if name in state.get(group, {}):
            return int(state[group][name]["pid"])
    raise KeyError(f"no process {name!r} in the devnet state")


def inject(state_dir: str, scenario: str) -> None:
    """Apply one fault: SIGKILL a process (the supervisor restarts it) or pause a node past its TTL."""
    target = {
        "kill_inference": "node-0",
        "kill_verifier": "verifier-0",
        "kill_settlement": "settlement",
        "kill_scheduler": "scheduler",
        "kill_datastore": "datastore",
        "kill_chain": "chain",
        "restart_nats": "nats",
        "restart_redis": "redis",
        "pause_node": "node-0",
    }[scenario]
    pid = _pid(state_dir, target)
    if scenario == "pause_node":
        os.kill(pid, signal.SIGSTOP)
        time.sleep(20)  # past the node TTL (15 s)
        os.kill(pid, signal.SIGCONT)
    else:
        os.kill(pid, signal.SIGKILL)


async def _receipt_counts(js) -> dict[str, int]:
    counts: dict[str, int] = {}
    sub = await js.pull_subscribe(p.RECEIPTS_ALL.pattern, stream="RECEIPTS")
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except Exception:
                break
            for m in msgs:
                receipt = codec.decode(p.Receipt, m.data)
                counts[receipt.job_id] = counts.get(receipt.job_id, 0) + 1
                await m.ack()
    finally:
        await sub.unsubscribe()
    return counts


async def run_scenario(
    config: dn.DevnetConfig, scenario: str, n_jobs: int, rate: float, settle_timeout: float
) -> Report:
    report = Report(scenario, jobs=n_jobs)
    client = await Client.connect(config.url_for("client"), Identity.generate())
    client.nc._max_reconnect_attempts = -1
    await client.faucet(10**22, 10**21)
    escrow_before = (await client.balance()).escrow
    adapters = [a.name for a in await client.adapters()]
    rng = random.Random(7)
    job_ids: list[str] = []
    fault_at = n_jobs // 3
    fault_time = 0.0
    for i in range(n_jobs):
        if i == fault_at:
            fault_time = time.monotonic()
            await asyncio.to_thread(inject, config.state_dir, scenario)
        for attempt in range(60):
            try:
                job_ids.append(await client.submit(rng.choice(adapters), f"fault {scenario} {i}", 6))
                break
            except Exception as exc:  # the bus or the datastore may be down for a moment
                if attempt == 59:
                    report.notes.append(f"submit {i} failed: {exc!r}")
                await asyncio.sleep(0.5)
        if i % 100 == 99:
            print(f"  {scenario}: {i + 1} jobs submitted", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0 / rate)
    # Recovery: the first job submitted after the fault that settles.
    post = job_ids[fault_at : fault_at + 1]
    if post:
        try:
            await client.wait(post[0], settle_timeout)
            report.recovery_s = round(time.monotonic() - fault_time, 1)
        except Exception as exc:
            report.notes.append(f"no recovery: {exc!r}")
    finals: dict[str, p.JobRecord] = {}
    deadline = time.monotonic() + settle_timeout
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            try:
                record = await client.job(job_id)
            except Exception:
                continue
            if record.status in ("settled", "refunded", "rejected"):
                finals[job_id] = record
                pending.discard(job_id)
        if pending:
            await asyncio.sleep(1)
    report.admitted = len(job_ids)
    report.lost = len(pending)
    for record in finals.values():
        setattr(report, record.status, getattr(report, record.status) + 1)
    admin = await nats.connect(config.url_for("admin"))  # receipts are not readable by clients
    counts = await _receipt_counts(admin.jetstream())
    await admin.close()
    report.duplicated = sum(1 for c in counts.values() if c > 1)
    fees = sum(r.receipt.fee for r in finals.values() if r.receipt and r.status == "settled")
    charged = escrow_before - (await client.balance()).escrow
    report.duplicated += int(charged != fees)
    credits = 0
    parties = {pay.address for r in finals.values() if r.receipt for pay in r.receipt.payouts}
    for address in parties:
        balance = await client.balance(address)
        credits += balance.credit + balance.claimable  # data contributors: in the balances tree until claimed
    report.credit_minus_fee = credits - charged
    try:
        probe = await client.submit(adapters[0], "serving again?", 4)
        report.serving_after = (await client.wait(probe, 120)).status == "settled"
    except Exception as exc:
        report.notes.append(f"not serving after: {exc!r}")
    await client.nc.drain()
    return report


def _dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack (what a stuck run is waiting on)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def run(
    scenarios: list[str], n_jobs: int, rate: float, root: Path, settle_timeout: float, adapters: int = 16
) -> list[Report]:
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    except (RuntimeError, ValueError):
        pass  # not the main thread
    reports = []
    for scenario in scenarios:
        config = dn.DevnetConfig(
            state_dir=str(root / scenario),
            nats_port=free_port(),
            redis_port=free_port(),
            inference_nodes=2,
            verifiers=2,
            demo_adapters=adapters,
            cache_dir=str(root / "cache"),
            epoch_max_s=0.3,
        )
        await asyncio.to_thread(dn.start_detached, config, 600)
        try:
            reports.append(await run_scenario(config, scenario, n_jobs, rate, settle_timeout))
        finally:
            await asyncio.to_thread(dn.stop, config.state_dir)
        print(_row(reports[-1]), flush=True)
    return reports


def _row(r: Report) -> str:
    return (
        f"{r.scenario:16} {r.jobs:6} {r.lost:5} {r.duplicated:10} {r.credit_minus_fee:16} {r.recovery_s:9} "
        f"{'yes' if r.serving_after else 'NO':8} {'; '.join(r.notes)[:80]}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=40.0, help="jobs submitted per second")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    scenarios = args.scenario or list(SCENARIOS)
    print(f"{'scenario':16} {'jobs':>6} {'lost':>5} {'duplicated':>10} {'credits-fees':>16} {'recovery':>9} serving")
    with tempfile.TemporaryDirectory(prefix="loranet-faults-") as tmp:
        reports = asyncio.run(run(scenarios, args.jobs, args.rate, Path(tmp), args.timeout))
    summary = {
        "scenarios": len(reports),
        "jobs": sum(r.jobs for r in reports),
        "lost": sum(r.lost for r in reports),
        "duplicated": sum(r.duplicated for r in reports),
        "credit_minus_fee": sum(r.credit_minus_fee for r in reports),
        "all_serving_after": all(r.serving_after for r in reports),
        "per_scenario": {
            r.scenario: {
                "lost": r.lost,
                "duplicated": r.duplicated,
                "credit_minus_fee": r.credit_minus_fee,
                "recovery_s": r.recovery_s,
                "settled": r.settled,
                "refunded": r.refunded,
                "rejected": r.rejected,
                "notes": r.notes,
            }
            for r in reports
        },
    }
    print(json.dumps(summary))
    ok = summary["lost"] == 0 and summary["duplicated"] == 0 and summary["credit_minus_fee"] == 0
    return 0 if ok and summary["all_serving_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
