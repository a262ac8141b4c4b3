"""What nodes and verifiers announce about themselves (KV buckets `nodes` and `verifiers`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from ..codec import AdditiveWire, Wire
from .base import Address, ContentId, JobId, Name, NodeId, PublicKey, Signature, Signed, Timestamp


class NodeHeartbeat(AdditiveWire, Signed):
    """A node's signed liveness and capacity report (KV bucket `nodes`, key = node_id)."""

    v: Literal[1] = 1
    node_id: NodeId
    node_key: PublicKey
    payout_address: Address
    model_ids: Annotated[list[ContentId], Field(max_length=16)]
    device: Annotated[str, StringConstraints(max_length=64)]
    memory_free: Annotated[int, Field(ge=0)]
    adapters_hot: Annotated[list[ContentId], Field(max_length=4096)]
    slots_total: Annotated[int, Field(ge=0)]
    slots_free: Annotated[int, Field(ge=0)]
    queue_depth: Annotated[int, Field(ge=0)]
    tokens_per_s: Annotated[float, Field(ge=0)]
    region: Annotated[str, StringConstraints(max_length=32)] = ""
    at: Timestamp
    signature: Signature = b""
    dtype: Annotated[str, StringConstraints(max_length=16)] = ""  # the precision its weights are served in

    _additive = ("dtype",)

    SIGNING_DOMAIN: ClassVar[str] = "loranet/node-heartbeat/v1"
    SIGNER_FIELD: ClassVar[str] = "node_key"

    def summary(self, now: float) -> dict[str, Any]:
        """The node as `loranet nodes`, `loranet top` and the explorer show it (JSON-ready)."""
        return {
            "node_id": self.node_id,
            "device": self.device,
            "region": self.region,
            "dtype": self.dtype,
            "slots_free": self.slots_free,
            "slots_total": self.slots_total,
            "queue_depth": self.queue_depth,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "adapters_hot": len(self.adapters_hot),
            "payout_address": self.payout_address,
            "heartbeat_age_s": round(max(now - self.at, 0.0), 1),
        }


class SchedulerAnnouncement(Wire, Signed):
    """A scheduler's signed key (KV bucket `schedulers`, key = the key in hex; no expiry, so a stopped
    scheduler's assignments stay checkable; only schedulers write it): what verifiers check work assignments
    against."""

    v: Literal[1] = 1
    scheduler_id: Name
    scheduler_key: PublicKey
    at: Timestamp
    signature: Signature = b""

    SIGNING_DOMAIN: ClassVar[str] = "loranet/scheduler-announcement/v1"
    SIGNER_FIELD: ClassVar[str] = "scheduler_key"


class VerifierAnnouncement(Wire, Signed):
    """A verifier's signed key announcement (KV bucket `verifiers`, key = verifier id; TTL).

    Clients seal confidential prompts to the announced keys (the committee)."""

    v: Literal[1] = 1
    verifier_id: Name
    verifier_key: PublicKey
    verifier_address: Address
    model_ids: Annotated[list[ContentId], Field(max_length=16)]
    at: Timestamp
    signature: Signature = b""

    SIGNING_DOMAIN: ClassVar[str] = "loranet/verifier-announcement/v1"
    SIGNER_FIELD: ClassVar[str] = "verifier_key"


class NodeFlag(Wire, Signed):
    """A verifier's signed finding (subject flags.<node_id>): one node's running statistics over the jobs
    this verifier audited depart from honest nodes' (loranet.thresholds NODE_*), although its jobs may
    each pass. Settlement slashes the node once enough registered verifiers flagged it (issue 18)."""

    v: Literal[1] = 1
    node_id: NodeId
    node_key: PublicKey
    verifier_id: Name
    verifier_key: PublicKey
    verifier_address: Address
    reason: Annotated[str, StringConstraints(max_length=1024)]
    fp_chunks: Annotated[int, Field(ge=0)]
    fp_excess_mean: Annotated[float, Field(ge=0.0)]
    audited_tokens: Annotated[int, Field(ge=0)]
    off_choice_tokens: Annotated[int, Field(ge=0)]
    # The audited jobs the statistics cover (the latest): anyone holding them can recompute the figures.
    jobs: Annotated[list[JobId], Field(max_length=64)]
    at: Timestamp
    signature: Signature = b""

    SIGNING_DOMAIN: ClassVar[str] = "loranet/node-flag/v1"
    SIGNER_FIELD: ClassVar[str] = "verifier_key"
