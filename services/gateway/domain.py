"""The gateway's pure logic: OpenAI requests → loranet jobs, loranet outcomes → OpenAI responses.

No I/O here: request validation, model names (`<base>` or `<base>:<adapter>`, in
the manner of LoRAX and vLLM), the chat template, OpenAI's error shape, and the
bodies of responses and server-sent-event chunks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loranet import protocol as p
from loranet.errors import LoranetError
from loranet.model.tokenizers import render_chat, visible_text

ADAPTER_SEPARATOR = ":"
OPENAI_MAX_TEMPERATURE = 2.0
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# loranet finish reasons → OpenAI's


class ApiError(LoranetError):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        loranet: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.openai_code = code  # OpenAI's error code (`code` is loranet's wire code)
        self.loranet = loranet

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.openai_code,
        }
        if self.loranet is not None:
            error["loranet"] = self.loranet
        return {"error": error}


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, "invalid_value" if param else None)


def bad_key() -> ApiError:
    return ApiError(
        401,
        "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


def rate_limited(retry_after_s: float) -> ApiError:
    return ApiError(
        429,
        f"Rate limit reached for this API key; retry in {retry_after_s:.1f}s.",
        "rate_limit_error",
        None,
        "rate_limit_exceeded",
    )


def unknown_model(model: str, known: list[str]) -> ApiError:
    shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
    return ApiError(
        404,
        f"The model '{model}' does not exist. Known models: {shown}. "
        f"Use '<base>' or '<base>{ADAPTER_SEPARATOR}<adapter>' (GET /v1/models).",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def insufficient_escrow(escrow: int, needed: int, address: str) -> ApiError:
    return ApiError(
        402,
        f"Escrow {escrow} wei of {address} does not cover the job's max fee {needed} wei: "
        "deposit more OPEN into escrow.",
        "insufficient_quota",
        None,
        "insufficient_quota",
    )


# -- API keys → client identities -------------------------------------------------


def client_seed(secret: str, client_name: str) -> bytes:
    """The Ed25519 seed of a gateway client: every gateway replica with the same secret derives the same key."""
    return hmac.new(secret.encode(), f"loranet-gateway-client:{client_name}".encode(), hashlib.sha256).digest()


def parse_keys(raw: Mapping[str, Any], source: str) -> dict[str, str]:
    """API key → client name; each client name gets its own identity and escrow."""
    keys: dict[str, str] = {}
    for key, name in raw.items():
        if not isinstance(key, str) or len(key) < 8:
            raise ValueError(f"{source}: API keys are strings of 8 characters or more")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{source}: key {key[:6]}… must map to a client name (a non-empty string)")
        keys[key] = name
    return keys


def bearer_key(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


# -- models --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what clients send as `model`
    model_id: str
    adapter_id: str = ""  # "" = the base model alone
    owned_by: str = "loranet"
    created: int = 0
    tokenizer_id: str = ""
    chat_template: str = ""  # the base model's (its registry record)


@dataclass
class Catalogue:
    """The models a client may name: each base model, and each adapter over it."""

    entries: dict[str, ModelEntry] = field(default_factory=dict)

    @classmethod
    def build(cls, bases: list[p.ModelManifest], adapters: list[p.AdapterManifest]) -> Catalogue:
        entries: dict[str, ModelEntry] = {}
        for base in bases:
            entries[base.name] = ModelEntry(
                base.name, base.model_id, "", "loranet", int(base.registered_at), base.tokenizer_id, base.chat_template
            )
            for adapter in adapters:
                if adapter.base_model_id == base.model_id:
                    name = f"{base.name}{ADAPTER_SEPARATOR}{adapter.name}"
                    entries[name] = ModelEntry(
                        name,
                        base.model_id,
                        adapter.adapter_id,
                        adapter.owner_address,
                        int(adapter.registered_at),
                        base.tokenizer_id,
                        base.chat_template,
                    )
        return cls(entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def resolve(self, model: Any) -> ModelEntry:
        if not isinstance(model, str) or not model:
            raise invalid("'model' is required: a base model or '<base>:<adapter>' (GET /v1/models)", "model")
        entry = self.entries.get(model)
        if entry is None:
            raise unknown_model(model, self.names())
        return entry

    def listing(self) -> dict[str, Any]:
        data = []
        for e in self.entries.values():
            item = {
                "id": e.name,
                "object": "model",
                "created": e.created,
                "owned_by": e.owned_by,
                "loranet": {"model_id": e.model_id, "adapter_id": e.adapter_id},
            }
            if e.adapter_id:
                item["parent"] = e.name.split(ADAPTER_SEPARATOR, 1)[0]
            data.append(item)
        return {"object": "list", "data": data}

    def model_object(self, name: str) -> dict[str, Any]:
        entry = self.resolve(name)
        return next(item for item in self.listing()["data"] if item["id"] == entry.name)


# -- requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """What one OpenAI request asks of loranet."""

    entry: ModelEntry
    prompt: str
    max_tokens: int
    sampling: p.SamplingParams
    stream: bool
    include_usage: bool
    echo_model: str
    verified_only: bool = False  # stream only the verified text, once settled (no provisional tokens)
    confidential: bool = False  # seal the prompt to one node and the verifier committee


def _number(
    body: Mapping[str, Any],
    name: str,
    default: float | None,
    lo: float,
    hi: float,
    *,
    integer: bool = False,
    lo_open: bool = False,
) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise invalid(f"'{name}' must be {'an integer' if integer else 'a number'}, got {json.dumps(value)[:40]}", name)
    if value < lo or value > hi or (lo_open and value == lo):
        low = f"greater than {lo}" if lo_open else f"at least {lo}"
        raise invalid(f"'{name}' must be {low} and at most {hi}, got {value}", name)
    return value


def _stop(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("'stop' must be a string or a list of strings", "stop")
    if len(stops) > 4:
        raise invalid(f"'stop' takes at most 4 sequences, got {len(stops)}", "stop")
    if any(not 1 <= len(s) <= 64 for s in stops):
        raise invalid("each 'stop' sequence must be 1 to 64 characters", "stop")
    return stops


def _common(body: Any, catalogue: Catalogue, prompt_of, default_max_tokens: int) -> JobSpec:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    entry = catalogue.resolve(body.get("model"))
    if body.get("n") not in (None, 1):
        raise invalid("'n' other than 1 is not supported: send one request per completion", "n")
    if body.get("best_of") not in (None, 1):
        raise invalid("'best_of' other than 1 is not supported", "best_of")
    if body.get("logprobs") not in (None, False, 0):
        raise invalid("'logprobs' is not supported", "logprobs")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({param: max_tokens}, param, default_max_tokens, 1, p.MAX_TOKENS_LIMIT, integer=True)
    temperature = _number(body, "temperature", 1.0, 0.0, OPENAI_MAX_TEMPERATURE)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    top_k = _number(body, "top_k", 0, -1, 100_000, integer=True)  # vLLM's extension; -1 = off
    seed = _number(body, "seed", 0, 0, 2**63 - 1, integer=True)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise invalid("'stream_options' must be an object", "stream_options")
    flags = {}
    for name in ("verified_only", "confidential"):
        flags[name] = body.get(name, False)
        if not isinstance(flags[name], bool):
            raise invalid(f"'{name}' must be true or false", name)
    prompt = prompt_of(body)
    if len(prompt) > p.MAX_PROMPT_CHARS:
        raise invalid(f"the prompt has {len(prompt)} characters; at most {p.MAX_PROMPT_CHARS}", "prompt")
    sampling = p.SamplingParams(
        temperature=float(temperature), top_p=float(top_p), top_k=max(int(top_k), 0), seed=int(seed), stop=_stop(body)
    )
    return JobSpec(
        entry,
        prompt,
        int(max_tokens),
        sampling,
        stream,
        bool(options.get("include_usage")),
        entry.name,
        verified_only=flags["verified_only"],
        confidential=flags["confidential"],
    )


def completion_request(body: Any, catalogue: Catalogue, default_max_tokens: int = 16) -> JobSpec:
    """Validate a POST /v1/completions body (OpenAI's default max_tokens is 16)."""

    def prompt_of(b: Mapping[str, Any]) -> str:
        prompt = b.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, list):
            raise invalid("'prompt' must be one string (batches of prompts are not supported)", "prompt")
        if not isinstance(prompt, str):
            raise invalid("'prompt' is required and must be a string", "prompt")
        if b.get("suffix"):
            raise invalid("'suffix' is not supported", "suffix")
        return prompt

    return _common(body, catalogue, prompt_of, default_max_tokens)


