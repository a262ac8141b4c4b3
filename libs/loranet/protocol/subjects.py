"""Every subject on the bus, declared once with everything about it.

A `Subject` is a pattern with its message schema, its size limit and the JetStream stream that keeps
it; a `Request` is a request-reply subject and adds its reply schema. Routes (loranet.runtime's `Pull`
and `Endpoint`) and callers (`Runtime.request`, `Client`) take these declarations, so the schema, the
limit and the reply type are never restated. The streams, the durable consumers (one per role;
replicas share it) and the KV buckets are declared here too; loranet.topology creates them.
docs/ARCHITECTURE.md's subject table is generated from this module (`python -m loranet.protocol.doc`)
and tests/unit/test_protocol.py fails when the two drift.

Nobody spells a subject as a string literal anywhere else: concrete subjects come from the functions
at the end (`work(node_id)`, `job_events(client, job_id)`, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .. import codec
from ..codec import Wire
from .base import MAX_BLOB_BYTES, DeadLetter, subject_token
from .jobs import (
    AuditRequest,
    InferenceResult,
    JobEvent,
    JobRequest,
    Receipt,
    RerunRequest,
    TokenDelta,
    Verdict,
    WorkBatch,
)
from .money import (
    Balance,
    BalanceGet,
    ClaimBalance,
    Claimed,
    DatanetAnchor,
    DatanetRecord,
    EpochList,
    EpochListReply,
    Faucet,
    Release,
    Reservation,
    Reserve,
    Stake,
    StakeGet,
)
from .nodes import NodeFlag
from .registry import (
    MAX_CONTRIBUTION_BYTES,
    AdapterBlob,
    AdapterGet,
    AdapterList,
    AdapterListReply,
    AdapterManifest,
    AdapterPut,
    AttributionGet,
    AttributionIndexBlob,
    Contribution,
    ContributionGet,
    ContributionRecords,
    DatanetCreate,
    DatanetGet,
    DatanetVersion,
    JobGet,
    JobList,
    JobListReply,
    JobRecord,
    ModelGet,
    ModelManifest,
    ModelPut,
)

M = TypeVar("M", bound=Wire)
R = TypeVar("R", bound=Wire)

SMALL_REQUEST_BYTES = 64 * 1024  # the limit of a request that names or asks for something


@dataclass(frozen=True)
class Stream:
    """A JetStream stream; its subjects are the declarations below that name it."""

    name: str
    work_queue: bool  # a message is gone once acknowledged (else kept for max_age_s)
    max_age_s: float = 0.0  # 0 = keep forever
    max_msg_bytes: int = 8 * 1024 * 1024
    doc: str = ""

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(s.pattern for s in SUBJECTS if s.stream is self)


@dataclass(frozen=True)
class Subject(Generic[M]):
    """A subject pattern and the one message published on it."""

    pattern: str
    schema: type[M]
    max_bytes: int
    doc: str
    stream: Stream | None = None  # None: core NATS (request-reply, or published to whoever listens)

    def decode(self, data: bytes) -> M:
        """`data` as this subject's message (loranet.codec.DecodeError when it is not one)."""
        return codec.decode(self.schema, data, self.max_bytes)

    def encode(self, message: M) -> bytes:
        if not isinstance(message, self.schema):
            raise TypeError(f"{self.pattern} carries {self.schema.__name__}, not {type(message).__name__}")
        return codec.encode(message)


@dataclass(frozen=True)
class Request(Subject[M], Generic[M, R]):
    """A request-reply subject: a `schema` request answered by a `reply` (or a protocol ErrorReply)."""

    reply: type[R] = field(kw_only=True)


