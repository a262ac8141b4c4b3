"""The datastore's rules, with no I/O: key names, manifest checks, job stages.

Job status moves forward only.  Every stage has a rank and a job's status is
the highest-ranked stage it has seen, so events may arrive in any order and
any number of times:

    admitted(1) < rerun(2) < dispatched(3) < result(4) < verdict(5) < rejected, failed(6) < settled, refunded(7)

`rejected` (admission refused) and `failed` (no node could finish the job)
are terminal for the work, so they outrank the work stages that may still
trickle in late; only the money (`settled` / `refunded`, e.g. the refund of a
failed job) outranks them.  A late `dispatched` after `settled` is recorded
in `stages` but never changes the status.

Each (job_id, stage) is recorded once — the first event wins — except
verdicts, which are recorded once per verifier.

Re-runs: a job whose result was finally rejected is run again (`rerun`, then
its own `dispatched`, `result`, `verdict` events, all with `attempt` n ≥ 1).
Each attempt's events are recorded apart (`event:a<n>:<stage>`), and the work
stages are ordered by (attempt, rank): a later attempt's `dispatched` moves the
status on from an earlier attempt's `verdict`, while the terminal stages still
outrank every work stage of any attempt.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from loranet import codec
from loranet import protocol as p
from loranet.attribution import AttributionIndex, IndexCorrupt
from loranet.codec import DecodeError, Wire
from loranet.errors import Refused, ServiceError
from loranet.model.adapters import adapter_id_of_blobs

# Where each stage stands in a job's life; the stages that end the work (p.Stage.ends_work) rank above
# every work stage of every attempt.
STAGE_RANK: dict[str, int] = {
    p.Stage.ADMITTED: 1,
    p.Stage.RERUN: 2,
    p.Stage.DISPATCHED: 3,
    p.Stage.RESULT: 4,
    p.Stage.VERDICT: 5,
    p.Stage.REJECTED: 6,
    p.Stage.FAILED: 6,
    p.Stage.SETTLED: 7,
    p.Stage.REFUNDED: 7,
}

# The message each stage's event carries in `body`; None = body may be empty.
STAGE_BODY: dict[str, type[Wire] | None] = {
    "admitted": p.JobRequest,
    "dispatched": None,
    "result": p.InferenceResult,
    "verdict": p.Verdict,
    "rejected": None,
    "failed": None,
    "settled": p.Receipt,
    "refunded": p.Receipt,
    "rerun": p.RerunRequest,
}

_CONTENT_ID = re.compile(r"^[0-9a-f]{64}$")

# ---------------------------------------------------------------------------
# Redis key layout (see README.md)
# ---------------------------------------------------------------------------


def model_key(model_id: str) -> str:
    return f"model:{model_id}"


def model_name_key(name: str) -> str:
    return f"model-name:{name}"


def adapter_key(adapter_id: str) -> str:
    return f"adapter:{adapter_id}"


def adapter_name_key(name: str) -> str:
    return f"adapter-name:{name}"


ADAPTERS_ALL = "adapters:all"


def adapters_by_base_key(model_id: str) -> str:
    return f"adapters:base:{model_id}"


def adapters_by_owner_key(address: str) -> str:
    return f"adapters:owner:{address.lower()}"


def blob_meta_key(sha: str) -> str:
    return f"blob:{sha}"


def blob_chunk_key(sha: str, index: int) -> str:
    return f"blob:{sha}:{index}"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def client_jobs_key(address: str) -> str:
    return f"client-jobs:{address.lower()}"


def is_content_id(value: str) -> bool:
    return bool(_CONTENT_ID.match(value))


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def manifest_digest(manifest: p.ModelManifest | p.AdapterManifest) -> str:
    """What makes two registrations "the same": everything but registered_at."""
    return hashlib.sha256(codec.encode(manifest.model_copy(update={"registered_at": 0.0}))).hexdigest()


def check_name(name: str) -> None:
    # Lookups take "id or name": a name that looks like an id would be ambiguous.
    if is_content_id(name):
        raise ServiceError(
            "invalid", "a name must not look like a 64-hex content id; choose a readable name", "manifest.name"
        )


def check_model_manifest(manifest: p.ModelManifest) -> None:
    check_name(manifest.name)
    if not manifest.architecture:
        raise ServiceError(
            "invalid", "architecture is empty; give the HF architecture, e.g. LlamaForCausalLM", "manifest.architecture"
        )


def check_attribution_upload(manifest: p.AdapterManifest, index: bytes) -> None:
    """An attribution index comes with the manifest that names it, hashes to that name and parses."""
    if not manifest.attribution_index:
        if index:
            raise ServiceError(
                "invalid", "an attribution index needs manifest.attribution_index (its sha256)", "attribution"
            )
        return
    if not index:
        raise ServiceError(
            "invalid", "manifest.attribution_index names an index the upload does not carry", "attribution"
        )
    try:
        AttributionIndex.from_bytes(index, manifest.attribution_index)
    except IndexCorrupt as exc:
        code = "hash_mismatch" if "hash" in str(exc) else "invalid"
        raise ServiceError(code, str(exc), "attribution") from None


def check_adapter_upload(manifest: p.AdapterManifest, config: bytes, weights: bytes) -> None:
    """The manifest must describe the blobs it comes with, and the blobs must hash to its id."""
    check_name(manifest.name)
    seen: set[str] = set()
    for i, c in enumerate(manifest.contributors):
        if c.contributor_id in seen:
            raise ServiceError(
                "invalid", f"contributor {c.contributor_id!r} is listed twice", f"manifest.contributors.{i}"
            )
        seen.add(c.contributor_id)
    try:
        found = adapter_id_of_blobs(config, weights)
    except ValueError as exc:  # not JSON, not LoRA, malformed safetensors
        raise ServiceError("invalid", f"adapter blobs are not a PEFT LoRA adapter: {exc}", "config") from None
    if found != manifest.adapter_id:
        raise ServiceError(
            "hash_mismatch",
            f"config + weights hash to adapter_id {found}, not {manifest.adapter_id}; re-read the adapter "
            "directory or correct the id",
            "manifest.adapter_id",
        )
    peft = json.loads(config)
    if peft.get("r") != manifest.rank:
        raise ServiceError(
            "invalid", f"manifest rank {manifest.rank} differs from the config's r={peft.get('r')}", "manifest.rank"
        )
    targets = peft.get("target_modules")
    if isinstance(targets, list) and sorted(targets) != sorted(manifest.target_modules):
        raise ServiceError(
            "invalid",
            f"manifest target_modules {sorted(manifest.target_modules)} differ from the config's {sorted(targets)}",
            "manifest.target_modules",
        )
    base = peft.get("base_model_name_or_path")
    # A config that names its base by content id binds the adapter to that base.
    if isinstance(base, str) and is_content_id(base) and base != manifest.base_model_id:
        raise ServiceError(
            "invalid",
            f"the adapter config was built for base model {base}, the manifest says {manifest.base_model_id}",
            "manifest.base_model_id",
        )


# ---------------------------------------------------------------------------
# Job records
# ---------------------------------------------------------------------------


def event_field(event: p.JobEvent, body: Wire | None) -> str:
    """The field of the job's hash this event is recorded under (first write wins)."""
    prefix = f"event:a{event.attempt}:" if event.attempt else "event:"  # each re-run's events apart
    if event.stage == "verdict" and isinstance(body, p.Verdict):
        return f"{prefix}verdict:{body.verifier_id}"
    return f"{prefix}{event.stage}"


