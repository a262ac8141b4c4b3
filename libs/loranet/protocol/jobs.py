"""Jobs: the client's request, the work a node gets, its result, the verdict, the receipt, the job's stages."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from ..codec import AdditiveWire, Wire, content_id
from .base import (
    MAX_PROMPT_CHARS,
    MAX_TOKEN_IDS,
    MAX_TOKENS_LIMIT,
    Address,
    ContentId,
    JobId,
    Name,
    NodeId,
    OptContentId,
    PublicKey,
    ShortText,
    Signature,
    Signed,
    Timestamp,
    TokenId,
    Wei,
)

MAX_ATTRIBUTED = 16  # contributors paid per answer at most (the largest shares): each costs gas

# Content ids (not signatures) get their own domains.
DOMAIN_REQUEST_HASH = "loranet/request-hash/v1"
DOMAIN_RESULT_HASH = "loranet/result-hash/v1"


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


class JobRequest(AdditiveWire, Signed):
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
    # Ask the node to send tokens as it generates them (jobs.tokens.<client_id>.<job_id>: provisional,
    # unverified, in clear; never for a confidential job). The verified answer comes as always.
    stream: bool = False

    _additive = ("sealed_prompt", "node_id", "tokenizer_id", "stream")
    SIGNING_DOMAIN: ClassVar[str] = "loranet/job-request/v1"
    SIGNER_FIELD: ClassVar[str] = "client_key"

    @model_validator(mode="after")
    def _sealed_shape(self) -> JobRequest:
        if self.sealed_prompt is not None and (self.prompt or not self.node_id):
            raise ValueError("a sealed prompt needs an empty `prompt` and the `node_id` it was sealed to")
        return self

    @property
    def confidential(self) -> bool:
        return self.sealed_prompt is not None

    @property
    def streams_tokens(self) -> bool:
        """The node sends this job's tokens as generated (asked for, and the job is not confidential)."""
        return self.stream and not self.confidential

    def request_hash(self) -> str:
        """The request's content id (what a result names in `request_hash`)."""
        return content_id(self, DOMAIN_REQUEST_HASH)

    def tokenizer_problem(self, model_tokenizer_id: str) -> str:
        """Why this job cannot run on a model whose tokenizer is `model_tokenizer_id` ("" = it can)."""
        if not self.tokenizer_id or self.tokenizer_id == model_tokenizer_id:
            return ""
        return (
            f"job names tokenizer {self.tokenizer_id[:12]}…, but model {self.model_id[:12]}… uses "
            f"tokenizer {model_tokenizer_id[:12]}…"
        )


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


class Assignment(Wire, Signed):
    """The scheduler's signed word that a job's run (`attempt`) goes to node `node_id`. It travels in the
    work batch and the node copies it into its result: a verifier refuses a result without one from an
    announced scheduler (KV `schedulers`) naming that node, so no node answers another node's job."""

    v: Literal[1] = 1
    job_id: JobId
    node_id: NodeId
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0
    batch_id: JobId
    scheduler_id: Name
    scheduler_key: PublicKey
    at: Timestamp
    signature: Signature = b""

    SIGNING_DOMAIN: ClassVar[str] = "loranet/assignment/v1"
    SIGNER_FIELD: ClassVar[str] = "scheduler_key"


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
    # Additive: the scheduler's signed assignment of each job to this node.
    assignments: Annotated[list[Assignment], Field(max_length=256)] = []

    _additive = ("attempts", "assignments")

    def attempt_of(self, job_id: str) -> int:
        return next((a.attempt for a in self.attempts if a.job_id == job_id), 0)

    def assignment_of(self, job_id: str) -> Assignment | None:
        return next((a for a in self.assignments if a.job_id == job_id), None)


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


class InferenceResult(AdditiveWire, Signed):
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
    # Additive: the scheduler's signed assignment of this run to this node, copied from the work batch.
    assignment: Assignment | None = None

    _additive = ("sealed_output", "prompt_token_count", "output_token_count", "attempt", "assignment")
    SIGNING_DOMAIN: ClassVar[str] = "loranet/inference-result/v1"
    SIGNER_FIELD: ClassVar[str] = "node_key"

    def result_hash(self) -> str:
        """The result's content id (what a verdict names in `result_hash`)."""
        return content_id(self, DOMAIN_RESULT_HASH)

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


class AttributedSpan(Wire):
    """A verbatim span of the output found in training records (ids as the attribution index names them)."""

    start: Annotated[int, Field(ge=0, le=MAX_TOKENS_LIMIT)]
    length: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]
    records: Annotated[list[Annotated[str, StringConstraints(max_length=128)]], Field(max_length=16)]


class ContributorShare(Wire):
    address: Address
    bps: Annotated[int, Field(ge=1, le=10_000)]


