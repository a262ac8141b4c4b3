"""Job records assembled from jobs.events (JetStream EVENTS → the DATASTORE consumer)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from ds_helpers import CLIENT, KEY, event, inference_result, job_request, lifecycle

from loranet import codec
from loranet import protocol as p
from loranet.errors import RemoteError
from loranet.runtime import request
from services.datastore import domain


async def publish(ds, ev: p.JobEvent, msg_id: str | None = None) -> None:
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await ds.rt.js.publish(p.job_events(KEY, ev.job_id), codec.encode(ev), headers=headers)


async def get_job(ds, job_id: str) -> p.JobRecord:
    return await request(ds.nc, p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), timeout=10, to=p.datastore_job_get(KEY))


async def wait_for(ds, job_id: str, predicate, timeout: float = 15.0) -> p.JobRecord:
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        try:
            record = await get_job(ds, job_id)
            if predicate(record):
                return record
        except RemoteError as exc:
            if exc.code != "not_found":
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never matched; last record: {record}")


async def test_record_from_shuffled_duplicated_events(datastore):
    ds = datastore
    job_id = p.new_job_id()
    events = lifecycle(job_id)
    stream = events + events[1:4] + [event(job_id, "dispatched", node_id="late-node", reason="late")]
    random.Random(7).shuffle(stream)
    # Not de-duplicated by JetStream (no msg ids): the datastore must be idempotent itself.
    for ev in stream:
        await publish(ds, ev)
    record = await wait_for(ds, job_id, lambda r: len(r.verdicts) == 2 and r.status == "settled" and len(r.stages) == 5)
    req = codec.decode(p.JobRequest, events[0].body)
    assert record.request == req
    assert record.result == codec.decode(p.InferenceResult, events[2].body)
    assert [v.verifier_id for v in record.verdicts] == ["verifier-1", "verifier-2"]
    assert record.receipt is not None and record.receipt.status == "settled"
    assert record.stages == ["admitted", "dispatched", "result", "verdict", "settled"]
    assert record.node_id == "node-1"
    assert record.updated_at == max(e.at for e in events + stream)
    # Redelivery / replays change nothing.
    for ev in events:
        await publish(ds, ev)
    await asyncio.sleep(0.5)
    assert await get_job(ds, job_id) == record
    # The per-client index.
    listed = await request(
        ds.nc, p.DATASTORE_JOB_LIST, p.JobList(client_address=CLIENT.lower()), to=p.datastore_job_list(KEY)
    )
    assert [(j.job_id, j.status, j.adapter_id) for j in listed.jobs] == [(job_id, "settled", req.adapter_id)]
    # another client's id lists nothing of this address's jobs (datastore.job.list.<client_id>)
    other = await request(
        ds.nc, p.DATASTORE_JOB_LIST, p.JobList(client_address=CLIENT.lower()), to=p.datastore_job_list("ef" * 32)
    )
    assert other.jobs == []


async def test_a_record_is_answered_to_its_own_client_only(datastore):
    """datastore.job.get.<client_id>: the one subject a client's NATS identity may ask on; another
    client's id gets not_found, so a job id learnt elsewhere (on chain) does not open its output."""
    ds = datastore
    job_id = p.new_job_id()
    for ev in lifecycle(job_id):
        await publish(ds, ev)
    record = await wait_for(ds, job_id, lambda r: r.status == "settled")
    assert record.result is not None and record.result.output_text
    for other in ("ef" * 32, "00" * 32):
        with pytest.raises(RemoteError) as err:
            await request(
                ds.nc, p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), timeout=10, to=p.datastore_job_get(other)
            )
        assert err.value.code == "not_found" and "this client" in err.value.message