@dataclass(frozen=True)
class Consumer:
    """A durable consumer of a stream: one per role, shared by the role's replicas.

    Handlers send in_progress() every ack_wait/3 while they work, so ack_wait only bounds how long a
    crashed replica's messages wait before redelivery."""

    subject: Subject[Any]  # what it reads
    durable: str
    ack_wait_s: float = 30.0
    max_deliver: int = 5  # a handler's own errors dead-letter a message after this many deliveries
    max_ack_pending: int = 1024
    # JetStream's own cap, far above max_deliver: transient failures (a peer service timing out, NATS
    # reconnecting) and crash redeliveries may retry this long before the runtime parks the message on
    # the dead-letter subject (never dropped silently).
    max_deliver_transient: int = 200
    filter: str = ""  # a concrete subject narrower than the pattern ("" = the whole pattern)

    @property
    def stream(self) -> str:
        if self.subject.stream is None:
            raise ValueError(f"{self.subject.pattern} is not kept by a stream")
        return self.subject.stream.name

    @property
    def filter_subject(self) -> str:
        return self.filter or self.subject.pattern


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------

_MONTH_S = 30 * 86400
JOBS = Stream("JOBS", work_queue=True, doc="jobs waiting for admission")
WORK = Stream("WORK", work_queue=True, doc="batches waiting for their node")
RESULTS = Stream("RESULTS", work_queue=False, max_age_s=_MONTH_S, doc="signed results")
VERDICTS = Stream("VERDICTS", work_queue=False, max_age_s=_MONTH_S, doc="signed verdicts")
RECEIPTS = Stream("RECEIPTS", work_queue=False, doc="settlement receipts")
EVENTS = Stream("EVENTS", work_queue=False, max_age_s=_MONTH_S, doc="every job's life, one event per stage")
DEADLETTER = Stream("DEADLETTER", work_queue=False, max_age_s=_MONTH_S, doc="messages no handler could take")

# ---------------------------------------------------------------------------
# Subjects kept by streams
# ---------------------------------------------------------------------------

JOBS_SUBMIT = Subject("jobs.submit", JobRequest, 256 * 1024, "client → scheduler: a signed job", JOBS)
JOBS_RERUN = Subject(
    "jobs.rerun",
    RerunRequest,
    512 * 1024,
    "settlement → scheduler: run a job again after its result was finally rejected",
    JOBS,
)
WORK_ALL = Subject("work.*", WorkBatch, 4 * 1024 * 1024, "scheduler → node: work.<node_id>, a batch of jobs", WORK)
RESULTS_ALL = Subject(
    "results.*",
    InferenceResult,
    1024 * 1024,
    "node → verifiers: results.<node_id>, a signed result with its proof",
    RESULTS,
)
RESULTS_AUDIT = Subject(
    "results.audit.*",
    AuditRequest,
    1024 * 1024 + 4096,
    "settlement → one verifier: results.audit.<verifier_id>, a result to audit as a drawn committee member",
    RESULTS,
)
VERDICTS_ALL = Subject(
    "verdicts.*", Verdict, 1024 * 1024, "verifier → settlement: verdicts.<job_id>, a signed verdict", VERDICTS
)
FLAGS_ALL = Subject(
    "flags.*",
    NodeFlag,
    64 * 1024,
    "verifier → settlement: flags.<node_id>, a node's statistics depart from honest nodes' (slashed at a quorum)",
    VERDICTS,
)
RECEIPTS_ALL = Subject(
    "settlement.receipts.*", Receipt, 64 * 1024, "settlement → client: settlement.receipts.<job_id>", RECEIPTS
)
# Keyed by client, so NATS permissions can give each client its own events.
JOB_EVENTS_ALL = Subject(
    "jobs.events.*.*",
    JobEvent,
    2 * 1024 * 1024 + 4096,
    "every service → datastore, client: jobs.events.<client_id>.<job_id>",
    EVENTS,
)
# Core NATS, not stored: a node's provisional tokens for the client who asked to stream them.
JOB_TOKENS_ALL = Subject(
    "jobs.tokens.*.*",
    TokenDelta,
    32 * 1024,
    "node → client: jobs.tokens.<client_id>.<job_id>, provisional text as generated (core NATS)",
)
DEAD_LETTER_ALL = Subject(
    "dlq.>",
    DeadLetter,
    codec.MAX_MESSAGE_BYTES,
    "runtime → operators: dlq.<subject>, a message with why it was refused",
    DEADLETTER,
)

