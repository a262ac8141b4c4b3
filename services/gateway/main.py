"""python -m services.gateway: settings → NATS → HTTP on LORANET_GATEWAY_PORT → drain on SIGTERM.

The gateway is a NATS client like the SDK (it publishes jobs.submit and follows
jobs.events.<client_id>.<job_id>), so it connects without loranet.runtime.Runtime, which
would create streams.  It signs for many API-key clients over one connection, so its
NATS user (deploy/nats/auth.conf, `gateway`) may follow any client's events and records;
it keeps API keys apart itself.  Its replies arrive under its own inbox prefix.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable

import nats
from aiohttp import web

from loranet.observability import EventLog, serve_metrics

from .handlers import Gateway, build_app
from .settings import GatewaySettings

GATEWAY_INBOX_PREFIX = "_INBOX_gateway"  # the only inbox its NATS user may subscribe to


async def serve(settings: GatewaySettings | None = None, stop: asyncio.Event | None = None,
                ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set); `ready(port)` is called once listening."""
    settings = settings or GatewaySettings.from_env()
    instance = settings.instance or f"gateway-{os.getpid()}"
    log = EventLog("gateway", instance, settings.log_level)
    settings.api_keys()  # refuse to start without keys, before connecting
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    async def on_disconnected() -> None:
        log.warning("nats.disconnected")

    async def on_reconnected() -> None:
        log.info("nats.reconnected")

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))

    nc = await nats.connect(settings.nats_url, name=instance, connect_timeout=5, max_reconnect_attempts=-1,
                            reconnect_time_wait=0.5, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
                            error_cb=on_error, inbox_prefix=GATEWAY_INBOX_PREFIX)
    runner = web.AppRunner(build_app(Gateway(nc, settings, log)), access_log=None,
                           shutdown_timeout=settings.drain_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # the real port when gateway_port is 0
    serve_metrics(settings.metrics_port)
    log.info("service.started", port=port, nats=settings.nats_url.split("@")[-1])
    if ready:
        ready(port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # stops accepting, lets in-flight requests finish up to the shutdown timeout
        try:
            await asyncio.wait_for(nc.drain(), timeout=5)
        except Exception:
            await nc.close()
        log.info("service.stopped")


def run() -> None:
    asyncio.run(serve())
