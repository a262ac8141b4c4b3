"""python -m services.verifier"""

from __future__ import annotations

import asyncio

from loranet.runtime import Runtime, run_service

from .engine import AuditEngine
from .handlers import VerifierService, load_identity
from .settings import VerifierSettings


async def main(settings: VerifierSettings | None = None) -> None:
    settings = settings or VerifierSettings.from_env()
    engine = await asyncio.to_thread(
        AuditEngine, settings.model_path, settings.model_id, settings.device, settings.cache_dir, settings.adapter_slots
    )
    async with Runtime(
        "verifier", settings.model_copy(update={"instance": settings.instance or settings.verifier_id})
    ) as rt:
        verifier = VerifierService(rt, settings, engine, load_identity(settings))
        rt.log.info("stats.restored", nodes=await verifier.restore_records())
        rt.spawn(verifier.stats_loop(), name="stats")
        rt.spawn(verifier.announce_loop(), name="announce")
        await rt.mount(verifier.routes())
        await rt.serve_forever()


def run() -> None:
    run_service(main)
