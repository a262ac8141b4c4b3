"""Scheduler logic with no I/O: admission rules, routing, fairness, batch assembly.

Routing works on plain values so it can be tested (and benchmarked) without a
server:

- `Ticket`: one admitted job waiting to be dispatched.
- `NodeView`: what the scheduler knows of one live node (heartbeat + the jobs
  it has been sent and not yet answered + adapters predicted hot).
- `AffinityMap`: per node, the adapters it reported hot plus those routed to
  it since (a heartbeat lags the routing by up to one heartbeat period).
- `RoutingQueue`: admitted tickets grouped by (model, adapter, region); each
  `plan()` hands groups to nodes: the node with the adapter hot and room,
  else the least-loaded capable node.  Which groups go first when room is
  short is decided by start-time fair queuing across clients (one client's
  flood cannot starve the others) and by queue aging (a rare adapter's lone
  job overtakes a fresh full group of a popular one after `aging_s`).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loranet import protocol as p
from loranet.errors import Refused
from loranet.signing import SignatureInvalid


class AdmissionRefused(Refused):
    """A signed, well-formed job that the network will not run; `reason` goes to the client."""


# ---------------------------------------------------------------------------
# Admission
# ---------------------------------------------------------------------------


def check_signature(job: p.JobRequest) -> None:
    """Raise SignatureInvalid unless the client's signature covers the job."""
    job.verify()


def check_prompt(job: p.JobRequest) -> None:
    """An empty prompt (and no sealed one) is refused before anything is reserved or billed."""
    if not job.prompt.strip() and job.sealed_prompt is None:
        raise AdmissionRefused("prompt: must not be empty")


def check_timing(job: p.JobRequest, now: float, max_skew_s: float) -> None:
    if job.expires_at <= now:
        raise AdmissionRefused(f"job expired at {job.expires_at:.0f} (now {now:.0f})")
    if job.created_at > now + max_skew_s:
        raise AdmissionRefused(f"job created_at {job.created_at:.0f} is in the future (now {now:.0f})")
    if job.expires_at <= job.created_at:
        raise AdmissionRefused("expires_at must be after created_at")


def check_adapter(job: p.JobRequest, manifest: p.AdapterManifest | None) -> None:
    if not job.adapter_id:
        return
    if manifest is None:
        raise AdmissionRefused(f"unknown adapter {job.adapter_id}: register it with the datastore first")
    if manifest.base_model_id != job.model_id:
        raise AdmissionRefused(
            f"adapter {manifest.name} targets base model {manifest.base_model_id[:12]}…, not {job.model_id[:12]}…"
        )


def check_tokenizer(job: p.JobRequest, model: p.ModelManifest | None) -> None:
    """A job naming a tokenizer must name its model's (when the model is registered)."""
    if model is not None and (problem := job.tokenizer_problem(model.tokenizer_id)):
        raise AdmissionRefused(problem)


def check_escrow(job: p.JobRequest, escrow: int) -> None:
    if escrow < job.max_fee:
        raise AdmissionRefused(
            f"escrow {escrow} of {job.client_address} does not cover max_fee {job.max_fee}: deposit more OPEN"
        )


def live_nodes(heartbeats: Iterable[p.NodeHeartbeat], now: float, ttl_s: float) -> list[p.NodeHeartbeat]:
    """Nodes whose signed heartbeat is fresh."""
    out = []
    for hb in heartbeats:
        if now - hb.at > ttl_s:
            continue
        try:
            hb.verify()
        except SignatureInvalid:
            continue
        out.append(hb)
    return out


def job_cost(job: p.JobRequest) -> int:
    """Token estimate of a job for fair shares: prompt bytes (a bound on its tokens for byte-level
    tokenizers, where every token is at least one byte) plus max_tokens."""
    # A sealed prompt's ciphertext is its bytes plus a small fixed overhead.
    prompt = len(job.sealed_prompt.ciphertext) if job.sealed_prompt is not None else len(job.prompt)
    return prompt + job.max_tokens