def chat_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI chat messages → loranet's chat-template messages (system/user/assistant, text only)."""
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role = CHAT_ROLES.get(str(message.get("role")))
        if role is None:
            raise invalid(
                f"messages[{i}].role {message.get('role')!r} is not supported (one of {', '.join(CHAT_ROLES)})",
                f"messages[{i}].role",
            )
        content = message.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise invalid(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise invalid(f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": role, "content": content})
    return out


def chat_request(body: Any, catalogue: Catalogue, default_max_tokens: int = 256) -> JobSpec:
    """Validate a POST /v1/chat/completions body; the prompt is loranet's chat template over the messages."""

    def prompt_of(b: Mapping[str, Any]) -> str:
        if b.get("tools") or b.get("functions"):
            raise invalid("tools and functions are not supported", "tools")
        messages = chat_messages(b.get("messages"))
        template = catalogue.resolve(b.get("model")).chat_template
        if not template:
            raise invalid(f"model {b.get('model')!r} has no chat template: use /v1/completions", "model")
        try:
            return render_chat(template, messages, add_generation_prompt=True)
        except ValueError as exc:
            raise invalid(str(exc), "messages") from None

    return _common(body, catalogue, prompt_of, default_max_tokens)


# -- outcomes → responses ---------------------------------------------------------


def receipt_view(receipt: p.Receipt | None) -> dict[str, Any] | None:
    if receipt is None:
        return None
    return {
        "status": receipt.status,
        "fee": str(receipt.fee),
        "epoch": receipt.epoch,
        "tx_hash": receipt.tx_hash,
        "block": receipt.block,
        "settled_at": receipt.settled_at,
        "payouts": [{"party": x.party, "address": x.address, "amount": str(x.amount)} for x in receipt.payouts],
    }


def loranet_extension(record: p.JobRecord) -> dict[str, Any]:
    """The verification and settlement outcome carried by every response (`"loranet": {...}`)."""
    verdict = None
    if record.verdicts:
        v = record.verdicts[-1]
        verdict = {
            "accepted": v.accepted,
            "audited": v.audited,
            "verifier_id": v.verifier_id,
            "failed_checks": [c.name for c in v.checks if not c.ok],
            "verdicts": len(record.verdicts),
            "attribution": v.attribution.model_dump(mode="json") if v.attribution else None,
        }
    return {
        "job_id": record.job_id,
        "status": record.status,
        "reason": record.reason,
        "node_id": record.node_id,
        "verdict": verdict,
        "receipt": receipt_view(record.receipt),
        "stages": list(record.stages),
    }


def outcome_error(record: p.JobRecord) -> ApiError | None:
    """The error for a job that did not settle, or None when it did."""
    ext = loranet_extension(record)
    if record.status == "settled":
        return None
    if record.status == "rejected":
        if "escrow" in record.reason:
            return ApiError(402, f"job refused: {record.reason}", "insufficient_quota", None, "insufficient_quota", ext)
        return ApiError(400, f"job refused: {record.reason}", "invalid_request_error", None, "job_rejected", ext)
    if record.status == "refunded":
        return ApiError(
            502,
            f"the result failed verification and the job was refunded: {record.reason}",
            "verification_failed",
            None,
            "result_rejected",
            ext,
        )
    return ApiError(502, f"the job ended as {record.status}: {record.reason}", "server_error", None, None, ext)


def usage(record: p.JobRecord) -> dict[str, int]:
    prompt_tokens = len(record.result.prompt_tokens) if record.result else 0
    completion_tokens = len(record.result.output_tokens) if record.result else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(record: p.JobRecord) -> str:
    return p.OPENAI_FINISH_REASONS.get(record.result.finish_reason, "stop") if record.result else "stop"


def output_text(record: p.JobRecord) -> str:
    """The output as OpenAI returns it: a stop sequence that ended it is not part of the text."""
    if not record.result:
        return ""
    result = record.result
    if result.finish_reason == "stop":
        return visible_text(result.output_text, result.request.sampling.stop)
    return result.output_text


def completion_body(spec: JobSpec, record: p.JobRecord, created: int) -> dict[str, Any]:
    return {
        "id": f"cmpl-{record.job_id}",
        "object": "text_completion",
        "created": created,
        "model": spec.echo_model,
        "choices": [
            {"index": 0, "text": output_text(record), "logprobs": None, "finish_reason": finish_reason(record)}
        ],
        "usage": usage(record),
        "loranet": loranet_extension(record),
    }


def chat_body(spec: JobSpec, record: p.JobRecord, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{record.job_id}",
        "object": "chat.completion",
        "created": created,
        "model": spec.echo_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output_text(record)},
                "logprobs": None,
                "finish_reason": finish_reason(record),
            }
        ],
        "usage": usage(record),
        "loranet": loranet_extension(record),
    }


