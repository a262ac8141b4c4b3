"""The service runtime against a real nats-server: pull loop, dead letters, endpoints, drain."""

from __future__ import annotations

import asyncio
import time

import msgpack
import nats
import pytest

from loranet import codec
from loranet import protocol as p
from loranet.errors import Refused, RemoteError, ServiceError
from loranet.protocol import Consumer
from loranet.runtime import Delivery, Endpoint, Pull, Runtime, request
from loranet.settings import CommonSettings

CLIENT = "c1" * 32  # the client id in the events' subject


def _event(job_id: str, stage: str = "admitted") -> p.JobEvent:
    return p.JobEvent(job_id=job_id, stage=stage, service="test", at=time.time())


async def _dead_letters(js, subject_filter: str = "dlq.>") -> list[p.DeadLetter]:
    sub = await js.pull_subscribe(subject_filter, stream="DEADLETTER")
    try:
        msgs = await sub.fetch(100, timeout=1)
    except Exception:
        return []
    return [codec.decode(p.DeadLetter, m.data) for m in msgs]


async def test_pull_loop_handles_poison_and_keeps_serving(nats_server):
    settings = CommonSettings(nats_url=nats_server.url, drain_timeout_s=2)
    seen: list[str] = []
    spec = Consumer(p.JOB_EVENTS_ALL, "probe", ack_wait_s=5, max_deliver=2)

    async def on_event(event: p.JobEvent, delivery: Delivery) -> None:
        if event.reason == "refuse":
            raise Refused("refused by test")
        if event.reason == "boom":
            raise RuntimeError("handler bug")
        seen.append(event.job_id)

    async with Runtime("probe", settings) as rt:
        await rt.mount([Pull("events", spec, on_event, slots=4)])
        good = [p.new_job_id() for _ in range(5)]
        await rt.nc.publish(
            p.job_events(CLIENT, good[0]), b"\xc1 not msgpack"
        )  # core publish still lands in the stream
        await rt.js.publish(p.job_events(CLIENT, good[0]), msgpack.packb({"v": 1, "job_id": "nope"}))
        await rt.js.publish(
            p.job_events(CLIENT, good[1]), codec.encode(_event(good[1]).model_copy(update={"reason": "refuse"}))
        )
        await rt.js.publish(
            p.job_events(CLIENT, good[2]), codec.encode(_event(good[2]).model_copy(update={"reason": "boom"}))
        )
        for job_id in good:
            await rt.publish(p.job_events(CLIENT, job_id), _event(job_id), msg_id=job_id)
        await rt.publish(
            p.job_events(CLIENT, good[0]), _event(good[0]), msg_id=good[0]
        )  # duplicate: dropped by JetStream
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(seen) < 5 or rt.stats["events"].dead_lettered < 4):
            await asyncio.sleep(0.1)
        assert sorted(seen) == sorted(good)
        letters = await _dead_letters(rt.js)
        reasons = sorted(d.reason.split(":")[0] for d in letters)
        assert len(letters) == 4, reasons
        assert any(d.reason.startswith("not_msgpack") for d in letters)
        assert any(d.reason.startswith("invalid") and "job_id" in d.reason for d in letters)
        assert any(d.reason == "refused by test" for d in letters)
        assert any("handler bug" in d.reason and d.deliveries == 2 for d in letters)


async def test_endpoint_typed_errors(nats_server):
    settings = CommonSettings(nats_url=nats_server.url)

    async def get_job(req: p.JobGet) -> p.JobRecord:
        if req.job_id.startswith("0"):
            raise ServiceError("not_found", f"no job {req.job_id}", "job_id")
        return p.JobRecord(job_id=req.job_id, status="admitted")

    async with Runtime("probe", settings) as rt:
        await rt.mount([Endpoint("job-get", p.DATASTORE_JOB_GET, get_job)])
        job_get = p.datastore_job_get(CLIENT)  # the endpoint listens on datastore.job.get.*
        nc = await nats.connect(nats_server.url)
        job_id = "f" + p.new_job_id()[1:]
        rec = await request(nc, p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), to=job_get)
        assert rec.job_id == job_id
        with pytest.raises(RemoteError) as err:
            await request(nc, p.DATASTORE_JOB_GET, p.JobGet(job_id="0" * 32), to=job_get)
        assert err.value.code == "not_found" and err.value.field == "job_id"
        reply = await nc.request(job_get, b"\x93garbage", timeout=5)
        assert codec.decode(p.ErrorReply, reply.data).code == "invalid"
        reply = await nc.request(job_get, b"x" * 100, timeout=5)
        assert codec.decode(p.ErrorReply, reply.data).code == "invalid"
        # $SRV discovery finds the service.
        ping = await nc.request("$SRV.PING.probe", b"", timeout=5)
        assert b"probe" in ping.data
        await nc.close()