# ---------------------------------------------------------------------------
# Routing values
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class Ticket:
    """One admitted job waiting for a node.  `payload` is the job itself (opaque here)."""

    job_id: str
    client: str
    model_id: str
    adapter_id: str
    region: str = ""
    cost: int = 1
    admitted_at: float = 0.0
    expires_at: float = math.inf
    # The dead node this job was taken back from ("" for a new job): for the record only.
    origin: str = ""
    payload: Any = None
    # The one node this job may go to ("" = any): a confidential job is sealed to it.
    node_id: str = ""
    # A re-run after rejected results: which attempt, and the nodes that failed it (never chosen again).
    attempt: int = 0
    avoid: frozenset[str] = frozenset()

    @classmethod
    def of(cls, job: p.JobRequest, now: float, origin: str = "", attempt: int = 0, avoid: Iterable[str] = ()) -> Ticket:
        return cls(
            job_id=job.job_id,
            client=job.client_address.lower(),
            model_id=job.model_id,
            adapter_id=job.adapter_id,
            region=job.region,
            cost=job_cost(job),
            admitted_at=now,
            expires_at=job.expires_at,
            origin=origin,
            payload=job,
            node_id=job.node_id,
            attempt=attempt,
            avoid=frozenset(avoid),
        )

    @property
    def group(self) -> GroupKey:
        return (self.model_id, self.adapter_id, self.region, self.node_id, self.avoid)


GroupKey = tuple[str, str, str, str, frozenset[str]]


@dataclass(frozen=True)
class NodeView:
    """A live node as routing sees it.  `capacity` and `outstanding` count jobs."""

    node_id: str
    model_ids: frozenset[str]
    capacity: int
    outstanding: int = 0
    adapters_hot: Collection[str] = frozenset()
    region: str = ""
    device: str = ""
    memory_free: int | None = None  # None: not reported (CPU nodes)
    # When the adapter a cold load would evict was last used (-inf: a slot is free).
    evict_at: float = -math.inf

    @property
    def room(self) -> int:
        return self.capacity - self.outstanding


def node_view(hb: p.NodeHeartbeat, outstanding: int, affinity: AffinityMap, jobs_per_slot: int) -> NodeView:
    """A NodeView from a heartbeat, the jobs dispatched to it and not answered, and its predicted-hot adapters."""
    return NodeView(
        node_id=hb.node_id,
        model_ids=frozenset(hb.model_ids),
        capacity=max(hb.slots_total, 1) * jobs_per_slot,
        outstanding=outstanding,
        adapters_hot=affinity.hot(hb.node_id),
        region=hb.region,
        device=hb.device,
        memory_free=hb.memory_free if hb.device.startswith("cuda") else None,
        evict_at=affinity.evict_at(hb.node_id),
    )


@dataclass(frozen=True)
class Requirements:
    """What a node needs to serve a group of jobs."""

    model_id: str
    adapter_id: str = ""
    region: str = ""
    avoid: frozenset[str] = frozenset()
    adapter_bytes: int = 0  # memory a cold adapter takes to load
    devices: tuple[str, ...] = ()  # accepted device classes (prefixes); () = any
    node_id: str = ""  # this node only ("" = any)


def capable(node: NodeView, req: Requirements, hot: bool) -> bool:
    if req.model_id not in node.model_ids or node.node_id in req.avoid:
        return False
    if req.node_id and node.node_id != req.node_id:
        return False
    if req.region and node.region != req.region:
        return False
    if req.devices and not node.device.startswith(req.devices):
        return False
    if not hot and node.memory_free is not None and node.memory_free < req.adapter_bytes:
        return False
    return True


def choose_node(
    req: Requirements,
    nodes: Sequence[NodeView],
    rooms: dict[str, int] | None = None,
    loads: dict[str, int] | None = None,
    extra_hot: dict[str, set[str]] | None = None,
    cold_penalty: float = math.inf,
) -> NodeView | None:
    """The node for a group: one with the adapter hot and room, else the least-loaded capable node with room.

    A hot node wins unless its load (outstanding / capacity) exceeds a cold
    node's by more than `cold_penalty` (inf: hot always wins while it has room),
    so a popular adapter spreads to a second node before its first one queues
    up.  Between equally loaded cold nodes, the one whose eviction victim was
    used longest ago (a free slot first): the cluster's caches then behave like
    one LRU instead of N independent ones.  `rooms`/`loads` override the views' own figures while a plan is being
    built; `extra_hot` holds adapters already sent to a node in this plan.
    """
    best: tuple[float, int, float, float, str] | None = None
    chosen = None
    for node in nodes:
        room = rooms.get(node.node_id, 0) if rooms is not None else node.room
        if room <= 0:
            continue
        hot = (
            not req.adapter_id
            or req.adapter_id in node.adapters_hot
            or (extra_hot is not None and req.adapter_id in extra_hot.get(node.node_id, ()))
        )
        if not capable(node, req, hot):
            continue
        load = loads.get(node.node_id, node.outstanding) if loads is not None else node.outstanding
        fraction = load / max(node.capacity, 1)
        if hot:
            key = (fraction, 0, fraction, 0.0, node.node_id)
        else:
            key = (fraction + cold_penalty, 1, fraction, node.evict_at, node.node_id)
        if best is None or key < best:
            best, chosen = key, node
    return chosen