CLIENT_FIELD = "client"  # the job hash's field holding its client id (the events' subject token)


def check_event(event: p.JobEvent, subject: str) -> Wire | None:
    """Decode and cross-check an event's body; Refused (dead letter) what cannot be recorded."""
    try:
        client, job_id = p.parse_job_events(subject)
    except ValueError:
        raise Refused(f"event for job {event.job_id} arrived on {subject}") from None
    if job_id != event.job_id:
        raise Refused(f"event for job {event.job_id} arrived on {subject}")
    schema = STAGE_BODY[event.stage]
    if schema is None:
        return None
    if not event.body:
        raise Refused(f"stage {event.stage!r} needs its {schema.__name__} in body")
    try:
        body = codec.decode(schema, event.body, len(event.body))
    except DecodeError as exc:
        raise Refused(f"body of stage {event.stage!r}: {exc}") from None
    body_job = getattr(body, "job_id", None)  # every stage's body names its job
    if body_job != event.job_id:
        raise Refused(f"body is for job {body_job}, the event for {event.job_id}")
    if isinstance(body, p.Receipt) and body.status != event.stage:
        raise Refused(f"receipt status {body.status!r} in a {event.stage!r} event")
    attempt = (
        body.attempt
        if isinstance(body, (p.InferenceResult, p.RerunRequest))
        else (body.result.attempt if isinstance(body, p.Verdict) else event.attempt)
    )
    if attempt != event.attempt:
        raise Refused(f"body is attempt {attempt} of the job, the event says {event.attempt}")
    request = p.request_of(body)
    if request is not None and p.client_id(request.client_key) != client:
        raise Refused(
            f"body is a job of client {p.client_id(request.client_key)[:16]}…, the subject names {client[:16]}…"
        )
    return body


