"""Redis goes away and comes back: the datastore answers "unavailable", then recovers."""

from __future__ import annotations

import asyncio
import time

import pytest
from ds_helpers import KEY, event, job_request, model_manifest

from loranet import codec
from loranet import protocol as p
from loranet.errors import RemoteError
from loranet.runtime import request


async def test_redis_down_unavailable_then_recovers(datastore, redis_server, models):
    ds = datastore
    put = p.ModelPut(manifest=model_manifest(models.model_id))
    stored = await request(ds.nc, p.DATASTORE_MODEL_PUT, put, timeout=10)
    redis_server.kill()
    for subject, message in [
        (p.DATASTORE_MODEL_GET, p.ModelGet(model="tiny-llama")),
        (p.DATASTORE_MODEL_PUT, put),
        (p.DATASTORE_ADAPTER_LIST, p.AdapterList()),
        (p.DATASTORE_JOB_GET, p.JobGet(job_id=p.new_job_id())),
    ]:
        started = time.monotonic()
        to = p.datastore_job_get(KEY) if subject is p.DATASTORE_JOB_GET else ""
        with pytest.raises(RemoteError) as err:
            await request(ds.nc, subject, message, timeout=10, to=to)
        assert err.value.code == "unavailable", err.value
        assert time.monotonic() - started < 5
    # An event published during the outage waits for Redis instead of being lost.
    job_id = p.new_job_id()
    await ds.rt.js.publish(p.job_events(KEY, job_id), codec.encode(event(job_id, "admitted", job_request(job_id))))
    await asyncio.sleep(1.0)
    redis_server.start()
    assert await request(ds.nc, p.DATASTORE_MODEL_GET, p.ModelGet(model="tiny-llama"), timeout=10) == stored
    deadline = time.monotonic() + 15
    while True:
        try:
            record = await request(
                ds.nc, p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), timeout=10, to=p.datastore_job_get(KEY)
            )
            break
        except RemoteError as exc:
            assert exc.code in ("not_found", "unavailable") and time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert record.status == "admitted"
