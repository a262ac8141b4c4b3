"""Collect items for a short window, flush them together, answer each caller.

Used wherever many handlers' items become one publish or one transaction (the
scheduler's work batches, settlement's epochs): a caller awaits `add()`, which
resolves with the flush's result for its item once the group is flushed, at
`max_items` or after `window_s`, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class WindowBatcher(Generic[K, T, R]):
    """`flush(key, items)` returns one result per item, in order (an Exception instance as a
    result fails just that item's caller); an exception raised by `flush` fails them all."""

    def __init__(
        self, flush: Callable[[K, list[T]], Awaitable[Sequence[R | BaseException]]], window_s: float, max_items: int
    ) -> None:
        self._flush_fn = flush
        self.window_s = window_s
        self.max_items = max_items
        self._open: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # flushes run one at a time (one tx sequence, ordered batches)

    def pending(self, key: K) -> int:
        return len(self._open.get(key, ()))

    async def add(self, key: K, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = []
            timer = asyncio.ensure_future(self._flush_later(key, group))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        group.append((item, fut))
        if len(group) >= self.max_items:
            await self._flush(key, group)
        return await fut

    async def _flush_later(self, key: K, group: list[Any]) -> None:
        await asyncio.sleep(self.window_s)
        await self._flush(key, group)

    async def _flush(self, key: K, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        if self._open.get(key) is group:
            del self._open[key]
        elif not group or all(f.done() for _, f in group):
            return
        async with self._lock:
            if all(f.done() for _, f in group):
                return
            try:
                results = await self._flush_fn(key, [item for item, _ in group])
                if len(results) != len(group):
                    raise RuntimeError(f"flush returned {len(results)} results for {len(group)} items")
            except BaseException as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise
            else:
                for (_, fut), result in zip(group, results):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
