"""Inference node logic with no I/O: job validation, result assembly."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from loranet import protocol as p
from loranet.errors import Refused
from loranet.fingerprint import CHUNK_TOKENS, TOP_K
from loranet.sampling import SamplerParams


class JobRefused(Refused):
    """A job this node will not run (its sampling, tokenizer, prompt or adapter); the reason goes back to the client."""


def sampler_params(job: p.JobRequest) -> SamplerParams:
    s = job.sampling
    try:
        return SamplerParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    except ValueError as exc:
        raise JobRefused(f"invalid sampling parameters: {exc}") from None


def check_tokenizer(job: p.JobRequest, tokenizer_id: str) -> None:
    if problem := job.tokenizer_problem(tokenizer_id):
        raise JobRefused(problem)


def finish_reason(
    *,
    token: int,
    n_output: int,
    decoded: Callable[[], str],
    stop_ids: Collection[int],
    stop: Sequence[str],
    max_tokens: int,
    ignore_eos: bool,
    deadline: float | None,
    now: float,
) -> str | None:
    """Why a sequence stops after emitting `token` as its `n_output`-th output ("eos", "stop", "length",
    "deadline"), or None to go on. `decoded()` is the output so far as text, asked only when the job has stop
    strings (the verifier's termination check applies the same rule)."""
    if token in stop_ids and not ignore_eos:
        return "eos"
    if stop:
        text = decoded()
        if any(s in text for s in stop):
            return "stop"
    if n_output >= max_tokens:
        return "length"
    if deadline is not None and now > deadline:
        return "deadline"
    return None


def stream_delta(decoded: str, sent: str, final: bool = False) -> str:
    """The text to send next of a streaming job whose output decodes to `decoded` so far, `sent` having gone.

    An unfinished character (a UTF-8 sequence split across tokens decodes to U+FFFD) is held back until
    the next token completes it, unless this is the last flush. Text that would rewrite what was sent
    (a tokenizer merging across the boundary) is not sent: the verified answer replaces it at the end."""
    if not decoded.startswith(sent):
        return ""
    delta = decoded[len(sent) :]
    if not final:
        delta = delta.rstrip("\ufffd")
    return delta


def check_prompt(prompt_tokens: list[int], max_prompt_tokens: int) -> None:
    if len(prompt_tokens) > max_prompt_tokens:
        raise JobRefused(f"prompt is {len(prompt_tokens)} tokens; this node takes at most {max_prompt_tokens}")


def build_result(
    *,
    job: p.JobRequest,
    node_id: str,
    node_key: bytes,
    node_address: str,
    node_seq: int,
    model_id: str,
    tokenizer_id: str,
    prompt_tokens: list[int],
    output_tokens: list[int],
    output_text: str,
    finish_reason: str,
    chunks: list[bytes],
    started_at: float,
    finished_at: float,
    attempt: int = 0,
    assignment: p.Assignment | None = None,
) -> p.InferenceResult:
    """The unsigned result binding job, model, adapter, tokens and fingerprint (and the scheduler's
    assignment of this run to this node, carried as given)."""
    return p.InferenceResult(
        job_id=job.job_id,
        node_id=node_id,
        node_key=node_key,
        node_address=node_address,
        node_seq=node_seq,
        request=job,
        request_hash=job.request_hash(),
        model_id=model_id,
        adapter_id=job.adapter_id,
        tokenizer_id=tokenizer_id,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        output_text=output_text,
        finish_reason=finish_reason,  # type: ignore[arg-type]  # the engine's reasons are the protocol's
        fingerprint=p.Fingerprint(chunk_tokens=CHUNK_TOKENS, top_k=TOP_K, chunks=chunks),
        started_at=started_at,
        finished_at=finished_at,
        attempt=attempt,
        assignment=assignment,
    )
