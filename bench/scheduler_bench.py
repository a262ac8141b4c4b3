"""Scheduler benchmark: loranet's routing vs round-robin vs random, side by side in one run.

Three measurements:

1. Routing quality (simulated, no model): 8 nodes, each with an LRU cache of
   adapter slots (64 by default; a sweep also runs 16 and 32); loading a cold
   adapter costs `--load-ms` (50 ms); a job costs `--ms-per-token` (0.5 ms, a
   node doing 2,000 tokens/s) per max_tokens (uniform 16..256).  A node runs
   its work batches one after another, segment by segment (serial: the
   pessimistic model, no continuous batching).  10,000 jobs arrive as a
   Poisson stream at `--load` (60%) of the cluster's token capacity, over 500
   adapters with zipf popularity (s=1) and 20 clients.  Every policy
   dispatches at the same 20 ms window ticks; round-robin and random ignore
   room (the node queues); loranet's policy (services.scheduler.domain.
   RoutingQueue, the code the service runs) holds jobs while nodes are full and
   learns hot adapters from 2 s heartbeats plus its own routing.  Queue time =
   arrival -> the node starts the job (its adapter load counts as service).
2. Admission throughput on one core, in-process, no NATS: msgpack decode +
   schema validation + Ed25519 check + timing check + ticket + one routing
   plan per 100 jobs (a 20 ms window at 5,000 jobs/s); also with the
   work-batch assembly + encode.  Reported per CPU-second of the one thread
   (time.process_time), because the machine is shared; wall-clock beside it.
3. Dispatch overhead on a real nats-server (loranet_ops.servers.NatsServer on
   loopback): the scheduler service's own code path, p50 of job handler entry
   (the job fetched and decoded) -> work batch publish acked, with the window
   at 0 ms and at the default 20 ms.

    python bench/scheduler_bench.py --quick      # < 1 minute
    python bench/scheduler_bench.py --json       # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loranet import codec
from loranet import protocol as p
from loranet.signing import Identity, sign
from services.scheduler import domain

MODEL = "ab" * 32


def adapter_id(i: int) -> str:
    return f"{i:064x}"


# ---------------------------------------------------------------------------
# 1. Simulation
# ---------------------------------------------------------------------------


@dataclass
class SimJob:
    idx: int
    client: str
    adapter: str
    tokens: int
    arrival: float
    start: float = -1.0


@dataclass
class SimNode:
    node_id: str
    slots: int
    lru: OrderedDict = field(default_factory=OrderedDict)
    free_at: float = 0.0
    loads: int = 0
    finishing: list = field(default_factory=list)  # heap of finish times of dispatched jobs

    def run_batch(self, now: float, jobs: list[SimJob], load_s: float, s_per_token: float) -> None:
        t = max(now, self.free_at)
        by_adapter: dict[str, list[SimJob]] = {}
        for job in jobs:
            by_adapter.setdefault(job.adapter, []).append(job)
        for adapter, seg in by_adapter.items():
            start_seg = t
            if adapter in self.lru:
                self.lru.move_to_end(adapter)
            else:
                self.loads += 1
                t += load_s
                self.lru[adapter] = None
                while len(self.lru) > self.slots:
                    self.lru.popitem(last=False)
            for job in seg:
                job.start = start_seg if job is seg[0] else t
                t += job.tokens * s_per_token
                heapq.heappush(self.finishing, t)
        self.free_at = t

    def outstanding(self, now: float) -> int:
        while self.finishing and self.finishing[0] <= now:
            heapq.heappop(self.finishing)
        return len(self.finishing)


def make_workload(n_jobs: int, n_adapters: int, zipf_s: float, n_clients: int, rate: float, seed: int) -> list[SimJob]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_adapters + 1) ** zipf_s
    weights /= weights.sum()
    adapters = rng.choice(n_adapters, size=n_jobs, p=weights)
    perm = rng.permutation(n_adapters)  # popularity rank not tied to adapter id
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n_jobs))
    tokens = rng.integers(16, 257, size=n_jobs)
    clients = rng.integers(0, n_clients, size=n_jobs)
    return [
        SimJob(i, f"client-{clients[i]}", adapter_id(int(perm[adapters[i]])), int(tokens[i]), float(arrivals[i]))
        for i in range(n_jobs)
    ]


def run_policies(args, policies: list[str]) -> tuple[float, dict[str, dict]]:
    mean_tokens = (16 + 256) / 2
    rate = args.load * args.nodes / (mean_tokens * args.ms_per_token / 1000)
    workload = make_workload(args.jobs, args.adapters, args.zipf, args.clients, rate, args.seed)
    return rate, {pol: simulate(pol, workload, args) for pol in policies}


def simulate(policy: str, jobs: list[SimJob], args) -> dict:
    jobs = [SimJob(j.idx, j.client, j.adapter, j.tokens, j.arrival) for j in jobs]
    nodes = [SimNode(f"n{i}", args.adapter_slots) for i in range(args.nodes)]
    load_s, s_tok, window = args.load_ms / 1000, args.ms_per_token / 1000, args.window_ms / 1000
    rng = random.Random(7)
    queue = domain.RoutingQueue(
        max_batch_jobs=args.max_batch_jobs, aging_s=args.aging_s, cold_penalty=args.cold_penalty
    )
    affinity = domain.AffinityMap(args.adapter_slots)
    rr = 0
    next_hb = 0.0
    i = 0
    t = 0.0
    pending_total = 0
    plan_s = 0.0
    while i < len(jobs) or pending_total:
        t += window
        arrived = []
        while i < len(jobs) and jobs[i].arrival <= t:
            arrived.append(jobs[i])
            i += 1
        if policy == "loranet":
            if t >= next_hb:  # heartbeats: each node's hot adapters, as of now
                for n in nodes:
                    affinity.heartbeat(n.node_id, list(n.lru), t)
                next_hb = t + args.heartbeat_s
            for job in arrived:
                queue.push(
                    domain.Ticket(
                        job_id=str(job.idx),
                        client=job.client,
                        model_id=MODEL,
                        adapter_id=job.adapter,
                        cost=job.tokens,
                        admitted_at=job.arrival,
                        payload=job,
                    )
                )
            views = [
                domain.NodeView(
                    node_id=n.node_id,
                    model_ids=frozenset((MODEL,)),
                    capacity=args.node_capacity,
                    outstanding=n.outstanding(t),
                    adapters_hot=affinity.hot(n.node_id),
                    evict_at=affinity.evict_at(n.node_id),
                )
                for n in nodes
            ]
            started = time.perf_counter()
            plan = queue.plan(views, t)
            plan_s += time.perf_counter() - started
            by_id = {n.node_id: n for n in nodes}
            for a in plan:
                for tk in a.tickets:
                    affinity.routed(a.node_id, tk.adapter_id, t)
                by_id[a.node_id].run_batch(t, [tk.payload for tk in a.tickets], load_s, s_tok)
            pending_total = len(queue)
        else:
            per_node: dict[int, list[SimJob]] = {}
            for job in arrived:
                if policy == "round-robin":
                    k, rr = rr, (rr + 1) % len(nodes)
                else:
                    k = rng.randrange(len(nodes))
                per_node.setdefault(k, []).append(job)
            for k, batch in per_node.items():
                nodes[k].run_batch(t, batch, load_s, s_tok)
    queue_ms = np.array([(j.start - j.arrival) * 1000 for j in jobs])
    loads = sum(n.loads for n in nodes)
    makespan = max(n.free_at for n in nodes)
    busy = sum(j.tokens for j in jobs) * s_tok + loads * load_s
    return {
        "adapter_loads": loads,
        "adapter_loads_per_1k_jobs": loads * 1000 / len(jobs),
        "p50_queue_ms": float(np.percentile(queue_ms, 50)),
        "p99_queue_ms": float(np.percentile(queue_ms, 99)),
        "max_queue_ms": float(queue_ms.max()),
        "makespan_s": makespan,
        "utilization": busy / (makespan * len(nodes)),
        "plan_ms_per_tick": plan_s * 1000 / max(t / window, 1),
    }


# ---------------------------------------------------------------------------
# 2. Admission throughput (one core, in-process)
# ---------------------------------------------------------------------------


def signed_jobs(n: int, n_adapters: int, n_clients: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_adapters + 1)
    weights /= weights.sum()
    adapters = rng.choice(n_adapters, size=n, p=weights)
    clients = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(n_clients)]
    now = time.time()
    out = []
    for k in range(n):
        who = clients[k % n_clients]
        job = p.JobRequest(
            job_id=p.new_job_id(),
            client_key=who.public,
            client_address="0x" + f"{k % n_clients:040x}",
            model_id=MODEL,
            adapter_id=adapter_id(int(adapters[k])),
            prompt="Tell me about LoRA " * 4,
            max_tokens=64,
            max_fee=10**18,
            created_at=now,
            expires_at=now + 3600,
        )
        out.append(codec.encode(sign(job, who)))
    return out


def admission(raw: list[bytes], nodes: int, per_window: int, assemble: bool, clock=time.process_time) -> float:
    """Jobs per CPU-second (one thread) through decode + signature + timing + routing (+ batch assembly/encode)."""
    queue = domain.RoutingQueue(max_batch_jobs=64)
    affinity = domain.AffinityMap(16)
    views_base = [f"n{i}" for i in range(nodes)]
    started = clock()
    for k, data in enumerate(raw):
        job = p.JOBS_SUBMIT.decode(data)
        domain.check_signature(job)
        now = time.time()
        domain.check_timing(job, now, 300.0)
        queue.push(domain.Ticket.of(job, now))
        if (k + 1) % per_window == 0 or k + 1 == len(raw):
            views = [
                domain.NodeView(node_id=n, model_ids=frozenset((MODEL,)), capacity=10**6, adapters_hot=affinity.hot(n))
                for n in views_base
            ]
            for a in queue.plan(views, now):
                for tk in a.tickets:
                    affinity.routed(a.node_id, tk.adapter_id, now)
                if assemble:
                    batch = domain.assemble_batch(
                        a.node_id, a.model_id, [tk.payload for tk in a.tickets], p.new_job_id(), "bench", now
                    )
                    codec.encode(batch)
    return len(raw) / (clock() - started)


# ---------------------------------------------------------------------------
# 3. Dispatch overhead on a real nats-server
# ---------------------------------------------------------------------------


async def dispatch_overhead(n_jobs: int, window_ms: float) -> dict:
    from loranet.runtime import Runtime
    from loranet_ops.servers import NatsServer, free_port
    from services.scheduler.handlers import SchedulerService
    from services.scheduler.settings import SchedulerSettings

    node_key = Identity.from_seed(b"k" * 32)
    client = Identity.from_seed(b"c" * 32)
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(free_port(), Path(tmp) / "nats")
        server.start()
        try:
            settings = SchedulerSettings(
                nats_url=server.url,
                require_escrow=False,
                reserve_escrow=False,
                batch_window_ms=window_ms,
                log_level="ERROR",
                drain_timeout_s=1,
            )
            async with Runtime("scheduler", settings) as rt:
                sched = SchedulerService(rt, settings, Identity.generate())
                fetched: dict[str, float] = {}
                acked: dict[str, float] = {}
                on_job = sched.on_job

                async def timed_on_job(job, delivery):
                    fetched[job.job_id] = time.perf_counter()
                    await on_job(job, delivery)

                sched.on_job = timed_on_job  # type: ignore[method-assign]
                publish = rt.publish

                async def timed_publish(subject, message, msg_id=None):
                    await publish(subject, message, msg_id)
                    if isinstance(message, p.WorkBatch):
                        t = time.perf_counter()
                        for seg in message.segments:
                            for job in seg.jobs:
                                acked[job.job_id] = t

                rt.publish = timed_publish  # type: ignore[method-assign]
                hb = sign(
                    p.NodeHeartbeat(
                        node_id="bench-node",
                        node_key=node_key.public,
                        payout_address="0x" + "1" * 40,
                        model_ids=[MODEL],
                        device="cpu",
                        memory_free=0,
                        adapters_hot=[],
                        slots_total=10_000,
                        slots_free=10_000,
                        queue_depth=0,
                        tokens_per_s=0,
                        at=time.time() + 3600,
                    ),
                    node_key,
                )
                kv = await rt.js.key_value(p.NODES_BUCKET)
                await kv.put("bench-node", codec.encode(hb))
                await sched.start()
                await rt.mount(sched.routes())
                js = rt.js
                now = time.time()
                for _k in range(n_jobs):  # paced: one job every 2 ms, as a steady stream
                    job = sign(
                        p.JobRequest(
                            job_id=p.new_job_id(),
                            client_key=client.public,
                            client_address="0x" + "2" * 40,
                            model_id=MODEL,
                            adapter_id="",
                            prompt="hi",
                            max_tokens=8,
                            max_fee=1,
                            created_at=now,
                            expires_at=now + 600,
                        ),
                        client,
                    )
                    await js.publish(p.JOBS_SUBMIT.pattern, codec.encode(job), headers={"Nats-Msg-Id": job.job_id})
                    await asyncio.sleep(0.002)
                deadline = time.monotonic() + 30
                while len(acked) < n_jobs and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                lat = sorted((acked[j] - fetched[j]) * 1000 for j in acked if j in fetched)
        finally:
            server.stop()
    return {
        "jobs": len(lat),
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p90_ms": lat[int(0.9 * (len(lat) - 1))] if lat else float("nan"),
    }


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller admission and dispatch runs (< 1 minute)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--adapters", type=int, default=500)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--adapter-slots", type=int, default=64, help="adapters a node keeps loaded (LRU)")
    ap.add_argument("--node-capacity", type=int, default=8, help="jobs a node may hold (loranet policy)")
    ap.add_argument("--load-ms", type=float, default=50.0)
    ap.add_argument("--ms-per-token", type=float, default=0.5, help="node time per token (2,000 tokens/s per node)")
    ap.add_argument("--load", type=float, default=0.6, help="offered load as a fraction of the token capacity")
    ap.add_argument("--window-ms", type=float, default=20.0)
    ap.add_argument("--max-batch-jobs", type=int, default=64)
    ap.add_argument("--aging-s", type=float, default=1.0)
    ap.add_argument(
        "--cold-penalty", type=float, default=0.25, help="load fraction a hot node may exceed a cold one by"
    )
    ap.add_argument("--heartbeat-s", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    policies = ["loranet", "round-robin", "random"]
    rate, sims = run_policies(args, policies)
    sweep = []
    for slots in (16, 32, 64):
        for load in (0.5, 0.7):
            sub = argparse.Namespace(**{**vars(args), "adapter_slots": slots, "load": load})
            _, res = run_policies(sub, ["loranet", "round-robin"])
            sweep.append(
                {
                    "adapter_slots": slots,
                    "offered_load": load,
                    "loads_per_1k": {k: v["adapter_loads_per_1k_jobs"] for k, v in res.items()},
                    "p99_queue_ms": {k: v["p99_queue_ms"] for k, v in res.items()},
                }
            )

    n_adm = 3_000 if args.quick else 10_000
    raw = signed_jobs(n_adm, args.adapters, args.clients, args.seed)
    admission(raw[:200], args.nodes, 100, False)  # warm-up
    per_window = 100  # ~ a 20 ms window at 5,000 jobs/s
    reps = 2 if args.quick else 3
    admitted = max(admission(raw, args.nodes, per_window, False) for _ in range(reps))
    admitted_asm = max(admission(raw, args.nodes, per_window, True) for _ in range(reps))
    admitted_wall = max(admission(raw, args.nodes, per_window, False, clock=time.perf_counter) for _ in range(reps))

    n_disp = 200 if args.quick else 1000
    overhead0 = asyncio.run(dispatch_overhead(n_disp, 0.0))
    overhead20 = asyncio.run(dispatch_overhead(n_disp, 20.0))

    result = {
        "workload": {
            "jobs": args.jobs,
            "adapters": args.adapters,
            "zipf_s": args.zipf,
            "clients": args.clients,
            "nodes": args.nodes,
            "adapter_slots": args.adapter_slots,
            "load_ms": args.load_ms,
            "ms_per_token": args.ms_per_token,
            "offered_load": args.load,
            "arrival_rate_per_s": rate,
        },
        "admitted_jobs_per_s": admitted,
        "admitted_jobs_per_s_with_batch_encode": admitted_asm,
        "admitted_jobs_per_s_wall_clock": admitted_wall,
        "adapter_loads_per_1k_jobs": {pol: sims[pol]["adapter_loads_per_1k_jobs"] for pol in policies},
        "p99_queue_ms": {pol: sims[pol]["p99_queue_ms"] for pol in policies},
        "p50_queue_ms": {pol: sims[pol]["p50_queue_ms"] for pol in policies},
        "utilization": {pol: sims[pol]["utilization"] for pol in policies},
        "makespan_s": {pol: sims[pol]["makespan_s"] for pol in policies},
        "dispatch_overhead_ms_p50": overhead0["p50_ms"],
        "dispatch_overhead_ms_p90": overhead0["p90_ms"],
        "dispatch_latency_ms_p50_window_20ms": overhead20["p50_ms"],
        "dispatch_jobs_measured": overhead0["jobs"],
        "loads_ratio_round_robin_over_loranet": sims["round-robin"]["adapter_loads"]
        / max(sims["loranet"]["adapter_loads"], 1),
        "loads_ratio_random_over_loranet": sims["random"]["adapter_loads"] / max(sims["loranet"]["adapter_loads"], 1),
        "plan_ms_per_tick": sims["loranet"]["plan_ms_per_tick"],
        "sweep": sweep,
        "load_average_1m": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    w = result["workload"]
    print(
        f"{w['jobs']} jobs, {w['adapters']} adapters (zipf s={w['zipf_s']}), {w['clients']} clients, "
        f"{w['nodes']} nodes x {w['adapter_slots']} adapter slots; load {w['load_ms']:.0f} ms/adapter, "
        f"{w['ms_per_token']} ms/token; arrivals {w['arrival_rate_per_s']:.0f}/s ({w['offered_load']:.0%} of "
        "token capacity)"
    )
    print()
    base = sims["loranet"]
    print(
        f"{'policy':<12} {'loads/1k':>9} {'vs loranet':>10} {'p50 queue':>10} {'p99 queue':>10} {'p99 vs loranet':>14} "
        f"{'util':>6} {'makespan':>9}"
    )
    for pol in policies:
        s = sims[pol]
        print(
            f"{pol:<12} {s['adapter_loads_per_1k_jobs']:>9.1f} "
            f"{s['adapter_loads'] / max(base['adapter_loads'], 1):>9.1f}x "
            f"{s['p50_queue_ms']:>8.1f}ms {s['p99_queue_ms']:>8.1f}ms "
            f"{s['p99_queue_ms'] / max(base['p99_queue_ms'], 1e-9):>13.1f}x "
            f"{s['utilization']:>6.2f} {s['makespan_s']:>8.1f}s"
        )
    print()
    print()
    print("sweep (loranet vs round-robin):")
    print(
        f"{'slots':>5} {'load':>5} {'loads/1k lora':>13} {'loads/1k rr':>11} {'fewer loads':>11} "
        f"{'p99 lora':>9} {'p99 rr':>9} {'p99 rr/lora':>11}"
    )
    for row in sweep:
        lo, rr = row["loads_per_1k"], row["p99_queue_ms"]
        print(
            f"{row['adapter_slots']:>5} {row['offered_load']:>5.1f} {lo['loranet']:>13.1f} {lo['round-robin']:>11.1f} "
            f"{lo['round-robin'] / max(lo['loranet'], 1e-9):>10.1f}x {rr['loranet']:>7.0f}ms "
            f"{rr['round-robin']:>7.0f}ms "
            f"{rr['round-robin'] / max(rr['loranet'], 1e-9):>10.2f}x"
        )
    print()
    print(
        f"admission, one core, in-process: {admitted:,.0f} jobs per CPU-second (decode + signature + timing + "
        "routing); "
        f"{admitted_asm:,.0f} with work-batch assembly + encode  [target >= 5,000]; wall-clock "
        f"{admitted_wall:,.0f} jobs/s "
        f"(load average {result['load_average_1m']:.1f} on this machine)"
    )
    print(f"routing plan: {base['plan_ms_per_tick']:.2f} ms per 20 ms tick in the simulation")
    print(
        f"dispatch overhead on loopback nats-server (handler entry -> work batch acked), {overhead0['jobs']} jobs: "
        f"p50 {overhead0['p50_ms']:.2f} ms, p90 {overhead0['p90_ms']:.2f} ms with window 0 [target p50 <= 2 ms]; "
        f"p50 {overhead20['p50_ms']:.2f} ms with the default 20 ms window"
    )


if __name__ == "__main__":
    sys.exit(main())