def client_of(job_id: str, fields: Mapping[str, bytes]) -> str:
    """The client id a job's record belongs to: recorded from its events' subject, else its request's key."""
    if CLIENT_FIELD in fields:
        return fields[CLIENT_FIELD].decode()
    try:
        request = assemble_record(job_id, fields).request
    except ValueError:
        return ""
    return p.client_id(request.client_key) if request is not None else ""


def status_of(stages: list[str]) -> str:
    return max(stages, key=lambda s: STAGE_RANK[s])


def event_order(event: p.JobEvent) -> tuple[int, int, int]:
    """Where an event stands in the job's life: terminal stages above all, then (attempt, stage rank)."""
    rank = STAGE_RANK[event.stage]
    return (1, 0, rank) if event.stage.ends_work else (0, event.attempt, rank)


def assemble_record(job_id: str, fields: Mapping[str, bytes]) -> p.JobRecord:
    """A JobRecord from the recorded events (`event:*` fields of the job's hash)."""
    events: list[tuple[p.JobEvent, Wire | None]] = []
    for name in sorted(fields):
        if not name.startswith("event:"):
            continue
        event = codec.decode(p.JobEvent, fields[name])
        schema = STAGE_BODY[event.stage]
        body = codec.decode(schema, event.body, len(event.body)) if schema and event.body else None
        events.append((event, body))
    if not events:
        raise ValueError(f"job {job_id} has no recorded events")
    events.sort(key=lambda eb: (event_order(eb[0]), eb[0].at))
    stages: list[str] = []
    listed: set[tuple[str, int]] = set()
    for event, _ in events:
        if (event.stage, event.attempt) in listed:
            continue
        listed.add((event.stage, event.attempt))
        stages.append(event.stage)  # a re-run's stages are listed again, in order
    last = events[-1][0]  # the status: the first event of the furthest stage
    status = last.stage
    first = next(e for e, _ in events if event_order(e) == event_order(last))
    attempt = max(e.attempt for e, _ in events)
    request = next((r for r in (p.request_of(b) for _, b in events) if r is not None), None)
    # The latest attempt's result (and node): the one that was settled, or is still being judged.
    result = next((b for _, b in reversed(events) if isinstance(b, p.InferenceResult)), None)
    verdicts = sorted(
        (b for e, b in events if isinstance(b, p.Verdict)),
        key=lambda v: (v.result.attempt, v.decided_at, v.verifier_id),
    )
    receipt = next((b for _, b in events if isinstance(b, p.Receipt)), None)
    node_id = result.node_id if isinstance(result, p.InferenceResult) and result.attempt == attempt else ""
    if not node_id:
        node_id = next(
            (e.node_id for e, _ in reversed(events) if e.node_id and e.attempt == attempt and e.stage != "rerun"), ""
        ) or next((e.node_id for e, _ in events if e.node_id), "")
    reason = first.reason or next((e.reason for e, _ in reversed(events) if e.reason), "")
    return p.JobRecord(
        job_id=job_id,
        status=status,
        reason=reason,
        request=request,
        node_id=node_id,
        result=result,
        verdicts=verdicts,
        receipt=receipt,
        stages=[p.Stage(s) for s in stages],
        updated_at=max(e.at for e, _ in events),
        attempt=attempt,
    )


