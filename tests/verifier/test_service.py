"""The verifier service over a real nats-server: honest → accepted, tampered → rejected, forged → dead letter."""

from __future__ import annotations

import asyncio
import json
import time

from loranet import codec
from loranet import protocol as p
from loranet.errors import ServiceError
from loranet.model.adapters import adapter_to_blobs
from loranet.runtime import Endpoint, Runtime
from loranet.settings import CommonSettings
from loranet.signing import Identity, sign
from services.verifier.engine import AuditEngine
from services.verifier.handlers import VerifierService, load_identity
from services.verifier.settings import VerifierSettings
from tests import factories


async def _collect(js, subject: str, stream: str, want: int, timeout: float = 60.0) -> list[bytes]:
    sub = await js.pull_subscribe(subject, stream=stream)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(want - len(out), timeout=1)
        except Exception:
            continue
        for m in msgs:
            await m.ack()
            out.append(m.data)
    await sub.unsubscribe()
    return out


def _blob_endpoint(adapters) -> Endpoint:
    """A minimal stand-in for the datastore's adapter-blob endpoint (services/datastore is not there yet)."""
    blobs = {aid: adapter_to_blobs(path) for _, path, aid in adapters}

    async def get_blob(req: p.AdapterGet) -> p.AdapterBlob:
        if req.adapter not in blobs:
            raise ServiceError("not_found", f"no adapter {req.adapter}", "adapter")
        config, weights = blobs[req.adapter]
        return p.AdapterBlob(adapter_id=req.adapter, config=config, weights=weights)

    return Endpoint("adapter-blob", p.DATASTORE_ADAPTER_BLOB, get_blob)


