"""Creates what loranet.protocol.subjects declares: streams, KV buckets, consumer configs.

`ensure_topology` creates the streams and the `nodes` bucket idempotently (safe
to run from every replica and from the devnet's init step).  Consumers are
created by the runtime's pull loop from the `Consumer` a route names.
"""

from __future__ import annotations

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
from nats.js.kv import KeyValue

from . import protocol as p
from .protocol import Consumer


def consumer_config(spec: Consumer) -> ConsumerConfig:
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
    for spec in p.STREAMS:
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
                KeyValueConfig(
                    bucket=p.NODES_BUCKET, ttl=node_ttl_s, history=1, storage=StorageType.FILE, replicas=replicas
                )
            )
        except BadRequestError:
            pass


async def ensure_bucket(
    js: JetStreamContext, bucket: str, replicas: int = 1, history: int = 1, ttl: float | None = None
) -> KeyValue:
    """The KV bucket `bucket` (file storage; entries expire after `ttl` seconds if given), created if missing;
    idempotent."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=history, ttl=ttl, storage=StorageType.FILE, replicas=replicas)
            )
        except BadRequestError:
            pass  # another replica created it first
        return await js.key_value(bucket)
