"""Every JetStream stream, durable consumer and KV bucket, declared once.

`ensure_topology` creates them idempotently (safe to run from every replica
and from the devnet's init step).  Consumers are created by the pull loop
from the ConsumerSpec a service names here.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError

from . import protocol as p


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool
    max_age_s: float = 0.0  # 0 = keep forever
    max_msg_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 30.0
    # A handler's own errors dead-letter a message after this many deliveries.
    max_deliver: int = 5
    max_ack_pending: int = 1024
    # JetStream's own cap, far above max_deliver: transient failures (a peer service
    # timing out, NATS reconnecting) and crash redeliveries may retry this long before the
    # runtime parks the message on the dead-letter subject (never dropped silently).
    max_deliver_transient: int = 200


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("JOBS", (p.JOBS_SUBMIT, p.JOBS_RERUN), work_queue=True),
    StreamSpec("WORK", (p.WORK_ALL,), work_queue=True),
    StreamSpec("RESULTS", (p.RESULTS_ALL,), work_queue=False, max_age_s=30 * 86400),
    StreamSpec("VERDICTS", (p.VERDICTS_ALL,), work_queue=False, max_age_s=30 * 86400),
    StreamSpec("RECEIPTS", (p.RECEIPTS_ALL,), work_queue=False),
    StreamSpec("EVENTS", (p.JOB_EVENTS_ALL,), work_queue=False, max_age_s=30 * 86400),
    StreamSpec("DEADLETTER", (p.DEAD_LETTER_ALL,), work_queue=False, max_age_s=30 * 86400),
)

# Durable consumers, one per role.  Replicas of a role share the durable, so
# JetStream hands each message to exactly one of them.
# Handlers send in_progress() every ack_wait/3 while they work, so ack_wait only
# bounds how long a crashed replica's messages wait before redelivery.
SCHEDULER = ConsumerSpec("JOBS", "scheduler", p.JOBS_SUBMIT, ack_wait_s=10, max_deliver=5)
# Re-runs of jobs whose result was finally rejected (settlement → scheduler).
SCHEDULER_RERUN = ConsumerSpec("JOBS", "scheduler-rerun", p.JOBS_RERUN, ack_wait_s=10, max_deliver=5)
VERIFIER = ConsumerSpec("RESULTS", "verifier", p.RESULTS_ALL, ack_wait_s=10, max_deliver=5)
SETTLEMENT = ConsumerSpec("VERDICTS", "settlement", p.VERDICTS_ALL, ack_wait_s=15, max_deliver=10)
DATASTORE = ConsumerSpec("EVENTS", "datastore", p.JOB_EVENTS_ALL, ack_wait_s=10, max_deliver=10)


def node_consumer(node_id: str) -> ConsumerSpec:
    """The durable through which one inference node pulls its work."""
    return ConsumerSpec("WORK", f"node-{node_id}", p.work(node_id), ack_wait_s=10, max_deliver=3)


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver_transient,
        max_ack_pending=spec.max_ack_pending,
    )


async def ensure_topology(js: JetStreamContext, replicas: int = 1, node_ttl_s: float = 15.0) -> None:
    """Create (or update) every stream and KV bucket; idempotent."""
    for spec in STREAMS:
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=spec.max_age_s or None,
            max_msg_size=spec.max_msg_bytes,
            duplicate_window=120.0,
            discard=DiscardPolicy.OLD,
        )
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                pass  # another replica created it first
        else:
            await js.update_stream(config)
    try:
        await js.key_value(p.NODES_BUCKET)
    except BucketNotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(bucket=p.NODES_BUCKET, ttl=node_ttl_s, history=1, storage=StorageType.FILE, replicas=replicas)
            )
        except BadRequestError:
            pass


# The settlement service's own bucket: the epoch it is committing (its crash-recovery
# journal). Created by settlement alone (not by ensure_topology), so no other role needs
# rights on it.
SETTLEMENT_BUCKET = "settlement"


async def ensure_bucket(js: JetStreamContext, bucket: str, replicas: int = 1, history: int = 1):
    """The KV bucket `bucket` (file storage, no TTL), created if missing; idempotent."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE, replicas=replicas)
            )
        except BadRequestError:
            pass  # another replica created it first
        return await js.key_value(bucket)