# ---------------------------------------------------------------------------
# Request-reply subjects
# ---------------------------------------------------------------------------

DATASTORE_MODEL_PUT = Request(
    "datastore.model.put", ModelPut, SMALL_REQUEST_BYTES, "register a base model", reply=ModelManifest
)
DATASTORE_MODEL_GET = Request(
    "datastore.model.get", ModelGet, SMALL_REQUEST_BYTES, "a model by id or name", reply=ModelManifest
)
DATASTORE_ADAPTER_PUT = Request(
    "datastore.adapter.put",
    AdapterPut,
    MAX_BLOB_BYTES + 128 * 1024,
    "register an adapter with its files",
    reply=AdapterManifest,
)
DATASTORE_ADAPTER_GET = Request(
    "datastore.adapter.get",
    AdapterGet,
    SMALL_REQUEST_BYTES,
    "an adapter's manifest by id or name",
    reply=AdapterManifest,
)
DATASTORE_ADAPTER_LIST = Request(
    "datastore.adapter.list",
    AdapterList,
    SMALL_REQUEST_BYTES,
    "adapters of a base model or an owner",
    reply=AdapterListReply,
)
DATASTORE_ADAPTER_BLOB = Request(
    "datastore.adapter.blob", AdapterGet, SMALL_REQUEST_BYTES, "an adapter's files, hash-checked", reply=AdapterBlob
)
DATASTORE_JOB_GET = Request(
    "datastore.job.get.*",
    JobGet,
    SMALL_REQUEST_BYTES,
    "datastore.job.get.<client_id>: a client reads its own job's record",
    reply=JobRecord,
)
DATASTORE_JOB_LIST = Request(
    "datastore.job.list.*",
    JobList,
    SMALL_REQUEST_BYTES,
    "datastore.job.list.<client_id>: a client lists its own recent jobs",
    reply=JobListReply,
)
DATASTORE_ATTRIBUTION_GET = Request(
    "datastore.attribution.get",
    AttributionGet,
    SMALL_REQUEST_BYTES,
    "an adapter's attribution index, hash-checked",
    reply=AttributionIndexBlob,
)
DATASTORE_DATANET_CREATE = Request(
    "datastore.datanet.create", DatanetCreate, SMALL_REQUEST_BYTES, "create a datanet", reply=DatanetVersion
)
DATASTORE_DATANET_CONTRIBUTE = Request(
    "datastore.datanet.contribute",
    Contribution,
    MAX_CONTRIBUTION_BYTES + 64 * 1024,
    "add a signed contribution: a new immutable version",
    reply=DatanetVersion,
)
DATASTORE_DATANET_GET = Request(
    "datastore.datanet.get", DatanetGet, SMALL_REQUEST_BYTES, "a datanet version", reply=DatanetVersion
)
DATASTORE_CONTRIBUTION_GET = Request(
    "datastore.contribution.get",
    ContributionGet,
    SMALL_REQUEST_BYTES,
    "a contribution's records, hash-checked",
    reply=ContributionRecords,
)
SETTLEMENT_BALANCE = Request(
    "settlement.balance",
    BalanceGet,
    SMALL_REQUEST_BYTES,
    "wallet, escrow, credit and stake of an address",
    reply=Balance,
)
SETTLEMENT_FAUCET = Request(
    "settlement.faucet", Faucet, SMALL_REQUEST_BYTES, "devnet only: OPEN for an address", reply=Balance
)
SETTLEMENT_STAKE = Request(
    "settlement.stake", StakeGet, SMALL_REQUEST_BYTES, "a node's stake in the Registry", reply=Stake
)
SETTLEMENT_CLAIM = Request(
    "settlement.claim",
    ClaimBalance,
    SMALL_REQUEST_BYTES,
    "claim an address's data-contributor balance into its credit (the settler sends the claim)",
    reply=Claimed,
)
SETTLEMENT_EPOCHS = Request(
    "settlement.epochs", EpochList, SMALL_REQUEST_BYTES, "the latest settled epochs on chain", reply=EpochListReply
)
SETTLEMENT_DATANET_RECORD = Request(
    "settlement.datanet.record",
    DatanetRecord,
    SMALL_REQUEST_BYTES,
    "record a datanet version's Merkle root on chain (write-once)",
    reply=DatanetAnchor,
)
SETTLEMENT_RESERVE = Request(
    "settlement.reserve", Reserve, SMALL_REQUEST_BYTES, "scheduler: lock a job's max fee in escrow", reply=Reservation
)
SETTLEMENT_RELEASE = Request(
    "settlement.release",
    Release,
    SMALL_REQUEST_BYTES,
    "scheduler: refund a reserved job that will never be verified",
    reply=Receipt,
)