def summary_of(record: p.JobRecord) -> p.JobSummary:
    req = record.request
    return p.JobSummary(
        job_id=record.job_id,
        status=record.status,
        model_id=req.model_id if req else "",
        adapter_id=req.adapter_id if req else "",
        created_at=req.created_at if req else 0.0,
        updated_at=record.updated_at,
    )


# ---------------------------------------------------------------------------
# Datanets
# ---------------------------------------------------------------------------

MAX_RECORDS = 20_000  # lines in one contribution


def datanet_key(name: str) -> str:
    return f"datanet:{name}"


def datanet_version_key(name: str, version: int) -> str:
    return f"datanet:{name}:v{version}"


def contribution_key(contribution_id: str) -> str:
    return f"contribution:{contribution_id}"


def payout_binding_key(address: str) -> str:
    return f"payout-key:{address.lower()}"


def check_contribution(c: p.Contribution) -> int:
    """The number of records of a well-formed, correctly signed contribution; ServiceError otherwise.

    Records are JSONL: each line an object with `messages` (a list of {role, content} strings) or `text`."""
    check_name(c.datanet)
    try:
        c.verify()
    except Exception as exc:
        raise ServiceError("forbidden", f"contribution signature: {exc}", "signature") from None
    try:
        lines = c.records.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ServiceError("invalid", "records are not UTF-8 JSONL", "records") from None
    count = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ServiceError("invalid", f"records line {n}: not JSON ({exc.msg})", "records") from None
        messages, text = (row.get("messages"), row.get("text")) if isinstance(row, dict) else (None, None)
        ok_chat = (
            isinstance(messages, list)
            and bool(messages)
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        )
        if not ok_chat and not (isinstance(text, str) and text.strip()):
            raise ServiceError(
                "invalid", f"records line {n}: needs `messages` [{{role, content}}] or a non-empty `text`", "records"
            )
        count += 1
        if count > MAX_RECORDS:
            raise ServiceError("invalid", f"more than {MAX_RECORDS} records in one contribution", "records")
    if not count:
        raise ServiceError("invalid", "no records", "records")
    return count


def version_root(contribution_ids: list[str]) -> str:
    """The Merkle root of a datanet version: keccak256 of each contribution id's bytes as leaves."""
    from eth_utils import keccak

    from loranet import merkle

    if not contribution_ids:
        return ""
    return "0x" + merkle.root([keccak(bytes.fromhex(c)) for c in contribution_ids]).hex()


def next_version(current: p.DatanetVersion, c: p.Contribution, records: int, now: float) -> p.DatanetVersion:
    """The version a contribution makes: the previous one's contributions and this one (immutable)."""
    if len(current.contributions) >= p.MAX_CONTRIBUTIONS:
        raise ServiceError("conflict", f"datanet {c.datanet} holds {p.MAX_CONTRIBUTIONS} contributions", "datanet")
    entry = p.ContributionEntry(
        contribution_id=c.contribution_id(),
        contributor_key=c.contributor_key,
        payout_address=c.payout_address,
        license=c.license,
        records=records,
        bytes=len(c.records),
        created_at=c.created_at,
    )
    contributions = [*current.contributions, entry]
    return current.model_copy(
        update={
            "version": current.version + 1,
            "contributions": contributions,
            "merkle_root": version_root([e.contribution_id for e in contributions]),
            "created_at": now,
        }
    )
