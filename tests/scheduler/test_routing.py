"""Routing, fairness and aging in the scheduler's pure domain (no servers)."""

from __future__ import annotations

import math

from services.scheduler import domain as d

MODEL = "m" * 64
OTHER_MODEL = "o" * 64


def adapter(i: int) -> str:
    return f"{i:064x}"


def ticket(
    client: str = "a",
    ad: int = 1,
    at: float = 0.0,
    region: str = "",
    cost: int = 10,
    model: str = MODEL,
    job: str | None = None,
    expires: float = math.inf,
) -> d.Ticket:
    ticket.n += 1
    return d.Ticket(
        job_id=job or f"{ticket.n:032x}",
        client=client,
        model_id=model,
        adapter_id=adapter(ad) if ad else "",
        region=region,
        cost=cost,
        admitted_at=at,
        expires_at=expires,
    )


ticket.n = 0


def node(
    node_id: str,
    capacity: int = 8,
    outstanding: int = 0,
    hot: tuple[int, ...] = (),
    region: str = "",
    models: tuple[str, ...] = (MODEL,),
    device: str = "cpu",
    memory: int | None = None,
) -> d.NodeView:
    return d.NodeView(
        node_id=node_id,
        model_ids=frozenset(models),
        capacity=capacity,
        outstanding=outstanding,
        adapters_hot=frozenset(adapter(a) for a in hot),
        region=region,
        device=device,
        memory_free=memory,
    )


def routed(plan: list[d.Assignment]) -> dict[str, str]:
    return {t.job_id: a.node_id for a in plan for t in a.tickets}


def test_group_goes_to_the_node_with_the_adapter_hot():
    q = d.RoutingQueue(max_batch_jobs=64, cold_penalty=math.inf)
    jobs = [ticket(ad=7) for _ in range(5)]
    for t in jobs:
        q.push(t)
    plan = q.plan([node("n1", outstanding=2), node("n2", hot=(7,), outstanding=6), node("n3", outstanding=1)], now=0.1)
    # The hot node first, as far as its room goes (8 - 6); the rest spills to the least-loaded node.
    assert [(a.node_id, len(a.tickets)) for a in plan] == [("n2", 2), ("n3", 3)]
    assert len(q) == 0


def test_cold_adapter_goes_to_least_loaded_capable_node_and_becomes_hot_in_the_plan():
    q = d.RoutingQueue(max_batch_jobs=4, cold_penalty=math.inf)
    for _ in range(6):
        q.push(ticket(ad=3))
    nodes = [node("n1", outstanding=5), node("n2", outstanding=1), node("n3", outstanding=2, region="eu")]
    plan = q.plan(nodes, now=0.0)
    by_node = {}
    for a in plan:
        by_node.setdefault(a.node_id, 0)
        by_node[a.node_id] += len(a.tickets)
    # n2 is least loaded; once it took the adapter it stays preferred while it has room (7 slots)
    assert by_node == {"n2": 6}
    assert all(len(a.tickets) <= 4 for a in plan) and len(plan) == 2


def test_hot_node_wins_until_it_is_cold_penalty_fuller():
    req = d.Requirements(model_id=MODEL, adapter_id=adapter(1))
    hot = node("hot", capacity=8, outstanding=3, hot=(1,))
    cold = node("cold", capacity=8, outstanding=0)
    assert d.choose_node(req, [hot, cold], cold_penalty=0.5).node_id == "hot"  # 3/8 < 0/8 + 0.5
    assert d.choose_node(req, [hot, cold], cold_penalty=0.25).node_id == "cold"  # 3/8 > 0/8 + 0.25
    assert d.choose_node(req, [hot, cold]).node_id == "hot"  # default: hot while it has room


def test_capability_model_region_device_memory_and_avoid():
    req = d.Requirements(model_id=MODEL, adapter_id=adapter(1), region="eu", adapter_bytes=100, devices=("cuda",))
    nodes = [
        node("wrong-model", models=(OTHER_MODEL,), region="eu", device="cuda:0", memory=10**9),
        node("wrong-region", region="us", device="cuda:0", memory=10**9),
        node("cpu", region="eu", device="cpu"),
        node("small", region="eu", device="cuda:0", memory=50),
        node("ok", region="eu", device="cuda:0", memory=10**9, outstanding=7),
    ]
    assert d.choose_node(req, nodes).node_id == "ok"
    # a hot adapter needs no new memory
    hot_small = node("small", region="eu", device="cuda:0", memory=50, hot=(1,))
    assert d.choose_node(req, nodes[:3] + [hot_small]).node_id == "small"
    assert d.choose_node(d.Requirements(model_id=MODEL, avoid=frozenset({"ok"})), [nodes[4]]) is None
    # no region named: any region
    assert d.choose_node(d.Requirements(model_id=MODEL), [node("us", region="us")]).node_id == "us"


