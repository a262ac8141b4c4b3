"""Every subject on the bus and its one schema.

Nobody spells a subject as a string literal anywhere else: services import the
constants and functions below.  Each schema carries a version field `v`, is
validated strictly on decode (loranet.codec), and, where it is signed, has a
domain tag for its signature (loranet.signing).
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, StringConstraints, model_validator

from .codec import AdditiveWire, Wire

# ---------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------

JobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
ContentId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
OptContentId = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
# Node ids appear inside subjects (work.<node_id>): no dots, no wildcards.
NodeId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
PublicKey = Annotated[bytes, Field(min_length=32, max_length=32)]
# Empty until signed; signing.verify insists on 64 bytes.
Signature = Annotated[bytes, Field(max_length=64)]


def _wei_from_wire(value: object) -> object:
    # Amounts travel as decimal strings: MessagePack integers stop at 2**64.
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 30:
            raise ValueError("an amount is a decimal string of digits")
        return int(value)
    return value


Wei = Annotated[int, BeforeValidator(_wei_from_wire), Field(ge=0, lt=2**96), PlainSerializer(str, return_type=str)]
Bps = Annotated[int, Field(ge=0, le=10_000)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
Timestamp = Annotated[float, Field(ge=0)]

MAX_PROMPT_CHARS = 32_768
MAX_TOKENS_LIMIT = 4096
MAX_TOKEN_IDS = MAX_PROMPT_CHARS + MAX_TOKENS_LIMIT + 8
MAX_BLOB_BYTES = 6 * 1024 * 1024


def new_job_id() -> str:
    """A fresh 128-bit job id as 32 hex characters."""
    return secrets.token_hex(16)


# ---------------------------------------------------------------------------
# Signature domains: one per signed schema.
# ---------------------------------------------------------------------------

DOMAIN_JOB_REQUEST = "loranet/job-request/v1"
DOMAIN_RESULT = "loranet/inference-result/v1"
DOMAIN_VERDICT = "loranet/verdict/v1"
DOMAIN_HEARTBEAT = "loranet/node-heartbeat/v1"
DOMAIN_VERIFIER_ANNOUNCEMENT = "loranet/verifier-announcement/v1"
# Content ids (not signatures) also get their own domains.
DOMAIN_REQUEST_HASH = "loranet/request-hash/v1"
DOMAIN_RESULT_HASH = "loranet/result-hash/v1"

# ---------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------


class SamplingParams(Wire):
    temperature: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    top_k: Annotated[int, Field(ge=0, le=100_000)] = 0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    stop: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]], Field(max_length=4)] = []


MAX_SEALED_BYTES = 768 * 1024
MAX_RECIPIENTS = 16


class SealedKey(Wire):
    """One recipient's slot: the payload's data key in sealed-box format (see loranet.confidential)."""

    recipient: PublicKey  # the recipient's Ed25519 public key (its X25519 key is derived from it)
    box: Annotated[bytes, Field(min_length=80, max_length=80)]


class Sealed(Wire):
    """A payload encrypted once (SecretBox) with its key sealed to each recipient (loranet.confidential)."""

    keys: Annotated[list[SealedKey], Field(min_length=1, max_length=MAX_RECIPIENTS)]
    ciphertext: Annotated[bytes, Field(min_length=40, max_length=MAX_SEALED_BYTES)]


class JobRequest(AdditiveWire):
    """A client's signed inference job (subject jobs.submit).

    Confidential job: `sealed_prompt` holds the prompt sealed to the node named
    by `node_id` and to the verifier committee, and `prompt` is empty; the
    scheduler routes it to that node only."""

    v: Literal[1] = 1
    job_id: JobId
    client_key: PublicKey
    client_address: Address
    model_id: ContentId
    adapter_id: OptContentId  # "" = base model only
    prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]
    sampling: SamplingParams = SamplingParams()
    max_fee: Wei
    created_at: Timestamp
    expires_at: Timestamp
    region: Annotated[str, StringConstraints(max_length=32)] = ""
    signature: Signature = b""
    # Additive (omitted from the wire and the signed bytes while at their defaults).
    sealed_prompt: Sealed | None = None
    node_id: Annotated[str, StringConstraints(pattern=r"^([a-z0-9][a-z0-9_-]{0,62})?$")] = ""  # "" = any node
    # The tokenizer the prompt is meant for (the model's, from its registry record): a job naming
    # another is refused at admission, by the node and by the verifier. "" = the model's own.
    tokenizer_id: OptContentId = ""

    _additive = ("sealed_prompt", "node_id", "tokenizer_id")

    @model_validator(mode="after")
    def _sealed_shape(self) -> "JobRequest":
        if self.sealed_prompt is not None and (self.prompt or not self.node_id):
            raise ValueError("a sealed prompt needs an empty `prompt` and the `node_id` it was sealed to")
        return self

    @property
    def confidential(self) -> bool:
        return self.sealed_prompt is not None

    def tokenizer_problem(self, model_tokenizer_id: str) -> str:
        """Why this job cannot run on a model whose tokenizer is `model_tokenizer_id` ("" = it can)."""
        if not self.tokenizer_id or self.tokenizer_id == model_tokenizer_id:
            return ""
        return (f"job names tokenizer {self.tokenizer_id[:12]}…, but model {self.model_id[:12]}… uses "
                f"tokenizer {model_tokenizer_id[:12]}…")


class WorkSegment(Wire):
    """Jobs of one adapter inside a work batch."""

    adapter_id: OptContentId
    jobs: Annotated[list[JobRequest], Field(min_length=1, max_length=256)]


MAX_ATTEMPT = 16  # attempt numbers: 0 = the first run, n = the n-th re-run after rejected results


class JobAttempt(Wire):
    """A job sent again after its earlier results were rejected: which attempt this run is."""

    job_id: JobId
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPT)]
    exclude: Annotated[list[NodeId], Field(max_length=MAX_ATTEMPT)] = []  # the nodes that failed it


class WorkBatch(AdditiveWire):
    """What the scheduler hands one node (subject work.<node_id>)."""

    v: Literal[1] = 1
    batch_id: JobId
    node_id: NodeId
    model_id: ContentId
    segments: Annotated[list[WorkSegment], Field(min_length=1, max_length=256)]
    dispatched_at: Timestamp
    scheduler_id: Name
    # Additive: the jobs of this batch that are re-runs (absent = every job's first attempt).
    attempts: Annotated[list[JobAttempt], Field(max_length=256)] = []

    _additive = ("attempts",)

    def attempt_of(self, job_id: str) -> int:
        return next((a.attempt for a in self.attempts if a.job_id == job_id), 0)


class Fingerprint(Wire):
    """Activation fingerprint committed while generating (see loranet.fingerprint)."""

    chunk_tokens: Annotated[int, Field(ge=1, le=4096)] = 32
    top_k: Annotated[int, Field(ge=1, le=4096)] = 128
    # chunks[0] covers the prompt (prefill); chunks[i>0] each cover `chunk_tokens` outputs.
    chunks: Annotated[list[Annotated[bytes, Field(max_length=4096)]], Field(max_length=1024)] = []


class Evidence(Wire):
    """Optional hardware or cryptographic evidence (TEE quote, zk proof)."""

    kind: Literal["tee", "zk"]
    data: Annotated[bytes, Field(max_length=65_536)]


class InferenceResult(AdditiveWire):
    """A node's signed result with its proof material (subject results.<node_id>).

    For a confidential job the token ids, the text and the fingerprint's chunks
    are only inside `sealed_output` (sealed to the client and the job's verifier
    committee) and those clear fields are empty; the counts the fee needs stay in
    the clear."""

    v: Literal[1] = 1
    job_id: JobId
    node_id: NodeId
    node_key: PublicKey
    node_address: Address
    node_seq: Annotated[int, Field(ge=0)]
    request: JobRequest
    request_hash: ContentId
    model_id: ContentId
    adapter_id: OptContentId
    tokenizer_id: ContentId
    prompt_tokens: Annotated[list[TokenId], Field(max_length=MAX_TOKEN_IDS)]
    output_tokens: Annotated[list[TokenId], Field(max_length=MAX_TOKENS_LIMIT)]
    output_text: Annotated[str, StringConstraints(max_length=4 * MAX_TOKENS_LIMIT)]
    finish_reason: Literal["eos", "length", "stop", "deadline"]
    fingerprint: Fingerprint
    evidence: Annotated[list[Evidence], Field(max_length=4)] = []
    started_at: Timestamp
    finished_at: Timestamp
    signature: Signature = b""
    # Additive: confidential jobs only (omitted while at their defaults).
    sealed_output: Sealed | None = None
    prompt_token_count: Annotated[int, Field(ge=0, le=MAX_TOKEN_IDS)] = 0
    output_token_count: Annotated[int, Field(ge=0, le=MAX_TOKENS_LIMIT)] = 0
    # Additive: which run of the job this is (0 = the first; n = the n-th re-run after rejections),
    # copied from the work batch and signed with the rest.
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0

    _additive = ("sealed_output", "prompt_token_count", "output_token_count", "attempt")

    def token_counts(self) -> tuple[int, int]:
        """(prompt, output) token counts, what the fee is computed from: the clear counts when sealed."""
        if self.sealed_output is not None:
            return self.prompt_token_count, self.output_token_count
        return len(self.prompt_tokens), len(self.output_tokens)


class Check(Wire):
    """One named verification check and what it found."""

    name: Annotated[str, StringConstraints(max_length=64)]
    ok: bool
    detail: ShortText = ""


class Verdict(Wire):
    """A verifier's signed verdict on one result (subject verdicts.<job_id>)."""

    v: Literal[1] = 1
    job_id: JobId
    verifier_id: Name
    verifier_key: PublicKey
    verifier_address: Address
    result_hash: ContentId
    accepted: bool
    audited: bool
    checks: Annotated[list[Check], Field(max_length=64)]
    result: InferenceResult
    decided_at: Timestamp
    signature: Signature = b""