@pytest.mark.parametrize("concurrency", [64, 1])
async def test_an_endpoint_serves_requests_at_once_up_to_its_concurrency(nats_server, concurrency):
    """nats-py hands an endpoint's requests over one at a time; the runtime runs each as its own task, so a
    slow request (settlement.reserve waiting for its batch) does not hold up the next, unless the endpoint
    asks for one at a time."""
    settings = CommonSettings(nats_url=nats_server.url)
    release = asyncio.Event()
    started: list[str] = []

    async def slow(req: p.BalanceGet) -> p.Balance:
        started.append(req.address)
        if len(started) == 1:
            await asyncio.wait_for(release.wait(), 10)
        return p.Balance(address=req.address, token=0, escrow=0, credit=0)

    async with Runtime("probe", settings) as rt:
        await rt.mount([Endpoint("balance", p.SETTLEMENT_BALANCE, slow, concurrency=concurrency)])
        nc = await nats.connect(nats_server.url)
        first = asyncio.ensure_future(request(nc, p.SETTLEMENT_BALANCE, p.BalanceGet(address="0x" + "1" * 40)))
        await asyncio.sleep(0.3)
        second = asyncio.ensure_future(request(nc, p.SETTLEMENT_BALANCE, p.BalanceGet(address="0x" + "2" * 40)))
        await asyncio.sleep(0.5)
        assert len(started) == (2 if concurrency > 1 else 1)  # the second runs while the first waits, or not
        release.set()
        assert {(await first).address, (await second).address} == {"0x" + "1" * 40, "0x" + "2" * 40}
        await nc.close()


async def test_drain_hands_back_inflight_work(nats_server):
    settings = CommonSettings(nats_url=nats_server.url, drain_timeout_s=0.5)
    spec = Consumer(p.JOB_EVENTS_ALL, "slow", ack_wait_s=30, max_deliver=5)
    started = asyncio.Event()
    handled: list[tuple[str, int]] = []

    async def slow(event: p.JobEvent, delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(3600)

    rt = Runtime("slow", settings)
    await rt.start()
    await rt.mount([Pull("events", spec, slow, slots=1)])
    job_id = p.new_job_id()
    await rt.publish(p.job_events(CLIENT, job_id), _event(job_id), msg_id=job_id)
    await asyncio.wait_for(started.wait(), 10)
    await rt.close()  # handler cannot finish in time: message is naked back

    async def quick(event: p.JobEvent, delivery: Delivery) -> None:
        handled.append((event.job_id, delivery.deliveries))

    async with Runtime("slow", settings) as rt2:
        await rt2.mount([Pull("events", spec, quick, slots=1)])
        deadline = time.monotonic() + 10
        while not handled and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert handled == [(job_id, 2)]


async def test_transient_failures_retry_past_max_deliver_then_succeed(nats_server):
    """A peer timing out is not the message's fault: it is retried beyond max_deliver, not dead-lettered."""
    from loranet.errors import Unavailable

    settings = CommonSettings(nats_url=nats_server.url, drain_timeout_s=2)
    spec = Consumer(p.JOB_EVENTS_ALL, "flaky", ack_wait_s=5, max_deliver=2, max_deliver_transient=20)
    attempts: list[int] = []

    async def flaky(event: p.JobEvent, delivery: Delivery) -> None:
        attempts.append(delivery.deliveries)
        if len(attempts) < 4:
            raise Unavailable("settlement did not answer")

    async with Runtime("flaky", settings) as rt:
        # Short retry delays for the test.
        await rt.mount([Pull("events", spec, flaky, slots=1)])
        job_id = p.new_job_id()
        await rt.publish(p.job_events(CLIENT, job_id), _event(job_id), msg_id=job_id)
        deadline = time.monotonic() + 40
        while len(attempts) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert attempts == [1, 2, 3, 4]
        assert rt.stats["events"].dead_lettered == 0
