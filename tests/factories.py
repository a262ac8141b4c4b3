"""Valid example messages for every subject's schema (for round-trip and fuzz tests)."""

from __future__ import annotations

import time

from loranet import codec
from loranet import protocol as p
from loranet.signing import Identity, sign

CLIENT = Identity.from_seed(b"c" * 32)
NODE = Identity.from_seed(b"n" * 32)
VERIFIER = Identity.from_seed(b"v" * 32)
SCHEDULER = Identity.from_seed(b"s" * 32)
ADDR = "0x" + "1f" * 20
MODEL = "a" * 64
ADAPTER = "b" * 64


def job(**overrides) -> p.JobRequest:
    now = time.time()
    fields = dict(
        job_id=p.new_job_id(),
        client_key=CLIENT.public,
        client_address=ADDR,
        model_id=MODEL,
        adapter_id=ADAPTER,
        prompt="hello",
        max_tokens=8,
        max_fee=10**20,
        created_at=now,
        expires_at=now + 60,
    )
    fields.update(overrides)
    return sign(p.JobRequest(**fields), CLIENT)


def assignment(job_id: str, node_id: str = "node-0", attempt: int = 0) -> p.Assignment:
    """The test scheduler's signed assignment of a job's run to a node."""
    a = p.Assignment(
        job_id=job_id,
        node_id=node_id,
        attempt=attempt,
        batch_id=p.new_job_id(),
        scheduler_id="scheduler-test",
        scheduler_key=SCHEDULER.public,
        at=time.time(),
    )
    return sign(a, SCHEDULER)


async def announce_scheduler(js) -> None:
    """Put the test scheduler's key in KV `schedulers`, as a scheduler does at start."""
    from loranet import topology

    kv = await topology.ensure_bucket(js, p.SCHEDULERS_BUCKET)
    announced = p.SchedulerAnnouncement(scheduler_id="scheduler-test", scheduler_key=SCHEDULER.public, at=time.time())
    await kv.put(SCHEDULER.public.hex(), codec.encode(sign(announced, SCHEDULER)))


def heartbeat(node_id: str = "node-0", **overrides) -> p.NodeHeartbeat:
    """A node's heartbeat (unsigned), idle, serving MODEL on the CPU."""
    fields = dict(
        node_id=node_id,
        node_key=NODE.public,
        payout_address=ADDR,
        model_ids=[MODEL],
        device="cpu",
        memory_free=0,
        adapters_hot=[],
        slots_total=4,
        slots_free=4,
        queue_depth=0,
        tokens_per_s=0.0,
        at=0.0,
    )
    fields.update(overrides)
    return p.NodeHeartbeat(**fields)


def result(request: p.JobRequest | None = None) -> p.InferenceResult:
    request = request or job()
    r = p.InferenceResult(
        job_id=request.job_id,
        node_id="node-0",
        node_key=NODE.public,
        node_address=ADDR,
        node_seq=1,
        request=request,
        request_hash=request.request_hash(),
        model_id=request.model_id,
        adapter_id=request.adapter_id,
        tokenizer_id="c" * 64,
        prompt_tokens=[256, 104, 105],
        output_tokens=[1, 2, 257],
        output_text="\x01\x02",
        finish_reason="eos",
        fingerprint=p.Fingerprint(chunks=[b"\x01" * 40, b"\x02" * 40]),
        started_at=time.time(),
        finished_at=time.time(),
        assignment=assignment(request.job_id),
    )
    return sign(r, NODE)


def verdict(res: p.InferenceResult | None = None) -> p.Verdict:
    res = res or result()
    v = p.Verdict(
        job_id=res.job_id,
        verifier_id="verifier-0",
        verifier_key=VERIFIER.public,
        verifier_address=ADDR,
        result_hash=res.result_hash(),
        accepted=True,
        audited=True,
        checks=[p.Check(name="signature", ok=True)],
        result=res,
        decided_at=time.time(),
    )
    return sign(v, VERIFIER)


def manifest() -> p.AdapterManifest:
    return p.AdapterManifest(
        adapter_id=ADAPTER,
        name="demo-x",
        base_model_id=MODEL,
        owner_address=ADDR,
        contributors=[p.Contributor(contributor_id="d0", address=ADDR, weight_bps=10_000)],
        rank=8,
        target_modules=["q_proj", "v_proj"],
    )


def model_manifest() -> p.ModelManifest:
    return p.ModelManifest(model_id=MODEL, name="m", architecture="Llama", tokenizer_id="c" * 64)


def node_flag(
    node_key: bytes = NODE.public, verifier: Identity = VERIFIER, verifier_id: str = "verifier-0", address: str = ADDR
) -> p.NodeFlag:
    """A verifier's signed flag on a node whose fingerprints sit above honest nodes'."""
    return sign(
        p.NodeFlag(
            node_id="node-0",
            node_key=node_key,
            verifier_id=verifier_id,
            verifier_key=verifier.public,
            verifier_address=address,
            reason="fingerprint mean excess 8.20e-05 over 6 chunks (honest: 0)",
            fp_chunks=6,
            fp_excess_mean=8.2e-5,
            audited_tokens=96,
            off_choice_tokens=0,
            jobs=[p.new_job_id(), p.new_job_id()],
            at=time.time(),
        ),
        verifier,
    )