class Payout(Wire):
    party: Literal["node", "developer", "contributor", "verifier", "treasury", "client"]
    address: Address
    amount: Wei


class Receipt(Wire):
    """Settlement's receipt for one job (subject settlement.receipts.<job_id>)."""

    v: Literal[1] = 1
    job_id: JobId
    status: Literal["settled", "refunded"]
    fee: Wei
    payouts: Annotated[list[Payout], Field(max_length=64)]
    epoch: Annotated[int, Field(ge=0)]
    tx_hash: Annotated[str, StringConstraints(pattern=r"^(0x[0-9a-f]{64})?$")]
    block: Annotated[int, Field(ge=0)]
    settled_at: Timestamp


# A result's finish_reason in OpenAI's terms: "stop" (end of turn or a stop string), "length" (max_tokens, or
# the job's deadline cut it short).
OPENAI_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "deadline": "length"}

JobStage = Literal["admitted", "rejected", "dispatched", "result", "verdict", "settled", "refunded", "failed", "rerun"]
TERMINAL_STAGES: frozenset[str] = frozenset({"rejected", "settled", "refunded"})


class JobEvent(AdditiveWire):
    """One transition of a job's life (subject jobs.events.<client_id>.<job_id>).

    `body` holds the stage's own message, encoded (request, result, verdict,
    receipt), so the datastore can keep the whole record from this one stream.
    `rerun` (body: the RerunRequest) says the attempt's result was finally rejected
    and the job goes to another node as attempt `attempt`.
    """

    v: Literal[1] = 1
    job_id: JobId
    stage: JobStage
    service: Name
    reason: ShortText = ""
    node_id: Annotated[str, StringConstraints(max_length=63)] = ""
    body: Annotated[bytes, Field(max_length=2 * 1024 * 1024)] = b""
    at: Timestamp
    # Additive: the run of the job this event belongs to (0 = the first; `rerun` names the new one).
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0

    _additive = ("attempt",)


