"""python -m services.settlement"""

from __future__ import annotations

import asyncio

from loranet.runtime import Runtime, run_service

from .chain import Chain
from .handlers import SettlementService
from .settings import SettlementSettings


async def main(settings: SettlementSettings | None = None) -> None:
    settings = settings or SettlementSettings.from_env()
    chain = await asyncio.to_thread(Chain.from_settings, settings)
    async with Runtime("settlement", settings) as rt:
        rt.log.info(
            "chain.ready",
            in_process=chain.in_process,
            rpc_url=settings.rpc_url,
            **{k: v for k, v in vars(chain.deployment).items()},
        )
        # The journal is reconciled with the chain before any verdict is taken.
        service = await SettlementService.open(rt, settings, chain)
        if service.committees:
            rt.spawn(service.committee_loop(), name="committees")
        await rt.mount(service.routes())
        await rt.serve_forever()


def run() -> None:
    run_service(main)
