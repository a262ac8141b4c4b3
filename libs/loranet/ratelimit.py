"""Per-client token buckets: `rate` requests a second on average, bursts up to `burst`.

Used at admission (scheduler, keyed by client key) and at the HTTP gateway
(keyed by API client), so one client's flood is refused early and cheaply.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def allow(self, client: Hashable, cost: float = 1.0) -> bool:
        """Take `cost` tokens from `client`'s bucket if it has them."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)  # the least recently seen client starts afresh
        return allowed

    def retry_after(self, client: Hashable, cost: float = 1.0) -> float:
        """Seconds until `client` could spend `cost` tokens."""
        tokens, at = self._buckets.get(client, (float(self.burst), self.clock()))
        tokens = min(float(self.burst), tokens + (self.clock() - at) * self.rate)
        return max(0.0, (cost - tokens) / self.rate)
