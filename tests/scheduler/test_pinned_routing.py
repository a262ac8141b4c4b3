"""A job that names its node (a confidential job, sealed to that node) goes there only, waiting while it is full."""

from __future__ import annotations

import math
import time

from loranet import confidential as c
from loranet import protocol as p
from loranet.signing import Identity, sign
from services.scheduler import domain as d

MODEL = "m" * 64


def node(node_id: str, capacity: int = 4, outstanding: int = 0) -> d.NodeView:
    return d.NodeView(node_id=node_id, model_ids=frozenset({MODEL}), capacity=capacity, outstanding=outstanding)


def pinned(job_id: str, node_id: str) -> d.Ticket:
    return d.Ticket(job_id=job_id, client="a", model_id=MODEL, adapter_id="", node_id=node_id)


def test_pinned_tickets_go_to_their_node_only_and_wait_while_it_is_full():
    q = d.RoutingQueue(max_batch_jobs=8, cold_penalty=math.inf)
    q.push(pinned("1" * 32, "n2"))
    q.push(d.Ticket(job_id="2" * 32, client="a", model_id=MODEL, adapter_id=""))
    # n2 is full: the free job goes to n1, the pinned one waits (it is not given to n1).
    plan = q.plan([node("n1"), node("n2", outstanding=4)], now=0.0)
    assert {t.job_id: a.node_id for a in plan for t in a.tickets} == {"2" * 32: "n1"}
    assert len(q) == 1
    plan = q.plan([node("n1"), node("n3")], now=1.0)  # n2 gone: still waiting
    assert plan == [] and len(q) == 1
    plan = q.plan([node("n1"), node("n2", outstanding=1)], now=2.0)
    assert [(a.node_id, [t.job_id for t in a.tickets]) for a in plan] == [("n2", ["1" * 32])]


def test_ticket_of_a_confidential_job_is_pinned_and_costed_by_its_ciphertext():
    client, node_key = Identity.generate(), Identity.generate()
    job_id, now = p.new_job_id(), time.time()
    job = sign(
        p.JobRequest(
            job_id=job_id,
            client_key=client.public,
            client_address="0x" + "1" * 40,
            model_id="ab" * 32,
            adapter_id="",
            prompt="",
            max_tokens=8,
            max_fee=1,
            created_at=now,
            expires_at=now + 60,
            node_id="n2",
            sealed_prompt=c.seal_prompt(job_id, client.public, "x" * 100, node_key.public, []),
        ),
        client,
    )
    t = d.Ticket.of(job, now)
    assert t.node_id == "n2" and t.group[3] == "n2"
    assert t.cost >= 108  # the prompt's length shows through the ciphertext anyway
