"""Builders for datastore tests: manifests and the messages a job's events carry."""

from __future__ import annotations

import json
import time

from loranet import codec
from loranet import protocol as p

OWNER = "0x" + "11" * 20
OTHER_OWNER = "0x" + "22" * 20
CLIENT = "0x" + "aB" * 20
TOKENIZER = "7" * 64
KEY = "01" * 32  # the client id of job_request's key (b"\x01" * 32): its events' subject token


def model_manifest(model_id: str, name: str = "tiny-llama") -> p.ModelManifest:
    return p.ModelManifest(model_id=model_id, name=name, architecture="LlamaForCausalLM", tokenizer_id=TOKENIZER)


def adapter_manifest(
    adapter, model_id: str, name: str | None = None, owner: str = OWNER, weights=(6000, 4000)
) -> p.AdapterManifest:
    config = json.loads(adapter.config)
    return p.AdapterManifest(
        adapter_id=adapter.adapter_id,
        name=name or adapter.name,
        base_model_id=model_id,
        owner_address=owner,
        contributors=[
            p.Contributor(contributor_id=f"c{i}", address="0x" + f"{i + 3:02x}" * 20, weight_bps=w)
            for i, w in enumerate(weights)
        ],
        rank=config["r"],
        target_modules=sorted(config["target_modules"]),
    )


def adapter_put(adapter, model_id: str, **kw) -> p.AdapterPut:
    return p.AdapterPut(
        manifest=adapter_manifest(adapter, model_id, **kw), config=adapter.config, weights=adapter.weights
    )


def job_request(job_id: str, client: str = CLIENT, created_at: float | None = None) -> p.JobRequest:
    now = time.time() if created_at is None else created_at
    return p.JobRequest(
        job_id=job_id,
        client_key=b"\x01" * 32,
        client_address=client,
        model_id="a" * 64,
        adapter_id="b" * 64,
        prompt="hello",
        max_tokens=8,
        max_fee=1000,
        created_at=now,
        expires_at=now + 60,
    )


def inference_result(request: p.JobRequest, node_id: str = "node-1") -> p.InferenceResult:
    return p.InferenceResult(
        job_id=request.job_id,
        node_id=node_id,
        node_key=b"\x02" * 32,
        node_address="0x" + "33" * 20,
        node_seq=1,
        request=request,
        request_hash="c" * 64,
        model_id=request.model_id,
        adapter_id=request.adapter_id,
        tokenizer_id=TOKENIZER,
        prompt_tokens=[1, 2, 3],
        output_tokens=[4, 5],
        output_text="hi",
        finish_reason="eos",
        fingerprint=p.Fingerprint(),
        started_at=time.time(),
        finished_at=time.time(),
    )


def verdict(result: p.InferenceResult, verifier_id: str = "verifier-1", accepted: bool = True) -> p.Verdict:
    return p.Verdict(
        job_id=result.job_id,
        verifier_id=verifier_id,
        verifier_key=b"\x03" * 32,
        verifier_address="0x" + "44" * 20,
        result_hash="d" * 64,
        accepted=accepted,
        audited=True,
        checks=[p.Check(name="schema", ok=True)],
        result=result,
        decided_at=time.time(),
    )


def receipt(job_id: str, status: str = "settled") -> p.Receipt:
    return p.Receipt(
        job_id=job_id, status=status, fee=1000, payouts=[], epoch=1, tx_hash="", block=0, settled_at=time.time()
    )


def event(job_id: str, stage: str, body: p.Wire | None = None, at: float | None = None, **kw) -> p.JobEvent:
    return p.JobEvent(
        job_id=job_id,
        stage=stage,
        service="test",
        body=codec.encode(body) if body is not None else b"",
        at=time.time() if at is None else at,
        **kw,
    )


def lifecycle(job_id: str, client: str = CLIENT, created_at: float | None = None) -> list[p.JobEvent]:
    """admitted → dispatched → result → 2 verdicts → settled, with increasing `at`."""
    req = job_request(job_id, client, created_at)
    res = inference_result(req)
    t = time.time()
    return [
        event(job_id, "admitted", req, at=t),
        event(job_id, "dispatched", at=t + 1, node_id="node-1"),
        event(job_id, "result", res, at=t + 2, node_id="node-1"),
        event(job_id, "verdict", verdict(res, "verifier-1"), at=t + 3),
        event(job_id, "verdict", verdict(res, "verifier-2"), at=t + 4),
        event(job_id, "settled", receipt(job_id), at=t + 5),
    ]
