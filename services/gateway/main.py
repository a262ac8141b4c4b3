"""python -m services.gateway: settings → NATS → HTTP on LORANET_GATEWAY_PORT → drain on SIGTERM.

The gateway is a NATS client like the SDK (it publishes jobs.submit and follows
jobs.events.<client_id>.<job_id>), so it uses the runtime connect-only (no streams to
create).  It signs for many API-key clients over one connection, so its NATS user
(deploy/nats/auth.conf, `gateway`) may follow any client's events and records; it keeps
API keys apart itself.  Its replies arrive under its own inbox prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from loranet.runtime import Runtime, run_service

from .handlers import GatewayService, build_app
from .settings import GatewaySettings

GATEWAY_INBOX_PREFIX = "_INBOX_gateway"  # the only inbox its NATS user may subscribe to


async def main(
    settings: GatewaySettings | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set); `ready(port)` is called once listening."""
    settings = settings or GatewaySettings.from_env()
    settings.api_keys()  # refuse to start without keys, before connecting
    async with Runtime(
        "gateway", settings, topology=False, connect_options={"inbox_prefix": GATEWAY_INBOX_PREFIX}
    ) as rt:
        service = GatewayService(rt.nc, settings, rt.log)
        runner = web.AppRunner(build_app(service), access_log=None, shutdown_timeout=settings.drain_timeout_s)
        await runner.setup()
        # Stop accepting and let in-flight requests finish (up to the shutdown timeout) before NATS drains;
        # then each key's own connection.
        rt.on_close(runner.cleanup)
        rt.on_close(service.close_clients)
        await web.TCPSite(runner, settings.gateway_host, settings.gateway_port).start()
        port = int(runner.addresses[0][1])  # the real port when gateway_port is 0
        rt.log.info("gateway.listening", port=port)
        if ready:
            ready(port)
        await rt.serve_forever(stop)


def run() -> None:
    run_service(main)
