"""Gateway settings (LORANET_* environment variables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field

from loranet.model.catalog import default_model_name
from loranet.settings import CommonSettings, SettingsError

from .domain import parse_keys


class GatewaySettings(CommonSettings):
    gateway_host: str = "0.0.0.0"
    gateway_port: Annotated[int, Field(ge=0, le=65535)] = 8080  # 0 = any free port (tests)
    # API key → client name, as JSON ({"sk-...": "alice"}), and/or a file holding the same map.
    gateway_keys: dict[str, str] = {}
    gateway_keys_file: str = ""
    # Each client name's Ed25519 key is derived from this secret (HMAC), so every replica
    # signs for a client with the same key and the client keeps one escrow.
    gateway_secret: str = "loranet-devnet-gateway"
    # Where each API key's client connects with its own NATS identity (its Ed25519 key, through the auth
    # callout, as SDK clients do), so this process can read no other key's jobs, events or tokens: the
    # NATS URL without user or password. "" = every key on the gateway's own connection (a NATS server
    # without the callout; the gateway's NATS user must then be allowed the clients' subjects).
    gateway_client_nats_url: str = ""
    # Base models offered (registered names); each adapter over them is offered as "<base>:<adapter>".
    gateway_models: list[str] = Field(default_factory=lambda: [default_model_name()])  # $LORANET_MODEL or SmolLM2
    catalogue_refresh_s: Annotated[float, Field(ge=0)] = 10.0
    # Devnet: a client whose escrow cannot cover a job gets OPEN from settlement.faucet on first use.
    gateway_faucet: bool = True
    faucet_amount: Annotated[int, Field(ge=0)] = 10**20
    faucet_escrow: Annotated[int, Field(ge=0)] = 10**19
    max_fee: Annotated[int, Field(ge=1)] = 10**18  # most one request may cost, in OPEN wei
    job_ttl_s: Annotated[float, Field(gt=0)] = 600.0
    job_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # Chat requests without max_tokens get this many; completions get OpenAI's 16.
    chat_max_tokens: Annotated[int, Field(ge=1, le=4096)] = 256
    stream_chunk_chars: Annotated[int, Field(ge=1)] = 16
    # Per API client: completions a second on average, and the burst allowed.
    rate_limit_per_s: Annotated[float, Field(gt=0)] = 5.0
    rate_limit_burst: Annotated[int, Field(ge=1)] = 20

    def api_keys(self) -> dict[str, str]:
        """Every configured API key → client name (the keys file and LORANET_GATEWAY_KEYS together)."""
        try:
            keys = parse_keys(self.gateway_keys, "LORANET_GATEWAY_KEYS")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if self.gateway_keys_file:
            path = Path(self.gateway_keys_file)
            try:
                raw = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise SettingsError(f"LORANET_GATEWAY_KEYS_FILE: cannot read {path}: {exc}") from None
            if not isinstance(raw, dict):
                raise SettingsError(
                    f"LORANET_GATEWAY_KEYS_FILE: {path} must hold a JSON object (API key → client name)"
                )
            try:
                keys.update(parse_keys(raw, str(path)))
            except ValueError as exc:
                raise SettingsError(f"LORANET_GATEWAY_KEYS_FILE: {exc}") from None
        if not keys:
            raise SettingsError("no API keys: set LORANET_GATEWAY_KEYS (JSON map) or LORANET_GATEWAY_KEYS_FILE")
        return keys
