"""The datastore's settings (LORANET_<FIELD> environment variables)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from loranet.settings import CommonSettings


class DatastoreSettings(CommonSettings):
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Job records and the per-client index expire this long after a job's last event.
    job_retention_s: Annotated[int, Field(ge=60)] = 30 * 86400
    # Blobs are stored in chunks of this size (Redis strings stay small; a
    # blob is read back with one MGET).
    blob_chunk_bytes: Annotated[int, Field(ge=1024, le=8 * 1024 * 1024)] = 256 * 1024
    # Redis socket timeouts: a dead Redis answers "unavailable" within this.
    redis_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # How long a job event waits for Redis to come back before it is handed
    # back to JetStream (nak, redelivered later).
    event_retry_s: Annotated[float, Field(ge=0)] = 60.0