def chunks_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def provisional_visible(raw: str, stops: list[str], done: bool) -> str:
    """What may be shown of a node's provisional text: cut at a stop sequence, and (until the node is done)
    without a tail that could still grow into one."""
    shown = visible_text(raw, stops)
    if done or len(shown) < len(raw):
        return shown
    longest = max((len(s) for s in stops), default=0)
    for j in range(min(longest - 1, len(shown)), 0, -1):
        if any(s.startswith(shown[-j:]) for s in stops):
            return shown[:-j]
    return shown


WITHDRAWN = "\n\n[loranet: the text above failed verification ({reason}) and is withdrawn; the job runs again]\n\n"
REPLACED = "\n\n[loranet: the verified answer differs from the text streamed above; it follows]\n\n"


class StreamWriter:
    """The chunks of one streamed response (OpenAI's SSE chunk shapes, plus a "loranet" member).

    Provisional text (a node's tokens as it generates them, unverified) goes out as it comes, marked
    `"loranet": {"provisional": true, ...}`. A result the verifiers reject ends that text with a visible
    note (a content delta: OpenAI's chunks only append) and a `"event": "withdrawn"` marker; the re-run's
    text follows. The last chunk carries the finish reason, the verdict and the receipt; whatever of the
    verified text was not streamed (all of it with `verified_only`, or for a confidential job) goes out
    just before it, in `chunk_chars` pieces."""

    def __init__(self, spec: JobSpec, job_id: str, created: int, chat: bool, chunk_chars: int) -> None:
        self.spec = spec
        self.chat = chat
        self.chunk_chars = chunk_chars
        self.base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{job_id}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": spec.echo_model,
        }
        self.attempt = 0
        self.raw = ""  # this attempt's provisional text as the node sent it
        self.sent = ""  # what of it went to the client
        self.first_chunk_sent = False

    def _chunk(self, text: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if not self.first_chunk_sent:
                delta = {"role": "assistant", **({"content": ""} if text is None else delta)}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        self.first_chunk_sent = True
        return {**self.base, "choices": [choice], **extra}

    def provisional(self, delta: p.TokenDelta) -> list[dict[str, Any]]:
        """Chunks for one provisional delta from a node (none for an earlier attempt's stragglers)."""
        if delta.attempt < self.attempt:
            return []
        if delta.attempt > self.attempt:  # a re-run's tokens before its rerun event reached us
            self.attempt, self.raw, self.sent = delta.attempt, "", ""
        self.raw += delta.text
        shown = provisional_visible(self.raw, self.spec.sampling.stop, delta.done)
        if not shown.startswith(self.sent) or len(shown) == len(self.sent):
            return []
        new, self.sent = shown[len(self.sent) :], shown
        mark = {"provisional": True, "node_id": delta.node_id, "attempt": delta.attempt}
        return [self._chunk(new, loranet=mark)]

    def withdrawn(self, attempt: int, reason: str) -> list[dict[str, Any]]:
        """The result of the attempt before `attempt` was finally rejected; the job runs again as `attempt`."""
        if attempt <= self.attempt and not self.sent:
            return []
        note = WITHDRAWN.format(reason=reason[:200] or "rejected") if self.sent else ""
        self.attempt, self.raw, self.sent = max(attempt, self.attempt), "", ""
        return [self._chunk(note, loranet={"event": "withdrawn", "attempt": attempt, "reason": reason[:500]})]

    def final(self, record: p.JobRecord) -> list[dict[str, Any]]:
        """The verified text not yet sent, the last chunk (finish reason, verdict, receipt) and usage if asked."""
        text = output_text(record)
        out = []
        if text.startswith(self.sent):
            rest = text[len(self.sent) :]
        else:
            rest = REPLACED + text
            out.append(self._chunk("", loranet={"event": "replaced"}))
        if not self.first_chunk_sent and self.chat:
            out.append(self._chunk(None))
        out.extend(self._chunk(piece) for piece in chunks_of(rest, self.chunk_chars))
        out.append(self._chunk(None, finish_reason(record), loranet={**loranet_extension(record), "verified": True}))
        if self.spec.include_usage:
            out.append({**self.base, "choices": [], "usage": usage(record)})
        return out


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


# -- the web app's views (the explorer's JSON) ---------------------------------------

PARTIES = ("node", "developer", "contributor", "verifier", "treasury")


def split_by_party(receipt: p.Receipt | None) -> dict[str, int]:
    """A receipt's payouts summed per party (contributors and verifiers each as one party)."""
    out = dict.fromkeys(PARTIES, 0)
    for payout in receipt.payouts if receipt else []:
        out[payout.party] = out.get(payout.party, 0) + payout.amount
    return out


def balance_view(b: p.Balance) -> dict[str, str]:
    """A balance with its amounts as decimal strings (wei exceed what JSON numbers hold exactly)."""
    return {
        "address": b.address,
        "token": str(b.token),
        "escrow": str(b.escrow),
        "credit": str(b.credit),
        "stake": str(b.stake),
    }


def node_view(hb: p.NodeHeartbeat, stake: p.Stake | None, now: float) -> dict[str, Any]:
    return {
        **hb.summary(now),
        "memory_free": hb.memory_free,
        "stake": str(stake.stake) if stake else None,
        "active": bool(stake and stake.active),
    }


def adapter_view(a: p.AdapterManifest, base_name: str) -> dict[str, Any]:
    return {
        "name": a.name,
        "model": f"{base_name}{ADAPTER_SEPARATOR}{a.name}" if base_name else a.name,
        "adapter_id": a.adapter_id,
        "owner": a.owner_address,
        "license": a.license,
        "rank": a.rank,
        "contributors": [
            {"id": c.contributor_id, "address": c.address, "weight_bps": c.weight_bps} for c in a.contributors
        ],
    }


def timeline(record: p.JobRecord) -> list[dict[str, Any]]:
    """A job's stages with the time each happened, from the signed messages that record them."""
    out: list[dict[str, Any]] = []
    if record.request is not None:
        out.append({"stage": "submitted", "at": record.request.created_at})
    if record.result is not None:
        out.append({"stage": "generating", "at": record.result.started_at, "node_id": record.result.node_id})
        out.append({"stage": "result", "at": record.result.finished_at, "node_id": record.result.node_id})
    for v in record.verdicts:
        out.append(
            {
                "stage": "verdict",
                "at": v.decided_at,
                "verifier_id": v.verifier_id,
                "accepted": v.accepted,
                "audited": v.audited,
                "failed_checks": [c.name for c in v.checks if not c.ok],
            }
        )
    if record.receipt is not None:
        out.append(
            {
                "stage": record.receipt.status,
                "at": record.receipt.settled_at,
                "epoch": record.receipt.epoch,
                "tx_hash": record.receipt.tx_hash,
            }
        )
    elif record.status in (p.Stage.REJECTED, p.Stage.REFUNDED):
        out.append({"stage": str(record.status), "at": record.updated_at, "reason": record.reason})
    return sorted(out, key=lambda e: e["at"])


def job_view(record: p.JobRecord) -> dict[str, Any]:
    return {
        **loranet_extension(record),
        "adapter_id": record.request.adapter_id if record.request else "",
        "confidential": bool(record.request and record.request.confidential),
        "output": output_text(record),
        "split": {k: str(v) for k, v in split_by_party(record.receipt).items()},
        # each data contributor's payout for this answer (split by its attribution when it has one)
        "contributors": [
            {"address": x.address, "amount": str(x.amount)}
            for x in (record.receipt.payouts if record.receipt else [])
            if x.party == "contributor"
        ],
        "timeline": timeline(record),
    }
