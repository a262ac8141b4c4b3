"""python -m services.scheduler"""

from __future__ import annotations

import asyncio

from loranet.runtime import Runtime

from .handlers import Scheduler
from .settings import SchedulerSettings


async def main(settings: SchedulerSettings | None = None) -> None:
    settings = settings or SchedulerSettings.from_env()
    async with Runtime("scheduler", settings) as rt:
        await rt.mount(Scheduler(rt, settings).routes())
        await rt.serve_forever()


def run() -> None:
    asyncio.run(main())
