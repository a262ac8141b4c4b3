"""Verifier logic with no I/O: authentication, cheap checks, the audit's comparisons, verdicts, audit policy.

Everything here is a pure function of plain values (a result, recomputed
hidden states and logits, a node's record), so each check can be tested and
re-run by anyone who holds the verdict's inputs. Thresholds live in
loranet.thresholds.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from loranet import protocol as p
from loranet import thresholds
from loranet.errors import Refused
from loranet.fingerprint import CHUNK_TOKENS, TOP_K, ChunkScore, chunk_spans, compare_chunk, decode_chunk
from loranet.model.tokenizers import Tokenizer
from loranet.sampling import SamplerParams, replay_margin
from loranet.signing import Identity, SignatureInvalid, devnet_address, sign, verify  # noqa: F401 (devnet_address re-exported)

MAX_DETAIL = 1000


class ResultForged(Refused):
    """The result is not authenticated by its node: no verdict can be given (dead-lettered)."""


class NotOurs(Refused):
    """A well-formed result this verifier cannot judge (another model): dead-lettered, node not blamed."""


def check(name: str, ok: bool, detail: str = "") -> p.Check:
    # model_construct: these fields are built here (short name, bool, clipped text), and full
    # validation of ~15 checks per result was a third of the cheap checks' time.
    return p.Check.model_construct(name=name[:64], ok=bool(ok), detail=detail[:MAX_DETAIL])


def sampler_params(job: p.JobRequest) -> SamplerParams:
    s = job.sampling
    return SamplerParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)


# ---------------------------------------------------------------------------
# Authentication (a failure here means no verdict: the job id is not authenticated)
# ---------------------------------------------------------------------------


def heartbeat_key(hb: p.NodeHeartbeat, node_id: str) -> bytes:
    """The node key a heartbeat registers for `node_id`; raises ResultForged if it is not self-consistent."""
    if hb.node_id != node_id:
        raise ResultForged(f"heartbeat under key {node_id!r} names node {hb.node_id!r}")
    try:
        hb.verify()
    except SignatureInvalid as exc:
        raise ResultForged(f"heartbeat of node {node_id}: {exc}") from None
    return hb.node_key


def authenticate(result: p.InferenceResult, subject: str, registered_key: bytes | None) -> None:
    """Raise ResultForged unless `result` arrived on its node's subject and is signed by the node's registered key."""
    if subject != p.results(result.node_id):
        raise ResultForged(
            f"result of node {result.node_id} arrived on {subject!r}, expected {p.results(result.node_id)!r}"
        )
    if registered_key is None:
        raise ResultForged(
            f"node {result.node_id} is unknown: no heartbeat in KV bucket {p.NODES_BUCKET!r} and none seen before"
        )
    if registered_key != result.node_key:
        raise ResultForged(
            f"node_key {result.node_key.hex()[:16]} is not node {result.node_id}'s registered key "
            f"{registered_key.hex()[:16]}"
        )
    try:
        result.verify()
    except SignatureInvalid as exc:
        raise ResultForged(f"node signature: {exc}") from None


class NotAssigned(Refused):
    """A result from a node the scheduler did not assign that run to: refused, no verdict (the assigned
    node's own result is judged as if this one never came)."""


def check_assignment(result: p.InferenceResult, scheduler_known: bool) -> None:
    """Raise NotAssigned unless the result carries the scheduler's signed assignment of this run (job,
    attempt) to this node; `scheduler_known`: whether its key is an announced scheduler's (KV `schedulers`)."""
    a = result.assignment
    if a is None:
        raise NotAssigned(f"node {result.node_id}'s result for job {result.job_id} carries no work assignment")
    try:
        a.verify()
    except SignatureInvalid as exc:
        raise NotAssigned(f"work assignment: {exc}") from None
    if not scheduler_known:
        raise NotAssigned(f"work assignment signed by {a.scheduler_key.hex()[:16]}, not an announced scheduler's key")
    if (a.job_id, a.node_id, a.attempt) != (result.job_id, result.node_id, result.attempt):
        raise NotAssigned(
            f"job {result.job_id} attempt {result.attempt} was assigned to node {a.node_id} "
            f"(assignment for job {a.job_id} attempt {a.attempt}), not to {result.node_id}"
        )


def served_model(result: p.InferenceResult, model_id: str) -> None:
    """Raise NotOurs if the request names a model this verifier does not serve."""
    if result.request.model_id != model_id:
        raise NotOurs(f"job {result.job_id} asks for model {result.request.model_id}; this verifier serves {model_id}")


# ---------------------------------------------------------------------------
# Cheap checks (every result)
# ---------------------------------------------------------------------------


def cheap_checks(
    result: p.InferenceResult, model_id: str, tok: Tokenizer, node_address: str | None = None, prompt: str | None = None
) -> list[p.Check]:
    """Structure, bindings and token/text consistency of an authenticated result.

    `prompt`: the opened prompt of a confidential job (`result` is then its plaintext view)."""
    req = result.request
    out: list[p.Check] = []
    try:
        req.verify()
        out.append(check("request_signature", True))
    except SignatureInvalid as exc:
        out.append(check("request_signature", False, str(exc)))
    rh = req.request_hash()
    out.append(
        check(
            "request_hash",
            result.request_hash == rh,
            "" if result.request_hash == rh else f"claimed {result.request_hash}, recomputed {rh}",
        )
    )
    out.append(
        check(
            "job_id",
            result.job_id == req.job_id,
            "" if result.job_id == req.job_id else f"result {result.job_id} != request {req.job_id}",
        )
    )
    ok = result.model_id == req.model_id == model_id
    out.append(
        check("model_id", ok, "" if ok else f"result {result.model_id}, request {req.model_id}, served {model_id}")
    )
    ok = result.adapter_id == req.adapter_id
    out.append(check("adapter_id", ok, "" if ok else f"result {result.adapter_id!r}, request {req.adapter_id!r}"))
    ok = result.tokenizer_id == tok.tokenizer_id and not req.tokenizer_problem(tok.tokenizer_id)
    out.append(
        check(
            "tokenizer_id",
            ok,
            ""
            if ok
            else (f"result {result.tokenizer_id}, request {req.tokenizer_id or '(any)'}, model's {tok.tokenizer_id}"),
        )
    )
    if node_address is not None:
        ok = result.node_address.lower() == node_address.lower()
        out.append(
            check(
                "node_address",
                ok,
                "" if ok else f"result pays {result.node_address}, heartbeat registers {node_address}",
            )
        )
    expected_prompt = tok.encode(req.prompt if prompt is None else prompt)
    ok = result.prompt_tokens == expected_prompt
    out.append(
        check(
            "prompt_tokens",
            ok,
            "" if ok else f"{len(result.prompt_tokens)} tokens differ from encode(prompt) ({len(expected_prompt)})",
        )
    )
    toks = result.output_tokens
    in_vocab = all(t < tok.vocab_size for t in toks)
    ok = in_vocab and result.output_text == tok.decode(toks)
    out.append(
        check(
            "output_text",
            ok,
            "" if ok else ("token outside the vocabulary" if not in_vocab else "output_text != decode(output_tokens)"),
        )
    )
    n, max_tokens = len(toks), req.max_tokens
    ok = (1 <= n <= max_tokens) or (n == 0 and result.finish_reason == "deadline")
    out.append(check("max_tokens", ok, f"{n} of {max_tokens}"))
    out.append(finish_check(result, tok))
    out.append(proof_structure(result))
    ok = result.started_at <= result.finished_at
    out.append(check("timing", ok, f"{result.finished_at - result.started_at:.3f}s"))
    out.append(evidence_check(result))
    return out


def finish_check(result: p.InferenceResult, tok: Tokenizer) -> p.Check:
    """The finish reason fits the tokens: "eos" ends on the model's one stop id (any of `tok.stop_ids`),
    "length" fills max_tokens, "stop" is the first step at which a stop string appears in the text."""
    toks, reason, max_tokens = result.output_tokens, result.finish_reason, result.request.max_tokens
    eos_at = [i for i, t in enumerate(toks) if t in tok.stop_ids]
    # Counts only, never positions: a verdict is public, and EOS positions would tell an observer where a
    # confidential output's EOS tokens are.
    eos_last = bool(toks) and toks[-1] in tok.stop_ids
    eos_desc = f"{len(eos_at)} eos token(s){', the last token' if eos_last else ''}"
    if reason == "eos":
        ok = bool(toks) and eos_at == [len(toks) - 1]
        why = f"{eos_desc}, {len(toks)} tokens"
    elif reason == "length":
        ok = len(toks) == max_tokens and not eos_at
        why = f"{len(toks)} tokens of {max_tokens}, {eos_desc}"
    elif reason == "stop":
        stops = result.request.sampling.stop
        prefix = tok.decode(toks[:-1])
        # A token may carry text past the stop string (BPE): the stop must appear with the last token.
        ok = not eos_at and any(s in result.output_text for s in stops) and not any(s in prefix for s in stops)
        why = f"stop strings {len(stops)}, text ends with one: {ok}"
    else:  # deadline: the node gave up early; the tokens it did produce are still checked
        ok = len(toks) < max_tokens and not eos_at
        why = f"{len(toks)} tokens of {max_tokens} before the deadline"
    return check("finish_reason", ok, f"{reason}: {why}")


def proof_structure(result: p.InferenceResult) -> p.Check:
    fp = result.fingerprint
    if fp.chunk_tokens != CHUNK_TOKENS or fp.top_k != TOP_K:
        return check(
            "proof_structure",
            False,
            f"chunk_tokens {fp.chunk_tokens}/top_k {fp.top_k}, protocol {CHUNK_TOKENS}/{TOP_K}",
        )
    if not result.prompt_tokens:
        return check("proof_structure", False, "no prompt tokens")
    spans = chunk_spans(len(result.prompt_tokens), len(result.output_tokens), CHUNK_TOKENS)
    want = len(spans)
    if len(fp.chunks) != want:
        return check("proof_structure", False, f"{len(fp.chunks)} chunks, layout needs {want}")
    # Each chunk must parse, commit the protocol's k entries, and cover its rows at one common width.
    bad, widths = [], set()
    for i, (c, (a, b)) in enumerate(zip(fp.chunks, spans)):
        try:
            parsed = decode_chunk(c)
        except ValueError:
            bad.append(i)
            continue
        if parsed.k != min(TOP_K, parsed.numel) or parsed.numel % (b - a):
            bad.append(i)
        else:
            widths.add(parsed.numel // (b - a))
    if bad:
        return check("proof_structure", False, f"malformed chunks {bad[:16]}")
    if len(widths) > 1:
        return check("proof_structure", False, f"chunks imply hidden widths {sorted(widths)[:8]}")
    return check("proof_structure", True, f"{want} chunks")


def evidence_check(result: p.InferenceResult) -> p.Check:
    """TEE / zk evidence is not verifiable here: reported as absent or unverified, never as verified."""
    kinds = {e.kind for e in result.evidence}
    parts = [
        f"{k}: {'present, unverified (no verifier for this evidence type)' if k in kinds else 'absent'}"
        for k in ("tee", "zk")
    ]
    return check("evidence_absent", True, "; ".join(parts) + " - not counted toward acceptance")


# ---------------------------------------------------------------------------
# Re-execution audit: fingerprints, sampling replay, termination
# ---------------------------------------------------------------------------


def fingerprint_ok(score: ChunkScore) -> tuple[bool, float, float]:
    """(ok, mean excess, max excess) of one chunk; excess = error beyond the half quantisation step, / hi,
    over the indices that matched (loranet.fingerprint.compare_chunk)."""
    if not score.numel_match or score.index_overlap == 0:
        return False, math.inf, math.inf
    half = score.quant_step / 2
    scale = max(score.hi, 1e-12)
    mean_x = max(score.mean_abs_err - half, 0.0) / scale
    max_x = max(score.max_abs_err - half, 0.0) / scale
    ok = (
        score.index_overlap >= thresholds.FP_MIN_INDEX_OVERLAP
        and mean_x <= thresholds.FP_MAX_MEAN_EXCESS_REL
        and max_x <= thresholds.FP_MAX_EXCESS_REL
    )
    return ok, mean_x, max_x


def fingerprint_figures(result: p.InferenceResult, hidden: torch.Tensor) -> list[tuple[bool, float, float, float]]:
    """Per committed chunk: (ok, index overlap, mean excess, max excess); an undecodable chunk is (False,
    0, inf, inf)."""
    spans = chunk_spans(len(result.prompt_tokens), len(result.output_tokens), CHUNK_TOKENS)
    out = []
    for blob, (a, b) in zip(result.fingerprint.chunks, spans):
        try:
            score = compare_chunk(blob, hidden[a:b], TOP_K)
        except ValueError:  # malformed, or not the protocol's k
            out.append((False, 0.0, math.inf, math.inf))
            continue
        ok, mean_x, max_x = fingerprint_ok(score)
        out.append((ok, score.index_overlap, mean_x, max_x))
    return out


def fingerprint_check(result: p.InferenceResult, hidden: torch.Tensor) -> p.Check:
    """Compare each committed chunk with the verifier's recomputed hidden states (rows per chunk_spans)."""
    figures = fingerprint_figures(result, hidden)
    bad = [i for i, f in enumerate(figures) if not f[0]]
    parts = [f"{i}:{ov:.3f}/{mx:.1e}/{xx:.1e}" for i, (_, ov, mx, xx) in enumerate(figures)]
    worst = (min(f[1] for f in figures), max(f[2] for f in figures), max(f[3] for f in figures))
    head = (
        f"chunks {len(figures)} bad {bad[:32]} worst overlap/mean/max excess "
        f"{worst[0]:.3f}/{worst[1]:.1e}/{worst[2]:.1e}; per chunk "
    )
    body = " ".join(parts)
    if len(head) + len(body) > MAX_DETAIL:  # keep the failing chunks' figures when it does not fit
        body = " ".join(parts[i] for i in (bad or range(len(parts)))[:20]) + " ..."
    return check("fingerprint", not bad, head + body)


def replay_margins(result: p.InferenceResult, logits: torch.Tensor) -> np.ndarray:
    """Per output token, how decisively the seeded sampler picks it on the recomputed logits (>= 0: it does)."""
    prompt_len = len(result.prompt_tokens)
    toks = result.output_tokens
    params = sampler_params(result.request)
    seed = result.request.sampling.seed
    rows = logits[prompt_len - 1 : prompt_len - 1 + len(toks)].double()
    if not params.greedy:
        return np.array([replay_margin(rows[j], params, seed, j, t) for j, t in enumerate(toks)])
    x = rows.numpy()
    idx = np.arange(len(toks))
    chosen = x[idx, toks]
    others = x.copy()
    others[idx, toks] = -np.inf
    return chosen - others.max(axis=1)


def replay_check(result: p.InferenceResult, logits: torch.Tensor) -> p.Check:
    """Every output token must be the seeded sampler's choice on the recomputed logits (within tolerance)."""
    toks = result.output_tokens
    if not toks:
        return check("sampling_replay", True, "no tokens")
    params = sampler_params(result.request)
    margins = replay_margins(result, logits)
    tol = thresholds.GREEDY_TIE_MARGIN if params.greedy else thresholds.REPLAY_MARGIN
    failed = np.nonzero(margins < -tol)[0]
    near = np.nonzero((margins < 0) & (margins >= -tol))[0]
    ok = failed.size == 0 and near.size <= thresholds.MAX_NEAR_TIE_TOKENS
    kind = (
        "greedy"
        if params.greedy
        else f"T={params.temperature} k={params.top_k} p={params.top_p} seed={result.request.sampling.seed}"
    )
    detail = (
        f"{kind}: {len(toks)} tokens, {failed.size} mismatched (first {failed[:8].tolist()}), "
        f"{near.size} near-ties, min margin {float(margins.min()):.3e}"
    )
    return check("sampling_replay", ok, detail)


def termination_check(result: p.InferenceResult, logits: torch.Tensor) -> p.Check:
    """A claimed EOS must be the seeded sampler's choice at its step on the recomputed logits; one that wins
    only through the near-tie tolerance must also be likely (p(eos) >= EOS_MIN_PROB). Length stops are
    checked cheaply (finish_check).

    The job's seed is fixed by the client, so an EOS that wins the replayed race is exactly what every
    honest node samples there, however improbable: a probability floor on it would reject honest nodes
    (the full-size adversarial run met one: T=1.3, p(eos)=6.4e-4, race won by 5.4e-2). The floor only
    guards the tolerance band, where fp noise (or a cheater) could tip a near-tie toward EOS."""
    toks = result.output_tokens
    if result.finish_reason != "eos":
        return check("termination", True, f"{result.finish_reason}: no EOS claimed")
    step = len(toks) - 1
    params = sampler_params(result.request)
    row = logits[len(result.prompt_tokens) - 1 + step].double().numpy()
    z = row / (params.temperature if not params.greedy else 1.0)
    eos = toks[-1]  # one of the model's stop ids (finish_check)
    prob = float(np.exp(z[eos] - z.max()) / np.exp(z - z.max()).sum())
    margin = replay_margin(row, params, result.request.sampling.seed, step, eos)
    tol = thresholds.GREEDY_TIE_MARGIN if params.greedy else thresholds.REPLAY_MARGIN
    if margin >= 0:
        ok, how = True, "the sampler's choice"
    elif margin >= -tol:
        ok, how = prob >= thresholds.EOS_MIN_PROB, f"a near-tie within {tol:g}, floor {thresholds.EOS_MIN_PROB:g}"
    else:
        ok, how = False, "not the sampler's choice"
    return check("termination", ok, f"eos at step {step}: margin {margin:.3e}, p(eos)={prob:.3e}: {how}")


def audit_checks(result: p.InferenceResult, hidden: torch.Tensor, logits: torch.Tensor) -> list[p.Check]:
    """The re-execution audit's checks from ONE prefill over prompt + output (hidden [T,H], logits [T,V])."""
    need = len(result.prompt_tokens) + len(result.output_tokens)
    if hidden.shape[0] != need or logits.shape[0] != need:
        return [check("audit_shape", False, f"recomputed {hidden.shape[0]} rows, need {need}")]
    return [fingerprint_check(result, hidden), replay_check(result, logits), termination_check(result, logits)]


# ---------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------


def build_verdict(
    result: p.InferenceResult,
    checks: list[p.Check],
    audited: bool,
    verifier_id: str,
    identity: Identity,
    verifier_address: str,
    decided_at: float | None = None,
    attribution: p.Attribution | None = None,
) -> p.Verdict:
    """The signed verdict: accepted iff every check passed (an attribution only on an accepted one)."""
    verdict = p.Verdict(
        job_id=result.job_id,
        verifier_id=verifier_id,
        verifier_key=identity.public,
        verifier_address=verifier_address,
        result_hash=result.result_hash(),
        accepted=all(c.ok for c in checks),
        audited=audited,
        checks=checks[:64],
        result=result,
        decided_at=time.time() if decided_at is None else decided_at,
        attribution=attribution if all(c.ok for c in checks) else None,
    )
    return sign(verdict, identity)


# ---------------------------------------------------------------------------
# Replay guard and audit policy (in-memory state, no I/O)
# ---------------------------------------------------------------------------


def run_key(result: p.InferenceResult) -> tuple[str, int]:
    """One run of a job: (job id, attempt).  A re-run after rejected results is a new run of the same job."""
    return result.job_id, result.attempt


class ReplayGuard:
    """Bounded memory of runs (job id, attempt) already verdicted and (node, seq) pairs already used."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._seqs: OrderedDict[tuple[str, int], str] = OrderedDict()

    def seen_job(self, job_id: str, attempt: int = 0) -> bool:
        return (job_id, attempt) in self._jobs

    def seq_reused(self, result: p.InferenceResult) -> str | None:
        """The other job that already used this node's sequence number, if any."""
        other = self._seqs.get((result.node_id, result.node_seq))
        return other if other is not None and other != result.job_id else None

    def remember(self, result: p.InferenceResult) -> None:
        self._jobs[run_key(result)] = None
        self._seqs[(result.node_id, result.node_seq)] = result.job_id
        while len(self._jobs) > self.capacity:
            self._jobs.popitem(last=False)
        while len(self._seqs) > self.capacity:
            self._seqs.popitem(last=False)


@dataclass
class AuditPolicy:
    new_node_jobs: int = thresholds.AUDIT_NEW_NODE_JOBS
    after_failure_jobs: int = thresholds.AUDIT_AFTER_FAILURE_JOBS
    clean_rate: float = thresholds.AUDIT_CLEAN_RATE


@dataclass
class NodeRecord:
    """What this verifier has seen of one node."""

    node_id: str
    results: int = 0
    audited: int = 0
    accepted: int = 0
    rejected: int = 0
    audit_failures: int = 0
    clean_audits: int = 0  # audits passed since the node was first seen
    forced_audits_left: int = 0  # jobs still audited in full after the last failure
    last_failure: str = ""
    last_failure_at: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)
    # Running statistics over its audited jobs (observe_audit); `flagged` says why once they depart.
    fp_chunks: int = 0
    fp_excess_sum: float = 0.0
    audited_tokens: int = 0
    off_choice_tokens: int = 0
    flagged: str = ""
    observed_jobs: list[str] = field(default_factory=list)  # the latest audited jobs the statistics cover
    dtype: str = ""  # the precision the node heartbeats it serves (declared on chain where it staked)


def job_fraction(job_id: str) -> float:
    """A reproducible number in [0, 1) from the job id (anyone can recompute the audit choice)."""
    digest = hashlib.sha256(b"loranet/audit-choice/v1\x00" + job_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def observe_audit(record: NodeRecord, result: p.InferenceResult, hidden: torch.Tensor, logits: torch.Tensor) -> str:
    """Add an audited job to the node's running statistics; the reason it is flagged ("" while it is
    not). Flagged once: the reason stays."""
    need = len(result.prompt_tokens) + len(result.output_tokens)
    if hidden.shape[0] == need and logits.shape[0] == need:
        record.observed_jobs = [*record.observed_jobs[-(FLAG_JOBS - 1) :], result.job_id]
        for _, _, mean_x, _ in fingerprint_figures(result, hidden):
            record.fp_chunks += 1
            record.fp_excess_sum += min(mean_x, 1.0)
        if result.output_tokens:
            margins = replay_margins(result, logits)
            record.audited_tokens += len(margins)
            record.off_choice_tokens += int((margins < 0).sum())
    if not record.flagged:
        record.flagged = statistics_flag(record)
    return record.flagged


FLAG_JOBS = 64  # audited jobs a node flag names (the latest)


def node_flag(record: NodeRecord, node_key: bytes, verifier_id: str, identity: Identity, address: str) -> p.NodeFlag:
    """This verifier's signed finding that `record`'s node departs from honest nodes (it is flagged)."""
    return sign(
        p.NodeFlag(
            node_id=record.node_id,
            node_key=node_key,
            verifier_id=verifier_id,
            verifier_key=identity.public,
            verifier_address=address,
            reason=record.flagged[:1024],
            fp_chunks=record.fp_chunks,
            fp_excess_mean=record.fp_excess_sum / record.fp_chunks if record.fp_chunks else 0.0,
            audited_tokens=record.audited_tokens,
            off_choice_tokens=record.off_choice_tokens,
            jobs=record.observed_jobs[-FLAG_JOBS:],
            at=time.time(),
        ),
        identity,
    )


def statistics_flag(record: NodeRecord) -> str:
    """Why a node's statistics depart from honest nodes' ("": they do not); thresholds.NODE_*."""
    if record.fp_chunks >= thresholds.NODE_FP_MIN_CHUNKS and record.dtype in thresholds.NODE_FP_CALIBRATED_DTYPES:
        mean = record.fp_excess_sum / record.fp_chunks
        if mean > thresholds.NODE_FP_FLAG:
            return (
                f"fingerprint mean excess {mean:.2e} over {record.fp_chunks} chunks (honest: 0): lower precision "
                f"than the {record.dtype or 'float32'} it declares"
            )
    if record.off_choice_tokens >= thresholds.NODE_OFF_CHOICE_FLAG:
        return f"{record.off_choice_tokens} of {record.audited_tokens} tokens not the replayed choice (honest: 0)"
    return ""


def should_audit(record: NodeRecord, job_id: str, policy: AuditPolicy, attempt: int = 0) -> tuple[bool, str]:
    """(audit?, why): every re-run, every job of a flagged node, every job of a new node, every job for a
    while after a failure, else a hashed fraction."""
    if attempt > 0:
        return True, f"re-run (attempt {attempt}) after a rejected result"
    if record.flagged:
        return True, f"flagged by its statistics: {record.flagged}"
    if record.clean_audits < policy.new_node_jobs:
        return True, f"new node ({record.clean_audits}/{policy.new_node_jobs} clean audits)"
    if record.forced_audits_left > 0:
        return True, f"after failure ({record.forced_audits_left} forced audits left)"
    frac = job_fraction(job_id)
    return frac < policy.clean_rate, f"sampled: fraction {frac:.4f} vs rate {policy.clean_rate}"


def record_outcome(
    record: NodeRecord, audited: bool, accepted: bool, checks: list[p.Check], policy: AuditPolicy, now: float
) -> None:
    """Update a node's record after a verdict."""
    record.results += 1
    record.accepted += int(accepted)
    record.rejected += int(not accepted)
    if audited:
        record.audited += 1
        if record.forced_audits_left > 0:
            record.forced_audits_left -= 1
    if accepted:
        if audited:
            record.clean_audits += 1
        return
    if audited:
        record.audit_failures += 1
    record.forced_audits_left = policy.after_failure_jobs
    record.last_failure = ",".join(c.name for c in checks if not c.ok)[:200]
    record.last_failure_at = now
    for c in checks:
        if not c.ok:
            record.extra[c.name] = record.extra.get(c.name, 0) + 1
