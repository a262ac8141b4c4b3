"""The inference node over a real nats-server: SIGTERM mid-batch finishes or hands back, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from loranet import codec
from loranet import protocol as p
from loranet.errors import ServiceError
from loranet.model.adapters import adapter_to_blobs
from loranet.runtime import Endpoint, Runtime
from loranet.settings import CommonSettings
from services.inference.engine import Engine
from services.inference.handlers import InferenceService, load_identity
from services.inference.settings import InferenceSettings
from tests import factories


def _blob_endpoint(adapters, tampered: str) -> Endpoint:
    blobs = {aid: adapter_to_blobs(path) for _, path, aid in adapters}

    async def get_blob(req: p.AdapterGet) -> p.AdapterBlob:
        if req.adapter not in blobs:
            raise ServiceError("not_found", f"no adapter {req.adapter}", "adapter")
        config, weights = blobs[req.adapter]
        if req.adapter == tampered:
            weights = weights[:-4] + bytes(b ^ 1 for b in weights[-4:])
        return p.AdapterBlob(adapter_id=req.adapter, config=config, weights=weights)

    return Endpoint("adapter-blob", p.DATASTORE_ADAPTER_BLOB, get_blob)


async def _drain_stream(js, subject: str, stream: str, timeout: float = 1.5) -> list[bytes]:
    sub = await js.pull_subscribe(subject, stream=stream)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(64, timeout=0.5)
        except Exception:
            continue
        for m in msgs:
            await m.ack()
            out.append(m.data)
    await sub.unsubscribe()
    return out


def _batch(base, adapters, node_id, n, max_tokens, extra_segments=()):
    segs = []
    for k in range(3):
        jobs = [
            factories.job(
                model_id=base[1], adapter_id=adapters[k][2], prompt=f"job {k}.{i} says", max_tokens=max_tokens
            )
            for i in range(n // 3)
        ]
        segs.append(p.WorkSegment(adapter_id=adapters[k][2], jobs=jobs))
    segs.extend(extra_segments)
    return p.WorkBatch(
        batch_id=p.new_job_id(),
        node_id=node_id,
        model_id=base[1],
        segments=segs,
        dispatched_at=time.time(),
        scheduler_id="test",
    )


def _settings(nats_server, tmp_path, drain_timeout_s):
    return InferenceSettings(
        nats_url=nats_server.url,
        node_id="node-t",
        cache_dir=str(tmp_path / "cache"),
        state_dir=str(tmp_path / "state"),
        drain_timeout_s=drain_timeout_s,
        heartbeat_s=0.2,
        adapter_slots=2,
        max_running=16,
    )


async def _wait_running(engine, timeout=30.0):
    deadline = time.monotonic() + timeout
    while engine.running == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert engine.running > 0


async def test_sigterm_mid_batch_finishes_every_job(nats_server, tmp_path, base, adapters):
    settings = _settings(nats_server, tmp_path, drain_timeout_s=60)
    engine = await asyncio.to_thread(
        Engine, str(base[0]), base[1], "cpu", settings.cache_dir, config=settings.engine_config()
    )
    engine.start()
    tampered = adapters[5][2]
    bad_job = factories.job(model_id=base[1], adapter_id=tampered, prompt="x", max_tokens=4)
    wrong_model = factories.job(model_id="f" * 64, adapter_id="", prompt="x", max_tokens=4)
    batch = _batch(
        base,
        adapters,
        "node-t",
        9,
        48,
        [p.WorkSegment(adapter_id=tampered, jobs=[bad_job]), p.WorkSegment(adapter_id="", jobs=[wrong_model])],
    )
    loop = asyncio.get_running_loop()
    try:
        async with Runtime("datastore-stub", CommonSettings(nats_url=nats_server.url)) as ds:
            await ds.mount([_blob_endpoint(adapters, tampered)])
            rt = Runtime("inference", settings)
            await rt.start()
            node = InferenceService(rt, settings, engine, load_identity(settings))
            rt.spawn(node.heartbeat_loop(), name="heartbeat")
            await rt.mount(node.routes())
            serving = asyncio.ensure_future(rt.serve_forever())
            await rt.js.publish(p.work("node-t"), codec.encode(batch))
            await _wait_running(engine)
            hb = node.heartbeat()
            os.kill(os.getpid(), signal.SIGTERM)  # the runtime's handler: stop pulling, finish in-flight, drain
            await asyncio.wait_for(serving, 60)
            async with Runtime("checker", CommonSettings(nats_url=nats_server.url)) as chk:
                results = [
                    codec.decode(p.InferenceResult, d)
                    for d in await _drain_stream(chk.js, p.RESULTS_ALL.pattern, "RESULTS")
                ]
                events = [
                    codec.decode(p.JobEvent, d) for d in await _drain_stream(chk.js, p.JOB_EVENTS_ALL.pattern, "EVENTS")
                ]
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
        engine.stop()
    want = {j.job_id for seg in batch.segments[:3] for j in seg.jobs}
    assert sorted(r.job_id for r in results) == sorted(want)  # every job finished once
    assert all(r.finish_reason in ("length", "eos") for r in results)
    failed = {e.job_id: e.reason for e in events if e.stage == "failed"}
    assert set(failed) == {bad_job.job_id, wrong_model.job_id}
    assert "hash" in failed[bad_job.job_id].lower()
    assert "does not serve model" in failed[wrong_model.job_id]
    assert hb.slots_total == 16 and hb.queue_depth > 0


async def test_drain_timeout_hands_back_and_redelivery_dedups(nats_server, tmp_path, base, adapters):
    settings = _settings(nats_server, tmp_path, drain_timeout_s=0.3)
    engine = await asyncio.to_thread(
        Engine, str(base[0]), base[1], "cpu", settings.cache_dir, config=settings.engine_config()
    )
    engine.start()
    batch = _batch(base, adapters, "node-t", 6, 400)
    try:
        async with Runtime("datastore-stub", CommonSettings(nats_url=nats_server.url)) as ds:
            await ds.mount([_blob_endpoint(adapters, "")])
            async with Runtime("inference", settings) as rt:
                node = InferenceService(rt, settings, engine, load_identity(settings))
                await rt.mount(node.routes())
                await rt.js.publish(p.work("node-t"), codec.encode(batch))
                await _wait_running(engine)
            # Drained after 0.3 s: the unfinished jobs left the engine and the batch went back to JetStream.
            await asyncio.sleep(0.2)
            assert engine.queue_depth == 0
            async with Runtime("inference", settings.model_copy(update={"drain_timeout_s": 60})) as rt2:
                node2 = InferenceService(rt2, settings, engine, load_identity(settings))
                await rt2.mount(node2.routes())
                want = {j.job_id for seg in batch.segments for j in seg.jobs}
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    info = await rt2.js.stream_info("RESULTS")
                    if info.state.messages >= len(want):
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                results = [
                    codec.decode(p.InferenceResult, d)
                    for d in await _drain_stream(rt2.js, p.RESULTS_ALL.pattern, "RESULTS")
                ]
    finally:
        engine.stop()
    assert sorted(r.job_id for r in results) == sorted(want)  # none lost, none published twice
