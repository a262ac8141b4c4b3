"""The datastore's records and the requests that read and write them: models, adapters, job records."""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from ..codec import AdditiveWire, Wire
from .base import (
    MAX_BLOB_BYTES,
    Address,
    Bps,
    ContentId,
    JobId,
    Name,
    OptContentId,
    PublicKey,
    ShortText,
    Signature,
    Signed,
    Timestamp,
)
from .jobs import MAX_ATTEMPT, InferenceResult, JobRequest, Receipt, Stage, Verdict


class Contributor(Wire):
    contributor_id: Name
    address: Address
    weight_bps: Bps


class AdapterManifest(AdditiveWire):
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
    # Additive: the sha256 of its attribution index (libs/loranet/attribution.py) over its training records.
    attribution_index: OptContentId = ""

    _additive = ("attribution_index",)

    @model_validator(mode="after")
    def _weights_sum(self) -> AdapterManifest:
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


class ModelPut(Wire):
    v: Literal[1] = 1
    manifest: ModelManifest


class ModelGet(Wire):
    v: Literal[1] = 1
    model: Name  # id or name


class AdapterPut(AdditiveWire):
    v: Literal[1] = 1
    manifest: AdapterManifest
    config: Annotated[bytes, Field(max_length=65_536)]
    weights: Annotated[bytes, Field(max_length=MAX_BLOB_BYTES)]
    attribution: Annotated[bytes, Field(max_length=MAX_BLOB_BYTES)] = b""  # the index manifest.attribution_index names

    _additive = ("attribution",)


class AttributionGet(Wire):
    v: Literal[1] = 1
    index_id: ContentId


class AttributionIndexBlob(Wire):
    v: Literal[1] = 1
    index_id: ContentId
    data: Annotated[bytes, Field(max_length=MAX_BLOB_BYTES)]


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
    status: Annotated[Stage, Field(strict=False)]
    reason: ShortText = ""
    request: JobRequest | None = None
    node_id: Annotated[str, StringConstraints(max_length=63)] = ""
    result: InferenceResult | None = None
    verdicts: list[Verdict] = []
    receipt: Receipt | None = None
    stages: list[Annotated[Stage, Field(strict=False)]] = []
    updated_at: Timestamp = 0.0
    # Additive: the job's latest attempt (result/node_id are that attempt's; verdicts cover all).
    attempt: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)] = 0

    _additive = ("attempt",)


class JobList(Wire):
    """A client's recent jobs, newest first (datastore.job.list.<client_id>: only that client's, among the
    address's)."""

    v: Literal[1] = 1
    client_address: Address
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    before: Timestamp = 0.0  # only jobs created before this time; 0 = now (page with the last created_at)


class JobSummary(Wire):
    v: Literal[1] = 1
    job_id: JobId
    status: Annotated[Stage, Field(strict=False)]
    model_id: OptContentId = ""
    adapter_id: OptContentId = ""
    created_at: Timestamp = 0.0
    updated_at: Timestamp = 0.0


class JobListReply(Wire):
    v: Literal[1] = 1
    jobs: list[JobSummary]


# -- datanets: named collections of signed contributions, immutable versions -----------------------

MAX_CONTRIBUTION_BYTES = 4 * 1024 * 1024
MAX_CONTRIBUTIONS = 1024  # per datanet version


class DatanetCreate(Wire):
    v: Literal[1] = 1
    name: Name
    description: Annotated[str, StringConstraints(max_length=256)] = ""


class Contribution(AdditiveWire, Signed):
    """A contributor's records for a datanet (chat or text JSONL), signed by the contributor's key.

    Content-addressed by its records (`contribution_id` = their sha256): the same content is accepted once,
    for its first contributor. `payout_address` is bound to the first key that claims it."""

    v: Literal[1] = 1
    datanet: Name
    contributor_key: PublicKey
    payout_address: Address
    license: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "cc-by-4.0"
    records: Annotated[bytes, Field(min_length=1, max_length=MAX_CONTRIBUTION_BYTES)]
    created_at: Timestamp
    signature: Signature = b""

    SIGNING_DOMAIN: ClassVar[str] = "loranet/contribution/v1"
    SIGNER_FIELD: ClassVar[str] = "contributor_key"

    def contribution_id(self) -> str:
        return hashlib.sha256(self.records).hexdigest()


class ContributionEntry(Wire):
    """One contribution as a datanet version lists it (its records are fetched by id)."""

    contribution_id: ContentId
    contributor_key: PublicKey
    payout_address: Address
    license: Annotated[str, StringConstraints(max_length=64)]
    records: Annotated[int, Field(ge=1)]
    bytes: Annotated[int, Field(ge=1, le=MAX_CONTRIBUTION_BYTES)]
    created_at: Timestamp


class DatanetVersion(Wire):
    """A datanet as it stood at `version` (0 = created, empty); immutable once stored. `merkle_root` is
    the Merkle root (libs/loranet/merkle.py) of keccak256 of each contribution id, in order."""

    v: Literal[1] = 1
    name: Name
    version: Annotated[int, Field(ge=0)]
    description: Annotated[str, StringConstraints(max_length=256)] = ""
    contributions: Annotated[list[ContributionEntry], Field(max_length=MAX_CONTRIBUTIONS)] = []
    merkle_root: Annotated[str, StringConstraints(pattern=r"^(0x[0-9a-f]{64})?$")] = ""
    created_at: Timestamp = 0.0


class DatanetGet(Wire):
    v: Literal[1] = 1
    name: Name
    version: Annotated[int, Field(ge=-1)] = -1  # -1 = the latest


class ContributionGet(Wire):
    v: Literal[1] = 1
    contribution_id: ContentId


class ContributionRecords(Wire):
    v: Literal[1] = 1
    contribution_id: ContentId
    records: Annotated[bytes, Field(max_length=MAX_CONTRIBUTION_BYTES)]