async def test_status_never_regresses_and_terminal_stages(datastore):
    ds = datastore
    settled, failed, rejected = p.new_job_id(), p.new_job_id(), p.new_job_id()
    # settled arrives first, then the earlier stages.
    for ev in reversed(lifecycle(settled)):
        await publish(ds, ev)
    await wait_for(ds, settled, lambda r: len(r.stages) == 5)
    await publish(ds, event(settled, "failed", reason="late noise"))
    rec = await wait_for(ds, settled, lambda r: "failed" in r.stages)
    assert rec.status == "settled"

    req = job_request(failed)
    await publish(ds, event(failed, "admitted", req))
    await publish(ds, event(failed, "dispatched", node_id="node-9"))
    await publish(ds, event(failed, "failed", reason="node-9 timed out; no node left"))
    rec = await wait_for(ds, failed, lambda r: r.status == "failed")
    assert rec.reason == "node-9 timed out; no node left" and rec.node_id == "node-9" and rec.result is None
    await publish(ds, event(failed, "refunded", body=_refund(failed)))
    rec = await wait_for(ds, failed, lambda r: r.status == "refunded")
    assert rec.receipt.status == "refunded"

    await publish(ds, event(rejected, "rejected", reason="escrow does not cover max_fee"))
    rec = await wait_for(ds, rejected, lambda r: r.status == "rejected")
    assert rec.request is None and rec.reason == "escrow does not cover max_fee"


def _refund(job_id):
    from ds_helpers import receipt

    return receipt(job_id, "refunded")


async def test_request_recovered_from_result_and_client_index_paging(datastore):
    ds = datastore
    other = "0x" + "99" * 20
    t0 = time.time() - 100
    ids = [p.new_job_id() for _ in range(5)]
    for i, job_id in enumerate(ids):
        req = job_request(job_id, created_at=t0 + i)
        # Only the result (which embeds the request) reaches the datastore for the last job.
        if i == 4:
            await publish(ds, event(job_id, "result", inference_result(req)))
        else:
            await publish(ds, event(job_id, "admitted", req))
    stranger = p.new_job_id()
    await publish(ds, event(stranger, "admitted", job_request(stranger, client=other)))
    rec = await wait_for(ds, ids[4], lambda r: r.status == "result")
    assert rec.request is not None and rec.request.job_id == ids[4]

    async def page(**kw):
        reply = await request(
            ds.nc, p.DATASTORE_JOB_LIST, p.JobList(client_address=CLIENT, **kw), to=p.datastore_job_list(KEY)
        )
        return reply.jobs

    deadline = time.monotonic() + 10
    while len(await page()) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    first = await page(limit=3)
    assert [j.job_id for j in first] == ids[::-1][:3]
    rest = await page(limit=3, before=first[-1].created_at)
    assert [j.job_id for j in rest] == ids[::-1][3:]
    # Retention: every job key and the index carry a TTL.
    ttl = await ds.redis.ttl(domain.job_key(ids[0]))
    assert 0 < ttl <= ds.settings.job_retention_s
    assert 0 < await ds.redis.ttl(domain.client_jobs_key(CLIENT)) <= ds.settings.job_retention_s
    # An expired record disappears from the index too.
    await ds.redis.delete(domain.job_key(ids[4]))
    assert [j.job_id for j in await page(limit=1)] == [ids[3]]
    with pytest.raises(RemoteError) as err:
        await get_job(ds, ids[4])
    assert err.value.code == "not_found" and err.value.field == "job_id"


async def test_unrecordable_events_are_dead_lettered(datastore):
    ds = datastore
    job_id, other_id = p.new_job_id(), p.new_job_id()
    bad = [
        event(job_id, "admitted"),  # missing body
        event(job_id, "result", job_request(job_id)),  # wrong body type
        event(job_id, "admitted", job_request(other_id)),  # body for another job
        event(job_id, "refunded", body=_settled(job_id)),  # receipt status disagrees
    ]
    for ev in bad:
        await publish(ds, ev)
    await ds.rt.js.publish(p.job_events(KEY, other_id), codec.encode(event(job_id, "dispatched")))  # wrong subject
    await publish(ds, event(job_id, "dispatched", node_id="n1"))
    rec = await wait_for(ds, job_id, lambda r: r.status == "dispatched")
    deadline = time.monotonic() + 10
    while ds.rt.stats["job-events"].dead_lettered < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert ds.rt.stats["job-events"].dead_lettered == 5
    assert rec.stages == ["dispatched"] and rec.request is None


def _settled(job_id):
    from ds_helpers import receipt

    return receipt(job_id, "settled")