def test_balances_load_across_nodes_for_many_adapters():
    q = d.RoutingQueue(max_batch_jobs=64)
    for i in range(40):
        q.push(ticket(ad=i))
    plan = q.plan([node(f"n{i}", capacity=16) for i in range(4)], now=0.0)
    counts: dict[str, int] = {}
    for a in plan:
        counts[a.node_id] = counts.get(a.node_id, 0) + len(a.tickets)
    assert sum(counts.values()) == 40
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_back_pressure_when_every_node_is_full():
    q = d.RoutingQueue()
    for _ in range(3):
        q.push(ticket())
    assert q.plan([node("n1", outstanding=8), node("n2", outstanding=9)], now=0.0) == []
    assert len(q) == 3
    assert q.plan([], now=0.0) == [] and len(q) == 3


def test_one_clients_flood_does_not_starve_others():
    q = d.RoutingQueue(max_batch_jobs=4)
    for i in range(200):  # the flood: one client, many adapters, queued first
        q.push(ticket(client="flood", ad=i % 50, at=0.0))
    others = [ticket(client=f"c{i}", ad=100 + i, at=0.5) for i in range(4)]
    for t in others:
        q.push(t)
    # Room for only 8 jobs this round: the four small clients must be in it.
    plan = q.plan([node("n1", capacity=8)], now=0.5)
    sent = routed(plan)
    assert len(sent) == 8
    assert all(t.job_id in sent for t in others)
    # Over many rounds each client gets an equal share while it has work.
    q2 = d.RoutingQueue(max_batch_jobs=8)
    for _i in range(400):
        q2.push(ticket(client="flood", ad=1, at=0.0))
    for _i in range(40):
        q2.push(ticket(client="small", ad=1, at=0.0))
    first = [t.client for a in q2.plan([node("n1", capacity=40)], now=0.0) for t in a.tickets]
    assert first.count("small") == 20 and first.count("flood") == 20


def test_idle_client_banks_no_credit():
    q = d.RoutingQueue(max_batch_jobs=4)
    for _ in range(8):
        q.push(ticket(client="busy"))
    q.plan([node("n1", capacity=4)], now=0.0)  # busy has been served 40
    for _ in range(8):
        q.push(ticket(client="late"))
    # late starts at the current virtual time, not at 0: it does not get 4 rounds in a row.
    sent = [t.client for a in q.plan([node("n1", capacity=4)], now=0.0) for t in a.tickets]
    assert sent.count("late") == 2 and sent.count("busy") == 2


def test_aging_lets_a_rare_adapter_overtake_popular_groups():
    q = d.RoutingQueue(max_batch_jobs=8, aging_s=1.0)
    rare = ticket(client="a", ad=999, at=0.0)
    q.push(rare)
    for k in range(10):
        for _ in range(8):
            q.push(ticket(client="a", ad=k, at=1.4))
    # Fresh full groups score 1.0 + tiny wait; the rare job waited 1.5 s: 1.5 + 1/8.
    plan = q.plan([node("n1", capacity=8)], now=1.5)
    assert routed(plan) == {rare.job_id: "n1"} or rare.job_id in routed(plan)
    # Without aging it would lose to a full group.
    q2 = d.RoutingQueue(max_batch_jobs=8, aging_s=1000.0)
    rare2 = ticket(client="a", ad=999, at=0.0)
    q2.push(rare2)
    for _ in range(8):
        q2.push(ticket(client="a", ad=5, at=1.4))
    assert rare2.job_id not in routed(q2.plan([node("n1", capacity=8)], now=1.5))


def test_expire_discard_and_regions():
    q = d.RoutingQueue()
    old = ticket(expires=5.0)
    keep = ticket(expires=50.0, region="eu")
    q.push(old)
    q.push(keep)
    assert q.expire(10.0) == [old] and len(q) == 1
    assert q.plan([node("us", region="us")], now=10.0) == []
    assert q.discard(keep) and len(q) == 0 and not q.discard(keep)