class AffinityMap:
    """Per node, the adapters predicted hot: its last heartbeat's list plus what was routed there since."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._hot: dict[str, OrderedDict[str, float]] = {}

    def heartbeat(self, node_id: str, adapters_hot: Sequence[str], at: float) -> None:
        old = self._hot.get(node_id, OrderedDict())
        # What the node reports, with the last use this scheduler knows of, plus what was routed
        # after the node took this heartbeat (not in it yet); least recently used first.
        used = {a: old.get(a, 0.0) for a in adapters_hot}
        used.update((a, t) for a, t in old.items() if t > at)
        lru = OrderedDict(sorted(used.items(), key=lambda item: item[1]))
        self._trim(lru, max(self.slots, len(adapters_hot)))
        self._hot[node_id] = lru

    def routed(self, node_id: str, adapter_id: str, at: float) -> None:
        if not adapter_id:
            return
        lru = self._hot.setdefault(node_id, OrderedDict())
        lru[adapter_id] = at
        lru.move_to_end(adapter_id)
        self._trim(lru, self.slots)

    def hot(self, node_id: str) -> Collection[str]:
        return self._hot.get(node_id, {}).keys()

    def evict_at(self, node_id: str) -> float:
        """Last use of the adapter the node would evict for a new one; -inf while it has a free slot."""
        lru = self._hot.get(node_id)
        if not lru or len(lru) < self.slots:
            return -math.inf
        return next(iter(lru.values()))

    def forget(self, node_id: str) -> None:
        self._hot.pop(node_id, None)

    @staticmethod
    def _trim(lru: OrderedDict[str, float], cap: int) -> None:
        while len(lru) > cap:
            lru.popitem(last=False)


# ---------------------------------------------------------------------------
# The routing queue
# ---------------------------------------------------------------------------


@dataclass
class Assignment:
    """Tickets for one node and one base model: one work batch."""

    node_id: str
    model_id: str
    tickets: list[Ticket] = field(default_factory=list)


class _Group:
    __slots__ = ("key", "by_client", "size")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        self.by_client: dict[str, deque[Ticket]] = {}
        self.size = 0

    def oldest(self) -> float:
        return min(q[0].admitted_at for q in self.by_client.values())


class RoutingQueue:
    """Admitted tickets waiting for nodes; `plan()` decides what goes where now.

    Fairness: each client has a virtual service clock (`served`, in token
    estimates); when room is short the client with the least service goes
    next (start-time fair queuing; a client that was idle re-enters at the
    current minimum, so it banks no credit).  Aging: among one client's groups
    the score is `waited / aging_s + fill`, so a full group of a popular adapter
    is worth `aging_s` of waiting and no group waits much longer than that
    behind others of the same client.  Node choice: see `choose_node` (a hot node
    is preferred until it is `cold_penalty` fuller than a cold one).
    """

    def __init__(
        self,
        max_batch_jobs: int = 64,
        aging_s: float = 1.0,
        adapter_bytes: int = 0,
        devices: Sequence[str] = (),
        cold_penalty: float = 0.25,
    ) -> None:
        self.max_batch_jobs = max_batch_jobs
        self.aging_s = aging_s
        self.cold_penalty = cold_penalty
        self.adapter_bytes = adapter_bytes
        self.devices = tuple(devices)
        self._groups: dict[GroupKey, _Group] = {}
        self._client_groups: dict[str, set[GroupKey]] = {}
        self._client_pending: dict[str, int] = {}
        self.served: dict[str, float] = {}
        self._vclock = 0.0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def pending_of(self, client: str) -> int:
        return self._client_pending.get(client, 0)

    def push(self, ticket: Ticket) -> None:
        key = ticket.group
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key)
        queue = group.by_client.get(ticket.client)
        if queue is None:
            queue = group.by_client[ticket.client] = deque()
        queue.append(ticket)
        group.size += 1
        self._size += 1
        client = ticket.client
        if not self._client_pending.get(client):
            # (Re-)entering client: start at the current virtual time, no banked credit.
            active = [self.served[c] for c, n in self._client_pending.items() if n and c in self.served]
            self.served[client] = max(self.served.get(client, -math.inf), min(active) if active else self._vclock)
        self._client_pending[client] = self._client_pending.get(client, 0) + 1
        self._client_groups.setdefault(client, set()).add(key)

    def discard(self, ticket: Ticket) -> bool:
        """Remove a waiting ticket (its handler was cancelled); False if it is not here."""
        group = self._groups.get(ticket.group)
        queue = group.by_client.get(ticket.client) if group else None
        if group is None or not queue:
            return False
        try:
            queue.remove(ticket)
        except ValueError:
            return False
        self._removed(group, ticket.client)
        return True

    def expire(self, now: float) -> list[Ticket]:
        """Take out every ticket whose job has expired."""
        gone = []
        for group in list(self._groups.values()):
            for client, queue in list(group.by_client.items()):
                if any(t.expires_at <= now for t in queue):
                    keep = deque(t for t in queue if t.expires_at > now)
                    dropped = [t for t in queue if t.expires_at <= now]
                    queue.clear()
                    queue.extend(keep)
                    for t in dropped:
                        gone.append(t)
                        self._removed(group, client)
        return gone

    def _removed(self, group: _Group, client: str) -> None:
        group.size -= 1
        self._size -= 1
        if not group.by_client[client]:
            del group.by_client[client]
            self._client_groups[client].discard(group.key)
        if group.size == 0:
            del self._groups[group.key]
        left = self._client_pending[client] - 1
        if left:
            self._client_pending[client] = left
        else:
            del self._client_pending[client]
            self._client_groups.pop(client, None)
            self._vclock = max(self._vclock, self.served.pop(client, self._vclock))

    def _score(self, group: _Group, now: float) -> float:
        return (now - group.oldest()) / self.aging_s + min(group.size, self.max_batch_jobs) / self.max_batch_jobs

    def _requirements(self, key: GroupKey) -> Requirements:
        model_id, adapter_id, region, node_id, avoid = key
        return Requirements(
            model_id=model_id,
            adapter_id=adapter_id,
            region=region,
            node_id=node_id,
            avoid=avoid,
            adapter_bytes=self.adapter_bytes if adapter_id else 0,
            devices=self.devices,
        )

    def plan(self, nodes: Sequence[NodeView], now: float) -> list[Assignment]:
        """Take tickets out of the queue and assign them to nodes with room.

        Tickets that no node can take now stay queued (back-pressure).  At most
        `max_batch_jobs` tickets per assignment; a node may get several.
        """
        rooms = {n.node_id: n.room for n in nodes if n.room > 0}
        if not rooms or not self._size:
            return []
        loads = {n.node_id: n.outstanding for n in nodes}
        extra_hot: dict[str, set[str]] = {}
        open_batch: dict[tuple[str, str], Assignment] = {}
        out: list[Assignment] = []
        blocked: set[GroupKey] = set()
        while rooms and self._size:
            client = self._next_client(blocked)
            if client is None:
                break
            best: tuple[float, GroupKey] | None = None
            for key in self._client_groups[client]:
                if key in blocked:
                    continue
                score = self._score(self._groups[key], now)
                if best is None or score > best[0]:
                    best = (score, key)
            assert best is not None
            key = best[1]
            req = self._requirements(key)
            node = choose_node(req, nodes, rooms, loads, extra_hot, self.cold_penalty)
            if node is None:
                blocked.add(key)
                continue
            batch = open_batch.get((node.node_id, key[0]))
            if batch is None or len(batch.tickets) >= self.max_batch_jobs:
                batch = open_batch[(node.node_id, key[0])] = Assignment(node.node_id, key[0])
                out.append(batch)
            take = min(
                rooms[node.node_id],
                self.max_batch_jobs - len(batch.tickets),
                self._share(node, req, nodes, rooms, loads, extra_hot),
            )
            taken = self._take(self._groups[key], take)
            batch.tickets.extend(taken)
            rooms[node.node_id] -= len(taken)
            if rooms[node.node_id] <= 0:
                del rooms[node.node_id]
            loads[node.node_id] = loads.get(node.node_id, 0) + len(taken)
            if key[1]:
                extra_hot.setdefault(node.node_id, set()).add(key[1])
        return out

    def _share(
        self,
        node: NodeView,
        req: Requirements,
        nodes: Sequence[NodeView],
        rooms: dict[str, int],
        loads: dict[str, int],
        extra_hot: dict[str, set[str]],
    ) -> int:
        """How many of a group's tickets `node` takes before the next-best node would win them.

        With the adapter hot there once it has the first ticket, it keeps taking
        until it is fuller than the runner-up's score (load, plus `cold_penalty`
        if the runner-up is cold): a group hot everywhere (the base model) is
        spread, a cold one is not split across several loads.
        """
        alt = choose_node(
            replace(req, avoid=req.avoid | {node.node_id}), nodes, rooms, loads, extra_hot, self.cold_penalty
        )
        if alt is None:
            return self.max_batch_jobs
        alt_hot = (
            not req.adapter_id or req.adapter_id in alt.adapters_hot or req.adapter_id in extra_hot.get(alt.node_id, ())
        )
        alt_score = loads.get(alt.node_id, alt.outstanding) / max(alt.capacity, 1) + (
            0.0 if alt_hot else self.cold_penalty
        )
        if math.isinf(alt_score):
            return self.max_batch_jobs
        return max(1, math.floor(alt_score * node.capacity - loads.get(node.node_id, node.outstanding) + 1e-9))

    def _next_client(self, blocked: set[GroupKey]) -> str | None:
        best: tuple[float, str] | None = None
        for client, keys in self._client_groups.items():
            if not keys or keys <= blocked:
                continue
            cand = (self.served.get(client, self._vclock), client)
            if best is None or cand < best:
                best = cand
        return best[1] if best else None

    def _take(self, group: _Group, k: int) -> list[Ticket]:
        """Up to k tickets of one group, the least-served client first, one at a time."""
        taken: list[Ticket] = []
        while len(taken) < k and group.size:
            client = min(group.by_client, key=lambda c: (self.served.get(c, self._vclock), c))
            ticket = group.by_client[client].popleft()
            self.served[client] = self.served.get(client, self._vclock) + ticket.cost
            taken.append(ticket)
            self._removed(group, client)
        return taken


# ---------------------------------------------------------------------------
# Batches and node failure
# ---------------------------------------------------------------------------


def assemble_batch(
    node_id: str,
    model_id: str,
    jobs: Sequence[p.JobRequest],
    batch_id: str,
    scheduler_id: str,
    now: float,
    attempts: Mapping[str, tuple[int, Iterable[str]]] | None = None,
) -> p.WorkBatch:
    """One work batch: jobs grouped into segments by adapter, in arrival order; `attempts` names the
    re-runs among them (job id → (attempt, nodes that failed it))."""
    by_adapter: dict[str, list[p.JobRequest]] = {}
    for job in jobs:
        by_adapter.setdefault(job.adapter_id, []).append(job)
    segments = [p.WorkSegment(adapter_id=a, jobs=js) for a, js in by_adapter.items()]
    reruns = [p.JobAttempt(job_id=j, attempt=a, exclude=sorted(x)) for j, (a, x) in (attempts or {}).items() if a]
    return p.WorkBatch(
        batch_id=batch_id,
        node_id=node_id,
        model_id=model_id,
        segments=segments,
        dispatched_at=now,
        scheduler_id=scheduler_id,
        attempts=reruns,
    )


def declaration_problem(hb: p.NodeHeartbeat, declared: p.Stake | None, required: bool) -> str | None:
    """Why a heartbeat contradicts what its node declared in the Registry (None: it does not). The device
    must begin with the declared one, the region and the dtype equal theirs, the free memory not exceed the
    declared memory. Undeclared nodes pass unless `required`."""
    if declared is None or not declared.device:
        return "nothing declared in the Registry" if required else None
    if not hb.device.lower().startswith(declared.device.lower()):
        return f"device {hb.device!r}, declared {declared.device!r}"
    if hb.region != declared.region:
        return f"region {hb.region!r}, declared {declared.region!r}"
    if hb.memory_free > declared.memory_mb * 2**20:
        return f"{hb.memory_free >> 20} MiB free, declared {declared.memory_mb} MiB"
    if declared.dtype and hb.dtype != declared.dtype:
        return f"dtype {hb.dtype or '(none)'!r}, declared {declared.dtype!r}"
    return None


def rerun_avoid(rerun: p.RerunRequest, live: Iterable[p.NodeHeartbeat]) -> frozenset[str]:
    """The nodes a re-run must not go to: those that failed the job, and every node of their operators (the
    payout addresses named in the re-run, and those the failed nodes' live heartbeats show)."""
    live = list(live)
    operators = {a.lower() for a in rerun.exclude_operators}
    operators |= {hb.payout_address.lower() for hb in live if hb.node_id in rerun.exclude}
    return frozenset(rerun.exclude) | {hb.node_id for hb in live if hb.payout_address.lower() in operators}


# A job whose latest event is one of these still needs a node.
UNFINISHED_STAGES: frozenset[str] = frozenset({"admitted", "dispatched"})


def needs_node(stages: Iterable[str]) -> bool:
    """Whether a job taken back from a dead node must be dispatched again, from all its events' stages.

    All of them, not the latest: a fast node's `result` can be stored before the
    scheduler's own `dispatched` event for the same job.  A job re-run after rejected
    results counts from its last `rerun` event (its current attempt).
    """
    seen = list(stages)
    if "rerun" in seen:
        seen = seen[len(seen) - seen[::-1].index("rerun") :]
    return all(stage in UNFINISHED_STAGES for stage in seen)


class Outstanding:
    """Jobs dispatched to each node and not yet answered (result, failed or any later stage)."""

    def __init__(self, horizon_s: float = 900.0, remember: int = 100_000) -> None:
        self.horizon_s = horizon_s
        self.remember = remember
        self._by_node: dict[str, dict[str, float]] = {}
        self._node_of: dict[str, str] = {}
        # Recently answered jobs: a `dispatched` event can arrive after the node's result.
        self._answered: OrderedDict[str, None] = OrderedDict()

    def dispatched(self, job_id: str, node_id: str, at: float) -> None:
        if job_id in self._answered:
            return
        old = self._node_of.get(job_id)
        if old is not None and old != node_id:
            self._by_node.get(old, {}).pop(job_id, None)
        self._node_of[job_id] = node_id
        self._by_node.setdefault(node_id, {})[job_id] = at

    def answered(self, job_id: str) -> None:
        self._answered[job_id] = None
        if len(self._answered) > self.remember:
            self._answered.popitem(last=False)
        node = self._node_of.pop(job_id, None)
        if node is not None:
            self._by_node.get(node, {}).pop(job_id, None)

    def on_event(self, job_id: str, stage: str, node_id: str, at: float) -> None:
        if stage == "rerun":  # answered, but sent again: its next `dispatched` counts
            self.answered(job_id)
            self._answered.pop(job_id, None)
        elif stage == "dispatched" and node_id:
            self.dispatched(job_id, node_id, at)
        elif stage not in UNFINISHED_STAGES:
            self.answered(job_id)

    def count(self, node_id: str) -> int:
        return len(self._by_node.get(node_id, ()))

    def jobs(self, node_id: str) -> list[str]:
        return list(self._by_node.get(node_id, ()))

    def node_idle(self, node_id: str, before: float) -> None:
        """The node's durable holds no batch: every job sent to it before `before` was answered
        (it acknowledges a batch after its last job's event), even if that event was missed here."""
        jobs = self._by_node.get(node_id, {})
        for job_id in [j for j, at in jobs.items() if at < before]:
            del jobs[job_id]
            self._node_of.pop(job_id, None)

    def prune(self, now: float) -> None:
        for _node_id, jobs in self._by_node.items():
            for job_id in [j for j, at in jobs.items() if now - at > self.horizon_s]:
                del jobs[job_id]
                self._node_of.pop(job_id, None)
