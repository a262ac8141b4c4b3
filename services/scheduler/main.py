"""python -m services.scheduler"""

from __future__ import annotations

from loranet.runtime import Runtime, run_service

from .handlers import SchedulerService
from .settings import SchedulerSettings


async def main(settings: SchedulerSettings | None = None) -> None:
    settings = settings or SchedulerSettings.from_env()
    async with Runtime("scheduler", settings) as rt:
        scheduler = SchedulerService(rt, settings)
        await scheduler.start()
        await rt.mount(scheduler.routes())
        await rt.serve_forever()


def run() -> None:
    run_service(main)
