"""Datastore fixtures: one tiny base model + demo adapters per session, and the
service running in-process against the real nats_server / redis_server."""

from __future__ import annotations

from dataclasses import dataclass

import nats
import pytest
import redis.asyncio as aioredis

from loranet.model import build_base_checkpoint
from loranet.model.adapters import adapter_to_blobs, build_demo_adapters
from loranet.runtime import Runtime
from services.datastore.handlers import DatastoreService
from services.datastore.settings import DatastoreSettings
from services.datastore.store import RegistryStore


@dataclass(frozen=True)
class Adapter:
    name: str
    adapter_id: str
    config: bytes
    weights: bytes


@dataclass(frozen=True)
class Models:
    model_id: str
    other_model_id: str
    adapters: list[Adapter]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    root = tmp_path_factory.mktemp("datastore-models")
    model_id = build_base_checkpoint(root / "tiny", seed=0)
    adapters = []
    for name, path, adapter_id in build_demo_adapters(
        root / "tiny", 3, seed=0, out_dir=root / "adapters", expected_model_id=model_id
    ):
        config, weights = adapter_to_blobs(path)
        adapters.append(Adapter(name, adapter_id, config, weights))
    return Models(model_id, "e" * 64, adapters)


@dataclass
class Service:
    rt: Runtime
    handlers: DatastoreService
    store: RegistryStore
    settings: DatastoreSettings
    nc: nats.aio.client.Client  # a client connection, separate from the service's
    redis: aioredis.Redis  # direct access, to inspect and corrupt


@pytest.fixture
async def datastore(nats_server, redis_server):
    settings = DatastoreSettings(
        nats_url=nats_server.url,
        redis_url=redis_server.url,
        blob_chunk_bytes=16 * 1024,
        drain_timeout_s=1,
        redis_timeout_s=1.0,
        event_retry_s=30,
        request_timeout_s=5,
    )
    store = RegistryStore.from_settings(settings)
    rt = Runtime("datastore", settings)
    await rt.start()
    handlers = DatastoreService(store, settings, rt.log, rt.stopping)
    await rt.mount(handlers.routes())
    nc = await nats.connect(nats_server.url)
    direct = aioredis.Redis.from_url(redis_server.url)
    try:
        yield Service(rt, handlers, store, settings, nc, direct)
    finally:
        await nc.close()
        await rt.close()
        await store.close()
        try:
            await direct.aclose()
        except Exception:
            pass
