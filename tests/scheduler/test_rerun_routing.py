"""A re-run (a job whose result was finally rejected) never goes back to a node that failed it."""

from __future__ import annotations

import math

from loranet import protocol as p
from services.scheduler import domain as d
from tests import factories

MODEL = factories.MODEL


def node(node_id: str, capacity: int = 4, outstanding: int = 0) -> d.NodeView:
    return d.NodeView(node_id=node_id, model_ids=frozenset({MODEL}), capacity=capacity, outstanding=outstanding)


def test_a_rerun_avoids_every_node_that_failed_it_and_waits_when_none_is_left():
    job = factories.job(adapter_id="")
    q = d.RoutingQueue(max_batch_jobs=8, cold_penalty=math.inf)
    q.push(d.Ticket.of(job, 0.0, attempt=2, avoid={"n1", "n2"}))
    q.push(d.Ticket(job_id="2" * 32, client="b", model_id=MODEL, adapter_id=""))
    # n1 is the least loaded, but it failed the re-run: the re-run waits for n3; the fresh job takes n1.
    plan = q.plan([node("n1"), node("n2")], now=0.0)
    assert {t.job_id: a.node_id for a in plan for t in a.tickets} == {"2" * 32: "n1"}
    assert len(q) == 1
    plan = q.plan([node("n1"), node("n2"), node("n3", outstanding=3)], now=1.0)
    assert [(a.node_id, [(t.job_id, t.attempt) for t in a.tickets]) for a in plan] == [("n3", [(job.job_id, 2)])]


def test_the_work_batch_names_the_attempt_and_the_excluded_nodes():
    first, rerun = factories.job(adapter_id=""), factories.job(adapter_id="")
    batch = d.assemble_batch(
        "n3", MODEL, [first, rerun], p.new_job_id(), "scheduler", 0.0, {rerun.job_id: (1, frozenset({"n1"}))}
    )
    assert batch.attempt_of(first.job_id) == 0 and batch.attempt_of(rerun.job_id) == 1
    assert batch.attempts == [p.JobAttempt(job_id=rerun.job_id, attempt=1, exclude=["n1"])]
    # A batch of first attempts only is byte for byte what it was before attempts existed.
    plain = d.assemble_batch("n3", MODEL, [first], p.new_job_id(), "scheduler", 0.0)
    assert "attempts" not in plain.to_wire()


def test_a_rerun_taken_back_from_a_dead_node_needs_a_node_again():
    assert not d.needs_node(["admitted", "dispatched", "result", "verdict"])
    assert d.needs_node(["admitted", "dispatched", "result", "verdict", "rerun", "dispatched"])
    assert not d.needs_node(["admitted", "dispatched", "result", "verdict", "rerun", "dispatched", "result"])


def test_outstanding_counts_a_rerun_dispatched_after_the_first_answer():
    o = d.Outstanding()
    job = "1" * 32
    o.on_event(job, "dispatched", "n1", 0.0)
    o.on_event(job, "result", "n1", 1.0)
    assert o.count("n1") == 0
    o.on_event(job, "rerun", "n1", 2.0)
    o.on_event(job, "dispatched", "n2", 3.0)
    assert o.count("n2") == 1