class RerunRequest(Wire):
    """Settlement → scheduler (subject jobs.rerun): a job's result was finally rejected; run the
    client's signed request again as `attempt` on a node not in `exclude` (every node that failed it).
    The escrow reservation stays held; settlement settles or refunds the job once, at the end."""

    v: Literal[1] = 1
    job_id: JobId
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPT)]
    request: JobRequest  # the client's request, signature intact (from the rejected result)
    exclude: Annotated[list[NodeId], Field(min_length=1, max_length=MAX_ATTEMPT)]
    reason: ShortText = ""
    at: Timestamp


# ---------------------------------------------------------------------------
# Node registry
# ---------------------------------------------------------------------------


class NodeHeartbeat(Wire):
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


class VerifierAnnouncement(Wire):
    """A verifier's signed key announcement (KV bucket `verifiers`, key = verifier id; TTL).

    Clients seal confidential prompts to the announced keys (the committee)."""

    v: Literal[1] = 1
    verifier_id: Name
    verifier_key: PublicKey
    verifier_address: Address
    model_ids: Annotated[list[ContentId], Field(max_length=16)]
    at: Timestamp
    signature: Signature = b""


# ---------------------------------------------------------------------------
# Registry records (datastore)
# ---------------------------------------------------------------------------


class Contributor(Wire):
    contributor_id: Name
    address: Address
    weight_bps: Bps


