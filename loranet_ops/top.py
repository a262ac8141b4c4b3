"""`loranet top`: a live terminal view of a running network (rich), refreshed every few seconds.

It reads what operators may read, connected as the devnet's `admin` NATS user (or --nats): JetStream's
counters (jobs submitted, receipts published, what each durable consumer still has to do), the node
registry (KV nodes: tokens/s, queues, heartbeats), the verifiers' per-node statistics (KV verifier-stats:
accepted, rejected, audit failures) and the latest epochs on chain (settlement.epochs). Rates are the
difference of two readings over the time between them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from loranet import codec
from loranet import protocol as p
from loranet.client import JobFailed, registry_values
from loranet.runtime import request
from services.verifier.settings import VerifierSettings

VERIFIER_STATS_BUCKET = VerifierSettings.model_fields["stats_bucket"].default
CONSUMERS = (p.SCHEDULER_JOBS, p.SCHEDULER_RERUNS, p.VERIFIER_RESULTS, p.SETTLEMENT_VERDICTS, p.DATASTORE_EVENTS)


@dataclass
class Snapshot:
    at: float
    jobs_submitted: int = 0  # the JOBS stream's last sequence: every job ever published
    receipts: int = 0  # the RECEIPTS stream's last sequence: jobs settled or refunded
    queues: dict[str, int] = field(default_factory=dict)  # durable consumer → messages not yet done
    nodes: list[dict[str, Any]] = field(default_factory=list)
    verifiers: dict[str, dict[str, int]] = field(default_factory=dict)  # node → accepted/rejected/audited
    epochs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def _kv_values(js: Any, bucket: str) -> list[bytes]:
    try:
        return [v for v in await registry_values(js, bucket) if v]
    except JobFailed:  # no such bucket yet
        return []


async def snapshot(nc: Any) -> Snapshot:
    """One reading of the network (whatever cannot be read is named in `problems`, not raised)."""
    js = nc.jetstream()
    snap = Snapshot(at=time.time())
    for stream, attr in (("JOBS", "jobs_submitted"), ("RECEIPTS", "receipts")):
        try:
            setattr(snap, attr, (await js.stream_info(stream)).state.last_seq)
        except Exception as exc:
            snap.problems.append(f"stream {stream}: {type(exc).__name__}")
    consumers = [(c.stream, c.durable) for c in CONSUMERS]
    try:
        consumers += [("WORK", c.name) for c in await js.consumers_info("WORK")]
    except Exception as exc:
        snap.problems.append(f"WORK consumers: {type(exc).__name__}")
    for stream, durable in consumers:
        try:
            info = await js.consumer_info(stream, durable)
            snap.queues[f"{stream}/{durable}"] = info.num_pending + info.num_ack_pending
        except Exception:
            continue
    now = time.time()
    for raw in await _kv_values(js, p.NODES_BUCKET):
        try:
            hb = codec.decode(p.NodeHeartbeat, raw)
        except codec.DecodeError:
            continue
        snap.nodes.append(hb.summary(now))  # every heartbeat, stale ones too: an operator's view
    snap.nodes.sort(key=lambda n: n["node_id"])
    for raw in await _kv_values(js, VERIFIER_STATS_BUCKET):
        try:
            record = json.loads(raw)
            row = snap.verifiers.setdefault(str(record["node_id"]), {"accepted": 0, "rejected": 0, "audited": 0})
            for key in row:
                row[key] += int(record.get(key, 0))
        except (ValueError, KeyError, TypeError):
            continue
    try:
        epochs = (await request(nc, p.SETTLEMENT_EPOCHS, p.EpochList(limit=5), 5.0)).epochs
        snap.epochs = [
            {"seq": e.seq, "jobs": e.jobs, "total_fees": str(e.total_fees), "tx_hash": e.tx_hash, "at": e.at}
            for e in epochs
        ]
    except Exception as exc:
        snap.problems.append(f"epochs: {type(exc).__name__}")
    return snap


def rates(prev: Snapshot | None, cur: Snapshot) -> dict[str, float]:
    """Jobs/s submitted and settled between two readings; tokens/s now (the nodes' own measure)."""
    tokens = sum(n["tokens_per_s"] for n in cur.nodes)
    if prev is None or cur.at <= prev.at:
        return {"jobs_per_s": 0.0, "settled_per_s": 0.0, "tokens_per_s": round(tokens, 1)}
    dt = cur.at - prev.at
    return {
        "jobs_per_s": round(max(cur.jobs_submitted - prev.jobs_submitted, 0) / dt, 2),
        "settled_per_s": round(max(cur.receipts - prev.receipts, 0) / dt, 2),
        "tokens_per_s": round(tokens, 1),
    }


def as_json(prev: Snapshot | None, cur: Snapshot) -> dict[str, Any]:
    rejected = sum(v["rejected"] for v in cur.verifiers.values())
    return {
        "at": cur.at,
        **rates(prev, cur),
        "jobs_submitted": cur.jobs_submitted,
        "receipts": cur.receipts,
        "queues": cur.queues,
        "nodes": cur.nodes,
        "verifier_rejections": rejected,
        "verifiers": cur.verifiers,
        "epochs": cur.epochs,
        "problems": cur.problems,
    }


def render(prev: Snapshot | None, cur: Snapshot, where: str) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    r = rates(prev, cur)
    rejected = sum(v["rejected"] for v in cur.verifiers.values())
    head = (
        f"[b]{r['jobs_per_s']:.2f}[/b] jobs/s in   [b]{r['settled_per_s']:.2f}[/b] settled/s   "
        f"[b]{r['tokens_per_s']:.1f}[/b] tokens/s   {cur.jobs_submitted} jobs, {cur.receipts} receipts   "
        f"verifier rejections [b]{rejected}[/b]"
    )
    nodes = Table(
        "node", "device", "region", "tokens/s", "queue", "slots free", "adapters hot", "heartbeat", "verdicts"
    )
    for n in cur.nodes:
        v = cur.verifiers.get(n["node_id"], {})
        nodes.add_row(
            n["node_id"],
            n["device"],
            n["region"] or "-",
            str(n["tokens_per_s"]),
            str(n["queue_depth"]),
            f"{n['slots_free']}/{n['slots_total']}",
            str(n["adapters_hot"]),
            f"{n['heartbeat_age_s']}s ago",
            f"{v.get('accepted', 0)} ok / {v.get('rejected', 0)} rejected" if v else "-",
        )
    queues = Table("consumer", "to do")
    for name, depth in sorted(cur.queues.items()):
        queues.add_row(name, str(depth))
    epochs = Table("epoch", "jobs", "fees (wei)", "transaction")
    for e in cur.epochs:
        epochs.add_row(str(e["seq"]), str(e["jobs"]), e["total_fees"], e["tx_hash"][:18] + "…")
    parts: list[Any] = [head, nodes, queues, epochs]
    if cur.problems:
        parts.append("[yellow]" + "; ".join(cur.problems) + "[/yellow]")
    return Panel(Group(*parts), title=f"loranet top · {where} · {time.strftime('%H:%M:%S')}", expand=True)


async def run(url: str, where: str, interval: float, once: bool, json_out: bool) -> None:
    import nats

    async def quiet(exc: Exception) -> None:  # nats-py's default prints a traceback per failed attempt
        pass

    # nats-py tries the first connection max_reconnect_attempts times (default 60, 2 s apart) even with
    # allow_reconnect off: a devnet that is down is said within about a second.
    nc = await nats.connect(
        url, allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=2, reconnect_time_wait=0.5, error_cb=quiet
    )
    try:
        prev = await snapshot(nc)
        if once:
            await asyncio.sleep(min(interval, 1.0))  # a second reading, so the rates mean something
            cur = await snapshot(nc)
            if json_out:
                print(json.dumps(as_json(prev, cur)))
            else:
                from rich.console import Console

                Console().print(render(prev, cur, where))
            return
        from rich.live import Live

        with Live(render(None, prev, where), refresh_per_second=4, screen=False) as live:
            while True:
                await asyncio.sleep(interval)
                cur = await snapshot(nc)
                live.update(render(prev, cur, where))
                prev = cur
    finally:
        await nc.close()
