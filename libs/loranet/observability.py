"""Structured JSON logs and Prometheus metrics shared by every service."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server

MESSAGES = Counter(
    "loranet_messages_total",
    "Messages handled, by service, route and outcome",
    ["service", "route", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "loranet_handler_seconds",
    "Time spent in a message handler",
    ["service", "route"],
    buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
DEAD_LETTERS = Counter("loranet_dead_letters_total", "Messages sent to the dead-letter subject", ["service", "route"])

# Keys never written to logs, whatever a caller passes.
_SECRET_KEYS = frozenset({"private_key", "seed", "signing_key", "password", "token", "secret"})


class EventLog:
    """One JSON line per event: {"ts", "level", "service", "event", ...fields}."""

    def __init__(self, service: str, instance: str = "", level: str = "INFO") -> None:
        self.service = service
        self.instance = instance
        self._logger = logging.getLogger(f"loranet.{service}")
        if not self._logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)
            self._logger.propagate = False
        self._logger.setLevel(level.upper())

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        record = {
            "ts": round(time.time(), 3),
            "level": logging.getLevelName(level),
            "service": self.service,
            "event": event,
        }
        if self.instance:
            record["instance"] = self.instance
        for key, value in fields.items():
            if key in _SECRET_KEYS:
                continue
            record[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        self._logger.log(level, json.dumps(record, separators=(",", ":")))

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def serve_metrics(port: int) -> None:
    """Expose /metrics on `port` (0 = disabled)."""
    if port:
        start_http_server(port)