class AdapterManifest(Wire):
    """An adapter's registration: who built it and whose data trained it."""

    v: Literal[1] = 1
    adapter_id: ContentId
    name: Name
    base_model_id: ContentId
    owner_address: Address
    license: Annotated[str, StringConstraints(max_length=64)] = "apache-2.0"
    contributors: Annotated[list[Contributor], Field(min_length=1, max_length=64)]
    rank: Annotated[int, Field(ge=1, le=1024)]
    target_modules: Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=32)]
    registered_at: Timestamp = 0.0

    @model_validator(mode="after")
    def _weights_sum(self) -> "AdapterManifest":
        total = sum(c.weight_bps for c in self.contributors)
        if total != 10_000:
            raise ValueError(f"contributor weights must sum to 10000 bps, got {total}")
        return self


class ModelManifest(AdditiveWire):
    """A base model's registration (weights travel out of band; nodes check the id).

    `chat_template` (Jinja, as in Hugging Face tokenizers) lets a client or the gateway render chat
    messages into the model's prompt format without the model's files."""

    v: Literal[1] = 1
    model_id: ContentId
    name: Name
    architecture: Annotated[str, StringConstraints(max_length=64)]
    tokenizer_id: ContentId
    registered_at: Timestamp = 0.0
    # Additive.
    chat_template: Annotated[str, StringConstraints(max_length=16_384)] = ""
    vocab_size: Annotated[int, Field(ge=0, le=1 << 24)] = 0

    _additive = ("chat_template", "vocab_size")


# ---------------------------------------------------------------------------
# Request-reply payloads
# ---------------------------------------------------------------------------


class ErrorReply(Wire):
    """Error body of any request-reply endpoint."""

    v: Literal[1] = 1
    code: Literal["invalid", "not_found", "hash_mismatch", "conflict", "unavailable", "internal", "forbidden"]
    message: ShortText
    field: Annotated[str, StringConstraints(max_length=128)] = ""


class Ok(Wire):
    v: Literal[1] = 1


class ModelPut(Wire):
    v: Literal[1] = 1
    manifest: ModelManifest


class ModelGet(Wire):
    v: Literal[1] = 1
    model: Name  # id or name


class AdapterPut(Wire):
    v: Literal[1] = 1
    manifest: AdapterManifest
    config: Annotated[bytes, Field(max_length=65_536)]
    weights: Annotated[bytes, Field(max_length=MAX_BLOB_BYTES)]


class AdapterGet(Wire):
    v: Literal[1] = 1
    adapter: Name  # id or registered name


class AdapterList(Wire):
    v: Literal[1] = 1
    base_model_id: OptContentId = ""
    owner_address: Annotated[str, StringConstraints(pattern=r"^(0x[0-9a-fA-F]{40})?$")] = ""


class AdapterListReply(Wire):
    v: Literal[1] = 1
    adapters: list[AdapterManifest]


class AdapterBlob(Wire):
    v: Literal[1] = 1
    adapter_id: ContentId
    config: Annotated[bytes, Field(max_length=65_536)]
    weights: Annotated[bytes, Field(max_length=MAX_BLOB_BYTES)]


class JobGet(Wire):
    v: Literal[1] = 1
    job_id: JobId


class JobRecord(AdditiveWire):
    """Everything known about a job, request → result → verdict → receipt."""

    v: Literal[1] = 1
    job_id: JobId
    status: JobStage
    reason: ShortText = ""
    request: JobRequest | None = None
    node_id: Annotated[str, StringConstraints(max_length=63)] = ""
    result: InferenceResult | None = None
    verdicts: list[Verdict] = []
    receipt: Receipt | None = None
    stages: list[JobStage] = []
    updated_at: Timestamp = 0.0
    # Additive: the job's latest attempt (result/node_id are that attempt's; verdicts cover all).
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0

    _additive = ("attempt",)


