"""The gateway in a thread of its own, on the session's devnet (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import threading

from services.gateway.main import main as serve_gateway
from services.gateway.settings import GatewaySettings


class GatewayThread:
    """The gateway's own event loop in a thread, so the synchronous openai client can call it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop = asyncio.Event()
            await serve_gateway(self.settings, self.stop, ready=self._on_ready)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self._ready.set()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self) -> GatewayThread:
        self._thread.start()
        assert self._ready.wait(60), "gateway did not start"
        if self.error:
            raise self.error
        return self

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive()

    def client(self, api_key: str):
        import openai

        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=api_key, max_retries=0, timeout=120)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