class Attribution(Wire):
    """Which training contributions one accepted answer reproduces (libs/loranet/attribution.py's rule),
    computed and signed by the verifier inside its verdict; settlement splits the data share by it."""

    index_id: ContentId  # the adapter's attribution index (its manifest names it)
    min_tokens: Annotated[int, Field(ge=1, le=1024)]
    output_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS_LIMIT)]
    matched_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS_LIMIT)]
    spans: Annotated[list[AttributedSpan], Field(max_length=64)] = []
    contributors: Annotated[list[ContributorShare], Field(max_length=MAX_ATTRIBUTED)] = []  # bps sum to 10000

    @model_validator(mode="after")
    def _shares_sum(self) -> Attribution:
        total = sum(c.bps for c in self.contributors)
        if self.contributors and total != 10_000:
            raise ValueError(f"attributed shares must sum to 10000 bps, got {total}")
        if len({c.address.lower() for c in self.contributors}) != len(self.contributors):
            raise ValueError("a contributor appears twice in an attribution")
        return self


class Verdict(AdditiveWire, Signed):
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
    # Additive: who the answer's data came from (accepted results on adapters with an attribution index).
    attribution: Attribution | None = None

    _additive = ("attribution",)
    SIGNING_DOMAIN: ClassVar[str] = "loranet/verdict/v1"
    SIGNER_FIELD: ClassVar[str] = "verifier_key"


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


class Stage(StrEnum):
    """The stages of a job's life, as its events name them (a string on the wire)."""

    ADMITTED = "admitted"  # scheduler: signed, paid for, queued
    REJECTED = "rejected"  # scheduler: refused at admission (no event follows)
    DISPATCHED = "dispatched"  # scheduler: sent to a node
    RESULT = "result"  # node: signed result
    VERDICT = "verdict"  # verifier: signed verdict
    FAILED = "failed"  # node: could not run it; only the job's refund follows
    RERUN = "rerun"  # settlement: the result was finally rejected; the job runs again elsewhere
    SETTLED = "settled"  # settlement: paid out on chain (no event follows)
    REFUNDED = "refunded"  # settlement: the client's reservation returned (no event follows)

    @property
    def terminal(self) -> bool:
        """The job's life is over: no event follows this one."""
        return self in TERMINAL_STAGES

    @property
    def ends_work(self) -> bool:
        """No node works on the job after this stage (terminal, or a node's failure awaiting its refund)."""
        return self.terminal or self is Stage.FAILED


TERMINAL_STAGES: frozenset[Stage] = frozenset({Stage.REJECTED, Stage.SETTLED, Stage.REFUNDED})


class JobEvent(AdditiveWire):
    """One transition of a job's life (subject jobs.events.<client_id>.<job_id>).

    `body` holds the stage's own message, encoded (request, result, verdict,
    receipt), so the datastore can keep the whole record from this one stream.
    `rerun` (body: the RerunRequest) says the attempt's result was finally rejected
    and the job goes to another node as attempt `attempt`.
    """

    v: Literal[1] = 1
    job_id: JobId
    stage: Annotated[Stage, Field(strict=False)]  # a string on the wire
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
    # the payout addresses (operators) of the nodes that failed it: no node of theirs runs it again
    exclude_operators: Annotated[list[Address], Field(max_length=MAX_ATTEMPT)] = []


MAX_COMMITTEE = 16  # verifiers drawn to audit one run at most


class AuditRequest(Wire):
    """Settlement → one verifier (results.audit.<verifier_id>): audit this result as a member of the
    committee settlement drew for its run (stake-weighted, at random, after the result and its first
    verdict exist). The member's verdict goes to verdicts.<job_id> like any other; the run is decided
    when `needed` members agree."""

    v: Literal[1] = 1
    job_id: JobId
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0
    verifier_id: Name  # the member this request is for
    committee: Annotated[list[Name], Field(min_length=1, max_length=MAX_COMMITTEE)]
    needed: Annotated[int, Field(ge=1, le=MAX_COMMITTEE)]
    result: InferenceResult  # the node's signed result, as published
    at: Timestamp


class TokenDelta(Wire):
    """Node → client (core NATS jobs.tokens.<client_id>.<job_id>, not stored): text a node has generated
    so far for a job that asked to stream, sent as it comes. Provisional: nothing here is verified; the
    job's verdict and receipt, on its events, say whether this text (this node's, this attempt's) stood."""

    v: Literal[1] = 1
    job_id: JobId
    node_id: NodeId
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0
    seq: Annotated[int, Field(ge=0, le=2**31)]  # 0, 1, 2 ... per (job, attempt)
    text: Annotated[str, StringConstraints(max_length=16_384)]  # appended to what came before
    tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS_LIMIT)]  # tokens generated so far
    done: bool = False  # the node has finished this attempt (its signed result follows)
    at: Timestamp


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