SUBJECTS: tuple[Subject[Any], ...] = tuple(v for v in list(globals().values()) if isinstance(v, Subject))
STREAMS: tuple[Stream, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Stream))
_BY_PATTERN: dict[str, Subject[Any]] = {s.pattern: s for s in SUBJECTS}


def declared(pattern: str) -> Subject[Any]:
    """The declaration of the subject `pattern` (KeyError for a pattern nobody declared)."""
    return _BY_PATTERN[pattern]


# ---------------------------------------------------------------------------
# Durable consumers, one per role
# ---------------------------------------------------------------------------

SCHEDULER_JOBS = Consumer(JOBS_SUBMIT, "scheduler", ack_wait_s=10, max_deliver=5)
SCHEDULER_RERUNS = Consumer(JOBS_RERUN, "scheduler-rerun", ack_wait_s=10, max_deliver=5)
VERIFIER_RESULTS = Consumer(RESULTS_ALL, "verifier", ack_wait_s=10, max_deliver=5)
SETTLEMENT_VERDICTS = Consumer(VERDICTS_ALL, "settlement", ack_wait_s=6, max_deliver=10)
SETTLEMENT_FLAGS = Consumer(FLAGS_ALL, "settlement-flags", ack_wait_s=6, max_deliver=10)
DATASTORE_EVENTS = Consumer(JOB_EVENTS_ALL, "datastore", ack_wait_s=10, max_deliver=10)
CONSUMERS: tuple[Consumer, ...] = (
    SCHEDULER_JOBS,
    SCHEDULER_RERUNS,
    VERIFIER_RESULTS,
    SETTLEMENT_VERDICTS,
    SETTLEMENT_FLAGS,
    DATASTORE_EVENTS,
)


def verifier_audits(verifier_id: str) -> Consumer:
    """The durable through which one verifier pulls the audits its committee draws ask of it."""
    token = subject_token(verifier_id, "verifier id")
    return Consumer(RESULTS_AUDIT, f"audit-{token}", ack_wait_s=10, max_deliver=5, filter=audit_request(token))


def node_work(node_id: str) -> Consumer:
    """The durable through which one inference node pulls its work."""
    return Consumer(WORK_ALL, f"node-{node_id}", ack_wait_s=10, max_deliver=3, filter=work(node_id))


# ---------------------------------------------------------------------------
# KV buckets
# ---------------------------------------------------------------------------

