"""Verifier settings (LORANET_* environment variables)."""

from typing import Annotated

from pydantic import Field

from loranet import thresholds
from loranet.settings import CommonSettings


class VerifierSettings(CommonSettings):
    verifier_id: str = "verifier-0"
    # Ethereum address that receives the verifier's share; "" derives a devnet address from verifier_id.
    verifier_address: str = ""
    # Base model served (audited): same meaning as the inference node's settings.
    # Base model: a name (smollm2-135m-instruct, loranet-tiny-llama, one registered with `loranet model register`)
    # or a checkpoint directory; "" = $LORANET_MODEL, else smollm2-135m-instruct.
    model_path: str = ""
    model_id: str = ""  # expected content id; "" = trust what the path hashes to
    device: str = "cpu"
    cache_dir: str = ""  # model and adapter cache; "" = ~/.cache/loranet (LORANET_CACHE)
    state_dir: str = ".devnet/state"
    key_file: str = ""  # Ed25519 seed (hex, mode 0600); "" = <state_dir>/<verifier_id>.key
    # Results handled at once (audits run one at a time on the model; cheap checks overlap).
    slots: Annotated[int, Field(ge=1, le=256)] = 4
    # Adapters kept loaded (LRU).
    adapter_slots: Annotated[int, Field(ge=1, le=1024)] = 16
    # Job ids remembered for replay detection (bounded, in memory).
    replay_window: Annotated[int, Field(ge=16)] = 100_000
    # Node keys seen in heartbeats are remembered this long after the heartbeat expires.
    node_key_cache: Annotated[int, Field(ge=1)] = 10_000
    # Refuse (dead-letter, no verdict) a result without the scheduler's signed assignment of its run to its
    # node, from a scheduler announced in KV `schedulers`.
    require_assignment: bool = True
    # Audit policy (see loranet.thresholds for the defaults' rationale).
    audit_new_node_jobs: Annotated[int, Field(ge=0)] = thresholds.AUDIT_NEW_NODE_JOBS
    audit_after_failure_jobs: Annotated[int, Field(ge=0)] = thresholds.AUDIT_AFTER_FAILURE_JOBS
    audit_clean_rate: Annotated[float, Field(ge=0.0, le=1.0)] = thresholds.AUDIT_CLEAN_RATE
    # Per-node statistics (JSON) are written to this KV bucket, key <verifier_id>.<node_id>, every interval.
    stats_bucket: str = "verifier-stats"
    stats_interval_s: Annotated[float, Field(gt=0)] = 5.0
    # Signed key announcement in KV `verifiers` (clients seal confidential prompts to it): every
    # interval, kept by the bucket for ttl (the bucket is created with this ttl by the first verifier).
    announce_interval_s: Annotated[float, Field(gt=0)] = 5.0
    announce_ttl_s: Annotated[float, Field(gt=0)] = 30.0