def examples() -> dict[str, p.Wire]:
    """One valid message per declared subject pattern (protocol.SUBJECTS)."""
    j = job()
    r = result(j)
    return {
        p.JOBS_SUBMIT.pattern: j,
        p.JOBS_RERUN.pattern: p.RerunRequest(
            job_id=j.job_id,
            attempt=1,
            request=j,
            exclude=["node-0"],
            reason="rejected",
            at=time.time(),
            exclude_operators=[ADDR],
        ),
        p.WORK_ALL.pattern: p.WorkBatch(
            batch_id=p.new_job_id(),
            node_id="node-0",
            model_id=MODEL,
            segments=[p.WorkSegment(adapter_id=ADAPTER, jobs=[j])],
            dispatched_at=time.time(),
            scheduler_id="scheduler",
            assignments=[assignment(j.job_id)],
        ),
        p.RESULTS_ALL.pattern: r,
        p.RESULTS_AUDIT.pattern: p.AuditRequest(
            job_id=j.job_id,
            verifier_id="verifier-1",
            committee=["verifier-0", "verifier-1", "verifier-2"],
            needed=2,
            result=r,
            at=time.time(),
        ),
        p.VERDICTS_ALL.pattern: verdict(r),
        p.FLAGS_ALL.pattern: node_flag(),
        p.RECEIPTS_ALL.pattern: p.Receipt(
            job_id=j.job_id,
            status="settled",
            fee=10**20,
            payouts=[p.Payout(party="node", address=ADDR, amount=10**20)],
            epoch=1,
            tx_hash="0x" + "0" * 64,
            block=3,
            settled_at=time.time(),
        ),
        p.JOB_TOKENS_ALL.pattern: p.TokenDelta(
            job_id=j.job_id, node_id="node-0", attempt=0, seq=3, text=" there", tokens=4, at=1.0
        ),
        p.JOB_EVENTS_ALL.pattern: p.JobEvent(
            job_id=j.job_id, stage="admitted", service="scheduler", body=codec.encode(j), at=time.time()
        ),
        p.DEAD_LETTER_ALL.pattern: p.DeadLetter(
            subject="jobs.submit", service="scheduler", reason="x", data=b"\x00", at=time.time()
        ),
        p.DATASTORE_MODEL_PUT.pattern: p.ModelPut(manifest=model_manifest()),
        p.DATASTORE_MODEL_GET.pattern: p.ModelGet(model="m"),
        p.DATASTORE_ADAPTER_PUT.pattern: p.AdapterPut(manifest=manifest(), config=b"{}", weights=b"\x00" * 16),
        p.DATASTORE_ADAPTER_GET.pattern: p.AdapterGet(adapter="demo-x"),
        p.DATASTORE_ADAPTER_LIST.pattern: p.AdapterList(base_model_id=MODEL),
        p.DATASTORE_ADAPTER_BLOB.pattern: p.AdapterGet(adapter=ADAPTER),
        p.DATASTORE_JOB_GET.pattern: p.JobGet(job_id=j.job_id),
        p.DATASTORE_JOB_LIST.pattern: p.JobList(client_address=ADDR),  # datastore.job.list.<client_id>
        p.DATASTORE_ATTRIBUTION_GET.pattern: p.AttributionGet(index_id="e" * 64),
        p.DATASTORE_DATANET_CREATE.pattern: p.DatanetCreate(name="pirate", description="pirate speech"),
        p.DATASTORE_DATANET_CONTRIBUTE.pattern: sign(
            p.Contribution(
                datanet="pirate",
                contributor_key=CLIENT.public,
                payout_address=ADDR,
                records=b'{"text": "Arr"}\n',
                created_at=1.0,
            ),
            CLIENT,
        ),
        p.DATASTORE_DATANET_GET.pattern: p.DatanetGet(name="pirate", version=2),
        p.DATASTORE_CONTRIBUTION_GET.pattern: p.ContributionGet(contribution_id="e" * 64),
        p.SETTLEMENT_DATANET_RECORD.pattern: p.DatanetRecord(name="pirate", version=2),
        p.SETTLEMENT_EPOCHS.pattern: p.EpochList(limit=5),
        p.SETTLEMENT_CLAIM.pattern: p.ClaimBalance(address="0x" + "4" * 40),
        p.SETTLEMENT_BALANCE.pattern: p.BalanceGet(address=ADDR),
        p.SETTLEMENT_FAUCET.pattern: p.Faucet(address=ADDR, amount=10**21, escrow=10**20),
        p.SETTLEMENT_STAKE.pattern: p.StakeGet(address=ADDR),
        p.SETTLEMENT_RESERVE.pattern: p.Reserve(job_id=j.job_id, client_address=ADDR, max_fee=10**20),
        p.SETTLEMENT_RELEASE.pattern: p.Release(job_id=j.job_id, reason="expired"),
    }


async def job_events(js, job_id: str) -> list[p.JobEvent]:
    """The job's events on the EVENTS stream so far (empty if none yet)."""
    sub = await js.pull_subscribe(p.job_events_by_id(job_id), stream="EVENTS")
    try:
        return [codec.decode(p.JobEvent, m.data) for m in await sub.fetch(20, timeout=1)]
    except Exception:
        return []
    finally:
        await sub.unsubscribe()