class JobList(Wire):
    """A client's recent jobs, newest first (datastore.job.list)."""

    v: Literal[1] = 1
    client_address: Address
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    before: Timestamp = 0.0  # only jobs created before this time; 0 = now (page with the last created_at)


class JobSummary(Wire):
    v: Literal[1] = 1
    job_id: JobId
    status: JobStage
    model_id: OptContentId = ""
    adapter_id: OptContentId = ""
    created_at: Timestamp = 0.0
    updated_at: Timestamp = 0.0


class JobListReply(Wire):
    v: Literal[1] = 1
    jobs: list[JobSummary]


class BalanceGet(Wire):
    v: Literal[1] = 1
    address: Address


class Balance(Wire):
    v: Literal[1] = 1
    address: Address
    token: Wei  # OPEN held in the wallet
    escrow: Wei  # deposited for jobs
    credit: Wei  # earned, withdrawable
    stake: Wei = 0


class StakeGet(Wire):
    v: Literal[1] = 1
    address: Address


class Stake(Wire):
    """A node's stake in the Registry (settlement.stake)."""

    v: Literal[1] = 1
    address: Address
    stake: Wei
    unbonding: Wei = 0
    unbonding_until: Annotated[int, Field(ge=0)] = 0  # chain timestamp when the unbonding part can be withdrawn
    active: bool = False  # staked at least min_stake
    payout: Address = "0x" + "0" * 40
    ed25519_key: Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")] = ""
    min_stake: Wei = 0


class Reserve(Wire):
    """Admission: lock a job's max fee in its client's escrow (settlement.reserve)."""

    v: Literal[1] = 1
    job_id: JobId
    client_address: Address
    max_fee: Wei


class Release(AdditiveWire):
    """A reserved job that will never be verified (expired, failed): refund it (settlement.release)."""

    v: Literal[1] = 1
    job_id: JobId
    reason: ShortText = ""
    # Additive: the job's client key, which names the subject of its refund event (jobs.events.<client_id>.*);
    # without it settlement finds the client from the job's earlier events.
    client_key: Annotated[bytes, Field(max_length=32)] = b""

    _additive = ("client_key",)


class Reservation(Wire):
    """Reply to settlement.reserve: the job's state on chain and the client's escrow left unreserved."""

    v: Literal[1] = 1
    job_id: JobId
    state: Literal["reserved", "settled", "refunded"]
    available: Wei = 0


class Faucet(Wire):
    """Devnet only: give `address` OPEN and deposit `escrow` of it for jobs."""

    v: Literal[1] = 1
    address: Address
    amount: Wei
    escrow: Wei = 0


class DeadLetter(Wire):
    """A message that could not be handled, with why (subject dlq.<subject>)."""

    v: Literal[1] = 1
    subject: Annotated[str, StringConstraints(max_length=256)]
    service: Name
    reason: ShortText
    data: Annotated[bytes, Field(max_length=8 * 1024 * 1024)]
    deliveries: Annotated[int, Field(ge=0)] = 0
    at: Timestamp


# ---------------------------------------------------------------------------
# Subjects
# ---------------------------------------------------------------------------

JOBS_SUBMIT = "jobs.submit"
JOBS_RERUN = "jobs.rerun"  # settlement → scheduler: run a job again after its result was rejected
# jobs.events.<client_id>.<job_id>: keyed by client, so NATS permissions can give each client its own.
JOB_EVENTS_ALL = "jobs.events.*.*"
WORK_ALL = "work.*"
RESULTS_ALL = "results.*"
VERDICTS_ALL = "verdicts.*"
RECEIPTS_ALL = "settlement.receipts.*"
DEAD_LETTER_ALL = "dlq.>"

DATASTORE_MODEL_PUT = "datastore.model.put"
DATASTORE_MODEL_GET = "datastore.model.get"
DATASTORE_ADAPTER_PUT = "datastore.adapter.put"
DATASTORE_ADAPTER_GET = "datastore.adapter.get"
DATASTORE_ADAPTER_LIST = "datastore.adapter.list"
DATASTORE_ADAPTER_BLOB = "datastore.adapter.blob"
DATASTORE_JOB_GET = "datastore.job.get.*"  # datastore.job.get.<client_id>: a client reads its own records
DATASTORE_JOB_LIST = "datastore.job.list"
SETTLEMENT_BALANCE = "settlement.balance"
SETTLEMENT_FAUCET = "settlement.faucet"
SETTLEMENT_STAKE = "settlement.stake"
SETTLEMENT_RESERVE = "settlement.reserve"
SETTLEMENT_RELEASE = "settlement.release"

