"""Scheduler logic with no I/O: admission rules, node choice, batch assembly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loranet import protocol as p
from loranet.signing import SignatureInvalid, verify


class Refusal(Exception):
    """A signed, well-formed job that the network will not run; `reason` goes to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_signature(job: p.JobRequest) -> None:
    """Raise SignatureInvalid unless the client's signature covers the job."""
    verify(job, job.client_key, p.DOMAIN_JOB_REQUEST)


def check_timing(job: p.JobRequest, now: float, max_skew_s: float) -> None:
    if job.expires_at <= now:
        raise Refusal(f"job expired at {job.expires_at:.0f} (now {now:.0f})")
    if job.created_at > now + max_skew_s:
        raise Refusal(f"job created_at {job.created_at:.0f} is in the future (now {now:.0f})")
    if job.expires_at <= job.created_at:
        raise Refusal("expires_at must be after created_at")


def check_adapter(job: p.JobRequest, manifest: p.AdapterManifest | None) -> None:
    if not job.adapter_id:
        return
    if manifest is None:
        raise Refusal(f"unknown adapter {job.adapter_id}: register it with the datastore first")
    if manifest.base_model_id != job.model_id:
        raise Refusal(f"adapter {manifest.name} targets base model {manifest.base_model_id[:12]}…, not {job.model_id[:12]}…")


def check_escrow(job: p.JobRequest, escrow: int) -> None:
    if escrow < job.max_fee:
        raise Refusal(f"escrow {escrow} of {job.client_address} does not cover max_fee {job.max_fee}: deposit more OPEN")


def live_nodes(heartbeats: Iterable[p.NodeHeartbeat], now: float, ttl_s: float) -> list[p.NodeHeartbeat]:
    """Nodes whose signed heartbeat is fresh."""
    out = []
    for hb in heartbeats:
        if now - hb.at > ttl_s:
            continue
        try:
            verify(hb, hb.node_key, p.DOMAIN_HEARTBEAT)
        except SignatureInvalid:
            continue
        out.append(hb)
    return out


@dataclass(frozen=True)
class Load:
    """What the scheduler itself has sent a node since its last heartbeat."""

    pending: int = 0


def choose_node(job: p.JobRequest, nodes: Sequence[p.NodeHeartbeat], pending: dict[str, int]) -> str | None:
    """The node for `job`: one serving its model (and region, if named) with room,
    preferring those with the adapter hot, then the least loaded."""
    best: tuple[float, str] | None = None
    for node in nodes:
        if job.model_id not in node.model_ids:
            continue
        if job.region and node.region != job.region:
            continue
        capacity = max(node.slots_total, 1)
        load = (node.queue_depth + pending.get(node.node_id, 0)) / capacity
        hot = (not job.adapter_id) or job.adapter_id in node.adapters_hot
        score = load + (0.0 if hot else 1.0)
        if best is None or score < best[0] or (score == best[0] and node.node_id < best[1]):
            best = (score, node.node_id)
    return best[1] if best else None


def assemble_batch(node_id: str, model_id: str, jobs: Sequence[p.JobRequest], batch_id: str, scheduler_id: str,
                   now: float) -> p.WorkBatch:
    """One work batch: jobs grouped into segments by adapter, in arrival order."""
    by_adapter: dict[str, list[p.JobRequest]] = {}
    for job in jobs:
        by_adapter.setdefault(job.adapter_id, []).append(job)
    segments = [p.WorkSegment(adapter_id=a, jobs=js) for a, js in by_adapter.items()]
    return p.WorkBatch(batch_id=batch_id, node_id=node_id, model_id=model_id, segments=segments,
                       dispatched_at=now, scheduler_id=scheduler_id)