NODES_BUCKET = "nodes"  # NodeHeartbeat per node, written by nodes (TTL)
VERIFIERS_BUCKET = "verifiers"  # VerifierAnnouncement per verifier, written by verifiers (TTL)
SCHEDULERS_BUCKET = "schedulers"  # SchedulerAnnouncement per scheduler key, written by schedulers (no TTL)
# The settlement service's own bucket: the epoch it is committing (its crash-recovery journal). Created
# by settlement alone (not by ensure_topology), so no other role needs rights on it.
SETTLEMENT_BUCKET = "settlement"
BUCKETS: dict[str, str] = {
    NODES_BUCKET: "NodeHeartbeat per node (TTL): the scheduler's routing table",
    VERIFIERS_BUCKET: "VerifierAnnouncement per verifier (TTL): the confidential committee",
    SCHEDULERS_BUCKET: "SchedulerAnnouncement per scheduler key: the keys work assignments are checked against",
    SETTLEMENT_BUCKET: "settlement's crash-recovery journal of the epoch it is committing",
}

# ---------------------------------------------------------------------------
# Concrete subjects
# ---------------------------------------------------------------------------


def work(node_id: str) -> str:
    return f"work.{subject_token(node_id, 'node id')}"


def results(node_id: str) -> str:
    return f"results.{subject_token(node_id, 'node id')}"


def audit_request(verifier_id: str) -> str:
    return f"results.audit.{subject_token(verifier_id, 'verifier id')}"


def flags(node_id: str) -> str:
    return f"flags.{subject_token(node_id, 'node id')}"


def verdicts(job_id: str) -> str:
    return f"verdicts.{subject_token(job_id, 'job id')}"


def receipts(job_id: str) -> str:
    return f"settlement.receipts.{subject_token(job_id, 'job id')}"


# A client's id in subjects: the full hex of its Ed25519 key (a prefix could be ground to collide).
CLIENT_ID = re.compile(r"^[0-9a-f]{64}$")


def client_id(client_key: bytes) -> str:
    """The token that names a client in subjects (jobs.events.<client_id>.*, datastore.job.get.<client_id>)."""
    if len(client_key) != 32:
        raise ValueError(f"a client key is 32 bytes, got {len(client_key)}")
    return client_key.hex()


def _client_token(client: bytes | str) -> str:
    cid = client_id(client) if isinstance(client, bytes) else client
    if not CLIENT_ID.match(cid):
        raise ValueError(f"client id {cid!r} is not 64 hex characters")
    return cid


def job_events(client: bytes | str, job_id: str) -> str:
    """jobs.events.<client_id>.<job_id>; `client` is the client's key or its id."""
    return f"jobs.events.{_client_token(client)}.{subject_token(job_id, 'job id')}"


def job_tokens(client: bytes | str, job_id: str) -> str:
    """jobs.tokens.<client_id>.<job_id>: a streaming job's provisional tokens."""
    return f"jobs.tokens.{_client_token(client)}.{subject_token(job_id, 'job id')}"


def job_tokens_of(client: bytes | str) -> str:
    """Every streaming job's tokens of one client: jobs.tokens.<client_id>.*"""
    return f"jobs.tokens.{_client_token(client)}.*"


def job_events_of(client: bytes | str) -> str:
    """Every job event of one client: jobs.events.<client_id>.*"""
    return f"jobs.events.{_client_token(client)}.*"


def job_events_by_id(job_id: str) -> str:
    """A job's events whoever its client is (services only: a filter, not a subject)."""
    return f"jobs.events.*.{subject_token(job_id, 'job id')}"


def parse_job_events(subject: str) -> tuple[str, str]:
    """(client_id, job_id) of a jobs.events.<client_id>.<job_id> subject; ValueError otherwise."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["jobs", "events"] or not CLIENT_ID.match(parts[2]):
        raise ValueError(f"not a job events subject: {subject!r}")
    return parts[2], subject_token(parts[3], "job id")


def datastore_job_get(client: bytes | str) -> str:
    """datastore.job.get.<client_id>: where a client asks for the records of its own jobs."""
    return f"datastore.job.get.{_client_token(client)}"


def datastore_job_list(client: bytes | str) -> str:
    """datastore.job.list.<client_id>: where a client lists its own jobs."""
    return f"datastore.job.list.{_client_token(client)}"


def dead_letter(subject: str) -> str:
    return f"dlq.{subject}"