async def test_verifier_service_end_to_end(nats_server, tmp_path, base, adapters, honest, client):
    settings = VerifierSettings(
        nats_url=nats_server.url,
        cache_dir=str(tmp_path / "cache"),
        state_dir=str(tmp_path / "state"),
        drain_timeout_s=5,
        stats_interval_s=0.2,
    )
    engine = await asyncio.to_thread(AuditEngine, "", "", "cpu", settings.cache_dir, 4)
    assert engine.model_id == base[1]
    adapter_id = adapters[1][2]
    jobs = {
        "honest_base": client.job(base[1], "", "The quick brown fox", 40),
        "honest_adapter": client.job(base[1], adapter_id, "Once upon a time", 24, temperature=0.8, seed=7),
        "tampered": client.job(base[1], adapter_id, "Hello", 20),
    }
    results = {k: honest.run(j) for k, j in jobs.items()}
    t = results["tampered"]
    edited = [*t.output_tokens]
    edited[3] = (edited[3] + 1) % 256
    from loranet.model import tokenizer

    results["tampered"] = sign(
        t.model_copy(update={"output_tokens": edited, "output_text": tokenizer.decode(edited)}), honest.identity
    )
    forged = results["honest_base"].model_copy(update={"job_id": p.new_job_id()})  # moved without re-signing
    unknown = Identity.generate()
    stranger = sign(results["honest_base"].model_copy(update={"node_key": unknown.public}), unknown)
    # Issue 18: a registered node answering a job the scheduler assigned to another node, or with no
    # assignment, or with one signed by a key no scheduler announced: refused, no verdict.
    other_job = client.job(base[1], "", "The quick brown fox", 8)
    gen = honest.run(other_job)
    unassigned = sign(
        gen.model_copy(update={"assignment": factories.assignment(other_job.job_id, "node-9")}), honest.identity
    )
    bare = sign(gen.model_copy(update={"assignment": None}), honest.identity)
    rogue = Identity.generate()
    self_assigned = sign(
        gen.model_copy(
            update={
                "assignment": sign(
                    factories.assignment(other_job.job_id, honest.node_id).model_copy(
                        update={"scheduler_key": rogue.public}
                    ),
                    rogue,
                )
            }
        ),
        honest.identity,
    )

    async with (
        Runtime("datastore-stub", CommonSettings(nats_url=nats_server.url)) as ds,
        Runtime("verifier", settings) as rt,
    ):
        await ds.mount([_blob_endpoint(adapters)])
        kv = await rt.js.key_value(p.NODES_BUCKET)
        await kv.put(honest.node_id, codec.encode(honest.heartbeat()))
        await factories.announce_scheduler(rt.js)
        verifier = VerifierService(rt, settings, engine, load_identity(settings))
        rt.spawn(verifier.stats_loop(), name="stats")
        await rt.mount(verifier.routes())
        for r in [*results.values(), forged, stranger, unassigned, bare, self_assigned]:
            await rt.js.publish(p.results(r.node_id), codec.encode(r))
        await rt.js.publish(p.results(honest.node_id), codec.encode(results["honest_base"]))  # replay
        raw = await _collect(rt.js, p.VERDICTS_ALL.pattern, "VERDICTS", len(results))
        verdicts = {v.job_id: v for v in (codec.decode(p.Verdict, d) for d in raw)}
        letters = [codec.decode(p.DeadLetter, d) for d in await _collect(rt.js, "dlq.>", "DEADLETTER", 5, 20)]
        events = [codec.decode(p.JobEvent, d) for d in await _collect(rt.js, p.JOB_EVENTS_ALL.pattern, "EVENTS", 3, 20)]
        await asyncio.sleep(1.0)  # the replay is skipped, not verdicted twice
        extra = await _collect(rt.js, p.VERDICTS_ALL.pattern, "VERDICTS", len(results) + 1, 2)
        stats = json.loads(
            (await (await rt.js.key_value(settings.stats_bucket)).get(f"verifier-0.{honest.node_id}")).value
        )
        # Issue 18: a drawn committee member audits on settlement's request, a run it verdicted before
        # included (a verdict of its own, not de-duplicated into the first), and dead-letters a request
        # addressed to another verifier.
        base_result = results["honest_base"]
        for member in ("verifier-0", "verifier-9"):
            ask = p.AuditRequest(
                job_id=base_result.job_id,
                verifier_id=member,
                committee=["verifier-0", "verifier-1", "verifier-9"],
                needed=2,
                result=base_result,
                at=time.time(),
            )
            await rt.js.publish(p.audit_request("verifier-0"), codec.encode(ask))
        after = await _collect(rt.js, p.VERDICTS_ALL.pattern, "VERDICTS", len(results) + 1, 30)
        # A restarted verifier reads its node records back: the running statistics and any flag survive.
        await asyncio.sleep(0.5)  # the stats loop's next write
        again = VerifierService(rt, settings, engine, load_identity(settings))
        assert await again.restore_records() >= 1
        assert again.records[honest.node_id] == verifier.records[honest.node_id]
        misaddressed = await _collect(rt.js, "dlq.results.audit.>", "DEADLETTER", 1, 20)
    assert (
        stats["results"] == 3 and stats["audited"] == 3 and stats["rejected"] == 1 and stats["forced_audits_left"] > 0
    )
    assert len(extra) == len(results)
    member = codec.decode(p.Verdict, after[-1])
    assert member.job_id == base_result.job_id and member.audited and member.accepted
    assert any("committee member (2 of 3" in c.detail for c in member.checks if c.name == "audit_policy")
    assert "for verifier-9, delivered to verifier-0" in codec.decode(p.DeadLetter, misaddressed[0]).reason
    assert set(verdicts) == {j.job_id for j in jobs.values()}
    for name, job in jobs.items():
        v = verdicts[job.job_id]
        v.verify()
        assert v.audited, name
        names = {c.name for c in v.checks}
        assert {"fingerprint", "sampling_replay", "termination", "request_signature", "evidence_absent"} <= names
        assert v.accepted == name.startswith("honest"), (name, [c for c in v.checks if not c.ok])
    bad = {c.name for c in verdicts[jobs["tampered"].job_id].checks if not c.ok}
    assert {"fingerprint", "sampling_replay"} <= bad
    reasons = sorted(d.reason for d in letters)
    assert len(letters) == 5, reasons
    forged_letters = [r for r in reasons if r.startswith("forged result")]
    assert len(forged_letters) == 2 and any("unknown" in r or "registered key" in r for r in forged_letters), reasons
    assert any("was assigned to node node-9" in r for r in reasons), reasons
    assert any("carries no work assignment" in r for r in reasons), reasons
    assert any("not an announced scheduler's key" in r for r in reasons), reasons
    assert {e.stage for e in events} == {"verdict"} and len(events) == 3
    assert verifier.records[honest.node_id].results == 3
