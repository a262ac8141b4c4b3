"""python -m services.inference"""

from __future__ import annotations

import asyncio

from loranet.runtime import Runtime, run_service

from .engine import Engine
from .handlers import InferenceService, load_identity
from .settings import InferenceSettings


async def main(settings: InferenceSettings | None = None) -> None:
    settings = settings or InferenceSettings.from_env()
    engine = await asyncio.to_thread(
        Engine,
        settings.model_path,
        settings.model_id,
        settings.device,
        settings.cache_dir,
        settings.adapter_slots,
        settings.engine_config(),
    )
    engine.start()
    try:
        async with Runtime(
            "inference", settings.model_copy(update={"instance": settings.instance or settings.node_id})
        ) as rt:
            node = InferenceService(rt, settings, engine, load_identity(settings))
            rt.spawn(node.heartbeat_loop(), name="heartbeat")
            await rt.mount(node.routes())
            await rt.serve_forever()
    finally:
        await asyncio.to_thread(engine.stop)


def run() -> None:
    run_service(main)
