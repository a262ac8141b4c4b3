"""Service settings from environment variables, validated at start.

Each service declares one subclass of `CommonSettings`; every field can be set
by `LORANET_<FIELD>` (upper case).  Defaults run the embedded devnet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import Invalid

ENV_PREFIX = "LORANET_"


class SettingsError(Invalid):
    """A setting from the environment is invalid; names the variable."""


class CommonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nats_url: str = "nats://127.0.0.1:4222"
    # 0 disables the Prometheus endpoint; devnet gives each process its own port.
    metrics_port: int = 0
    log_level: str = "INFO"
    js_replicas: int = 1
    node_ttl_s: float = 15.0
    drain_timeout_s: float = 20.0
    request_timeout_s: float = 10.0
    instance: str = ""  # replica name in logs; defaults to the host's pid

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = ENV_PREFIX + name.upper()
            if key in env:
                raw = env[key]
                ann = field.annotation
                if ann in (list, dict) or str(ann).startswith(("list", "dict")):
                    try:
                        values[name] = json.loads(raw)
                    except json.JSONDecodeError as exc:
                        raise SettingsError(f"{key}: expected JSON, got {raw!r} ({exc})") from None
                else:
                    values[name] = raw
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = str(err["loc"][0]) if err.get("loc") else "?"
            raise SettingsError(f"{ENV_PREFIX}{where.upper()}: {err['msg']}") from None


S = TypeVar("S", bound=CommonSettings)