NODES_BUCKET = "nodes"
VERIFIERS_BUCKET = "verifiers"  # VerifierAnnouncement per verifier, written by verifiers (TTL)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} cannot be used in a subject (letters, digits, '-' and '_' only)")
    return value


def work(node_id: str) -> str:
    return f"work.{_token(node_id, 'node id')}"


def results(node_id: str) -> str:
    return f"results.{_token(node_id, 'node id')}"


def verdicts(job_id: str) -> str:
    return f"verdicts.{_token(job_id, 'job id')}"


def receipts(job_id: str) -> str:
    return f"settlement.receipts.{_token(job_id, 'job id')}"


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


def request_of(body: object) -> JobRequest | None:
    """The client's signed request carried (directly or nested) by a job event's body."""
    if isinstance(body, JobRequest):
        return body
    if isinstance(body, InferenceResult):
        return body.request
    if isinstance(body, Verdict):
        return body.result.request
    if isinstance(body, RerunRequest):
        return body.request
    return None


def job_events(client: bytes | str, job_id: str) -> str:
    """jobs.events.<client_id>.<job_id>; `client` is the client's key or its id."""
    return f"jobs.events.{_client_token(client)}.{_token(job_id, 'job id')}"


def job_events_of(client: bytes | str) -> str:
    """Every job event of one client: jobs.events.<client_id>.*"""
    return f"jobs.events.{_client_token(client)}.*"


def job_events_by_id(job_id: str) -> str:
    """A job's events whoever its client is (services only: a filter, not a subject)."""
    return f"jobs.events.*.{_token(job_id, 'job id')}"


def parse_job_events(subject: str) -> tuple[str, str]:
    """(client_id, job_id) of a jobs.events.<client_id>.<job_id> subject; ValueError otherwise."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["jobs", "events"] or not CLIENT_ID.match(parts[2]):
        raise ValueError(f"not a job events subject: {subject!r}")
    return parts[2], _token(parts[3], "job id")


def datastore_job_get(client: bytes | str) -> str:
    """datastore.job.get.<client_id>: where a client asks for the records of its own jobs."""
    return f"datastore.job.get.{_client_token(client)}"


def dead_letter(subject: str) -> str:
    return f"dlq.{subject}"


# Subject pattern → schema, for decoding by subject and for the fuzz tests.
SCHEMAS: dict[str, type[Wire]] = {
    JOBS_SUBMIT: JobRequest,
    JOBS_RERUN: RerunRequest,
    WORK_ALL: WorkBatch,
    RESULTS_ALL: InferenceResult,
    VERDICTS_ALL: Verdict,
    RECEIPTS_ALL: Receipt,
    JOB_EVENTS_ALL: JobEvent,
    DEAD_LETTER_ALL: DeadLetter,
    DATASTORE_MODEL_PUT: ModelPut,
    DATASTORE_MODEL_GET: ModelGet,
    DATASTORE_ADAPTER_PUT: AdapterPut,
    DATASTORE_ADAPTER_GET: AdapterGet,
    DATASTORE_ADAPTER_LIST: AdapterList,
    DATASTORE_ADAPTER_BLOB: AdapterGet,
    DATASTORE_JOB_GET: JobGet,
    DATASTORE_JOB_LIST: JobList,
    SETTLEMENT_BALANCE: BalanceGet,
    SETTLEMENT_FAUCET: Faucet,
    SETTLEMENT_STAKE: StakeGet,
    SETTLEMENT_RESERVE: Reserve,
    SETTLEMENT_RELEASE: Release,
}

# Per-subject size ceilings (bytes), below the codec's global limit.
MAX_BYTES: dict[str, int] = {
    JOBS_SUBMIT: 256 * 1024,
    JOBS_RERUN: 512 * 1024,
    WORK_ALL: 4 * 1024 * 1024,
    RESULTS_ALL: 1024 * 1024,
    VERDICTS_ALL: 1024 * 1024,
    RECEIPTS_ALL: 64 * 1024,
    JOB_EVENTS_ALL: 2 * 1024 * 1024 + 4096,
    DATASTORE_ADAPTER_PUT: MAX_BLOB_BYTES + 128 * 1024,
}