def test_affinity_map_keeps_routes_newer_than_the_heartbeat():
    aff = d.AffinityMap(slots=3)
    aff.routed("n1", "a", at=1.0)
    aff.routed("n1", "b", at=3.0)
    aff.heartbeat("n1", ["x"], at=2.0)  # taken at t=2: knows nothing of b, and a was evicted
    assert set(aff.hot("n1")) == {"x", "b"}
    for name, at in (("c", 4.0), ("d", 5.0)):
        aff.routed("n1", name, at)
    assert list(aff.hot("n1")) == ["b", "c", "d"]
    aff.forget("n1")
    assert not aff.hot("n1")


def test_outstanding_counts_and_ignores_late_dispatched_echo():
    out = d.Outstanding()
    out.dispatched("j1", "n1", 1.0)
    out.on_event("j2", "dispatched", "n1", 1.0)
    assert out.count("n1") == 2
    out.on_event("j1", "result", "n1", 2.0)
    out.on_event("j1", "dispatched", "n1", 1.0)  # its own echo arriving after the result
    assert out.count("n1") == 1 and out.jobs("n1") == ["j2"]
    out.dispatched("j2", "n2", 3.0)  # re-dispatched elsewhere
    assert out.count("n1") == 0 and out.count("n2") == 1
    out.dispatched("j3", "n2", 9.0)
    out.node_idle("n2", before=5.0)  # its durable is empty: j2 (sent at 3) was answered, j3 maybe not yet
    assert out.jobs("n2") == ["j3"]
    out.prune(10_000.0)
    assert out.count("n2") == 0


def test_unfinished_stages():
    assert not any(d.needs_node([s]) for s in ("result", "failed", "verdict", "settled", "refunded", "rejected"))
    assert d.needs_node([]) and d.needs_node(["admitted", "dispatched"])
    # the node's result stored before the scheduler's own dispatched event: done, whatever came last
    assert not d.needs_node(["admitted", "result", "dispatched"])


def test_a_rerun_avoids_every_node_of_the_operators_that_failed_it():
    """Issue 18: a re-run never goes to a node with the same operator (payout address) as a node that failed
    the job, whether the re-run names the operator or only the failed node's live heartbeat shows it."""
    from loranet import protocol as p
    from tests import factories

    def hb(node_id: str, payout: str) -> p.NodeHeartbeat:
        return factories.heartbeat(node_id, payout_address=payout)

    a, b, c = ("0x" + x * 40 for x in "abc")
    live = [hb("n1", a), hb("n2", a), hb("n3", b), hb("n4", c), hb("n5", c)]
    job = factories.job()
    rerun = p.RerunRequest(job_id=job.job_id, attempt=1, request=job, exclude=["n1"], at=0.0)
    assert d.rerun_avoid(rerun, live) == {"n1", "n2"}  # n1's operator runs n2 too
    named = rerun.model_copy(update={"exclude": ["gone"], "exclude_operators": ["0x" + "C" * 40]})
    assert d.rerun_avoid(named, live) == {"gone", "n4", "n5"}  # the failed node is offline: its operator named


def test_a_heartbeat_that_contradicts_its_declaration_is_refused():
    """Issue 18: the scheduler routes no work to a node whose heartbeat claims hardware, region or memory it
    never declared in the Registry."""
    from loranet import protocol as p
    from tests import factories

    hb = factories.heartbeat("n1", device="cuda:0", memory_free=40 * 2**30, region="eu-west")
    declared = p.Stake(address=factories.ADDR, stake=1, device="cuda", memory_mb=81_920, region="eu-west")
    assert d.declaration_problem(hb, declared, required=True) is None
    assert d.declaration_problem(hb, None, required=False) is None  # undeclared: allowed unless required
    assert "nothing declared" in (d.declaration_problem(hb, None, required=True) or "")
    assert "region" in (d.declaration_problem(hb.model_copy(update={"region": "us-east"}), declared, False) or "")
    assert "device" in (d.declaration_problem(hb.model_copy(update={"device": "cpu"}), declared, False) or "")
    more = hb.model_copy(update={"memory_free": 100 * 2**30})
    assert "MiB" in (d.declaration_problem(more, declared, False) or "")
    # a node that declared the precision it serves must heartbeat that precision
    bf16 = declared.model_copy(update={"dtype": "bfloat16"})
    assert d.declaration_problem(hb.model_copy(update={"dtype": "bfloat16"}), bf16, True) is None
    assert "dtype 'float16', declared 'bfloat16'" in (
        d.declaration_problem(hb.model_copy(update={"dtype": "float16"}), bf16, False) or ""
    )
