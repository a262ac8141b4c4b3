"""`python -m services.datastore`: settings → Redis → Runtime → routes → serve."""

from __future__ import annotations

from loranet.errors import ServiceError
from loranet.runtime import Runtime, run_service

from .handlers import DatastoreService
from .settings import DatastoreSettings
from .store import RegistryStore


async def main(settings: DatastoreSettings | None = None) -> None:
    settings = settings or DatastoreSettings.from_env()
    store = RegistryStore.from_settings(settings)
    try:
        async with Runtime("datastore", settings) as rt:
            try:
                await store.ping()
            except ServiceError as exc:  # keep serving: requests answer "unavailable" until Redis is up
                rt.log.warning("redis.unreachable", error=exc.message)
            await rt.mount(DatastoreService(store, settings, rt.log, rt.stopping).routes())
            await rt.serve_forever()
    finally:
        await store.close()


def run() -> None:
    run_service(main)
