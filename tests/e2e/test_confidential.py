"""A confidential job on the embedded devnet: settled, opened by its client, and never in the clear outside
the client, its node and its verifier committee.

An operator (the NATS admin user) records every message on `>` while the job runs, then reads every
JetStream stream (KV buckets included) and the whole Redis keyspace; the prompt, the output text, the
prompt's and the output's token-id sequences and every chunk of the activation fingerprint (the proof, from
which an observer holding the public model recovers output tokens: bench/fingerprint_leak.py) must appear
nowhere in those bytes.  Only afterwards is the same prompt run in the clear, to check that the sealed
output is the one greedy decoding gives.

A cheating node (this test, connected as an inference node) that seals a fingerprint computed with the
wrong adapter is rejected by the verifier, which opens the sealed fingerprint to audit it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import string
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import nats
import redis.asyncio as aioredis
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy
from nats.js.errors import NotFoundError

from loranet import codec, confidential, topology
from loranet import protocol as p
from loranet.client import Client
from loranet.fingerprint import fingerprint_chunks
from loranet.model import TOKENIZER_ID, tokenizer
from loranet.model.generate import ReferenceModel
from loranet.signing import Identity, devnet_address, sign
from loranet_ops.demo import build_catalogue
from services.inference.domain import build_result
from tests import factories

ADAPTER = "demo-0"
MAX_TOKENS = 24


def needles_of(
    prompt: str, prompt_tokens: list[int], output_tokens: list[int], output_text: str, fingerprint: list[bytes] = ()
) -> dict[str, bytes]:
    """Byte strings whose presence would leak the job: text, token ids as MessagePack and JSON would carry
    them, and each fingerprint chunk (raw, hex, base64, and a 16-byte run from inside it)."""
    out = {
        "prompt": prompt.encode(),
        "prompt_tokens(msgpack)": msgpack.packb(prompt_tokens),
        "prompt_tokens(json)": json.dumps(prompt_tokens).encode(),
        "prompt_tokens(csv)": ",".join(map(str, prompt_tokens)).encode(),
    }
    if len(output_text.encode()) >= 8:  # shorter strings could turn up by chance in 100s of kB of ciphertext
        out["output_text"] = output_text.encode()
    if len(output_tokens) >= 8:
        out["output_tokens(msgpack)"] = msgpack.packb(output_tokens)
        out["output_tokens(json)"] = json.dumps(output_tokens).encode()
        out["output_tokens(csv)"] = ",".join(map(str, output_tokens)).encode()
    for i, chunk in enumerate(fingerprint):
        assert len(chunk) >= 32, "a fingerprint chunk too short to search for"
        out[f"fingerprint[{i}]"] = chunk
        out[f"fingerprint[{i}](hex)"] = chunk.hex().encode()
        out[f"fingerprint[{i}](base64)"] = base64.b64encode(chunk)
        out[f"fingerprint[{i}][16:32]"] = chunk[16:32]  # inside the polynomial's coefficients, not the header
    return out


@contextlib.asynccontextmanager
async def bus_recorder(config):
    """Every message on `>` as the NATS admin (an operator) sees it: [(subject, subject + data + headers)]."""
    admin = await nats.connect(config.url_for("admin"))
    bus: list[tuple[str, bytes]] = []

    async def record(msg) -> None:
        bus.append((msg.subject, msg.subject.encode() + b"\x00" + (msg.data or b"") + repr(msg.headers or {}).encode()))

    await admin.subscribe(">", cb=record)
    await admin.flush()
    try:
        yield admin, bus
    finally:
        await admin.drain()


async def stream_bytes(js) -> list[tuple[str, bytes]]:
    """(stream:subject, data + headers) of every message of every stream, KV buckets included."""
    out: list[tuple[str, bytes]] = []
    for info in await js.streams_info():
        name, state = info.config.name, info.state
        if not state.messages:
            continue
        if info.config.retention == RetentionPolicy.WORK_QUEUE:  # a second consumer is refused: read by sequence
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg(name, seq)
                except NotFoundError:
                    continue
                out.append((f"{name}:{msg.subject}", (msg.data or b"") + repr(msg.headers or {}).encode()))
            continue
        consumer = await js.add_consumer(
            name, ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0)
        )
        sub = await js.pull_subscribe_bind(consumer=consumer.name, stream=name)
        seen = 0
        while seen < state.messages:
            try:
                msgs = await sub.fetch(512, timeout=5)
            except Exception:
                break
            for msg in msgs:
                out.append((f"{name}:{msg.subject}", (msg.data or b"") + repr(msg.headers or {}).encode()))
            seen += len(msgs)
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        try:
            await js.delete_consumer(name, consumer.name)
        except Exception:
            pass
    return out


async def redis_bytes(url: str) -> list[tuple[str, bytes]]:
    """(key, every byte of its value) for the whole keyspace, read by type (DUMP could compress)."""
    r = aioredis.Redis.from_url(url)
    out: list[tuple[str, bytes]] = []
    try:
        async for key in r.scan_iter(count=1000):
            kind = (await r.type(key)).decode()
            if kind == "string":
                parts = [await r.get(key) or b""]
            elif kind == "hash":
                parts = [b for kv in (await r.hgetall(key)).items() for b in kv]
            elif kind == "list":
                parts = await r.lrange(key, 0, -1)
            elif kind == "set":
                parts = list(await r.smembers(key))
            elif kind == "zset":
                parts = [m for m, _ in await r.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                parts = [b for _, fields in await r.xrange(key) for kv in fields.items() for b in kv]
            else:
                parts = []
            out.append((key.decode(errors="replace"), key + b"\x00" + b"\x00".join(parts)))
    finally:
        await r.aclose()
    return out


async def _committee(client: Client, within_s: float = 60.0) -> list[p.VerifierAnnouncement]:
    """The verifiers' announced keys; a devnet is ready once its verifiers run, and each announces its key
    once its audit engine has loaded (a loaded machine: seconds after)."""
    deadline = time.monotonic() + within_s
    while not (committee := await client.verifiers()) and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
    return committee


async def test_confidential_job_settles_and_leaks_nothing(devnet):
    config, _ = devnet
    prompt = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    async with bus_recorder(config) as (admin, bus):
        async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
            await client.faucet(10**20, 10**19)
            committee = await _committee(client)
            assert committee, "no verifier announced its key in KV verifiers within 60 s"
            started = time.monotonic()
            job_id = await client.submit(ADAPTER, prompt, MAX_TOKENS, confidential=True)
            outcome = await client.wait(job_id, 300)
            assert outcome.status == "settled", outcome
            assert outcome.verdict["accepted"] and outcome.verdict["audited"], outcome
            assert outcome.fee > 0 and sum(outcome.payouts.values()) == outcome.fee
            assert "does not open" not in outcome.reason, outcome.reason  # the client opened its output
            record_ = await client.job(job_id)
            assert record_.request.confidential and record_.request.prompt == ""
            assert record_.result.sealed_output is not None and record_.result.output_text == ""
            assert record_.result.output_tokens == [] and record_.result.prompt_tokens == []
            assert record_.result.fingerprint.chunks == []  # the proof is sealed too
            opened = confidential.open_output(record_.result, client.identity)
            # (the tiny model's text may decode empty, e.g. a first token that ends the turn: the tokens do not)
            assert opened.output_tokens, "the client could not open a non-empty output"
            # The client reads the proof the verifier audited: one chunk for the prompt, one per 32 outputs.
            assert len(opened.fingerprint_chunks) == 1 + -(-len(opened.output_tokens) // 32)
            assert opened.output_text == outcome.output
            prompt_tokens = tokenizer.encode(prompt)
            assert opened.prompt_tokens == prompt_tokens
            assert record_.result.token_counts() == (len(prompt_tokens), len(opened.output_tokens))
            # The fee was computed from the clear counts the verifier checked.
            assert [c.ok for c in record_.verdicts[-1].checks if c.name == "sealing"] == [True]
            # ... and the audit compared the sealed fingerprint (opened by the verifier) with its prefill.
            audit = [c.ok for c in record_.verdicts[-1].checks if c.name in ("fingerprint", "proof_structure")]
            assert audit == [True, True]
            sealed_s = time.monotonic() - started

            # -- everything an operator can see, now: the bus as recorded, every stream, all of Redis ----
            await admin.flush()
            await asyncio.sleep(0.5)
            streams = await stream_bytes(admin.jetstream())
            keyspace = await redis_bytes(config.redis_url)
            haystacks = list(bus) + streams + keyspace
            # The scan saw the job everywhere it went: on the bus (submit, work, result, verdict), in the
            # RESULTS/VERDICTS/EVENTS streams, and in the datastore's Redis record.
            for where, seen in (("bus", bus), ("streams", streams), ("redis", keyspace)):
                assert any(job_id.encode() in h for _, h in seen), where
            for stream in ("RESULTS", "VERDICTS", "EVENTS"):
                assert any(w.startswith(stream + ":") and job_id.encode() in h for w, h in streams), stream
            assert any(w == p.JOBS_SUBMIT.pattern and job_id.encode() in h for w, h in bus)
            assert any(w.startswith("work.") and job_id.encode() in h for w, h in bus)
            needles = needles_of(
                prompt, prompt_tokens, opened.output_tokens, opened.output_text, opened.fingerprint_chunks
            )
            # The node and the verifier read the plaintext: their logs (and every other) must not show it.
            logs = [(f"log:{f.name}", f.read_bytes()) for f in Path(config.state_dir).glob("**/*.log")]
            assert len(logs) >= 5
            leaks = [
                (what, where) for what, needle in needles.items() for where, hay in haystacks + logs if needle in hay
            ]
            assert not leaks, leaks[:10]

            # -- the same prompt in the clear (after the scan): the sealed output is greedy decoding's ----
            plain_id = await client.submit(ADAPTER, prompt, MAX_TOKENS)
            plain = await client.wait(plain_id, 300)
            assert plain.status == "settled", plain
            assert plain.output == outcome.output
            # ... and the scan would have caught a plaintext job: the prompt is now on the bus.
            await admin.flush()
            await asyncio.sleep(0.5)
            assert any(prompt.encode() in h for _, h in bus)
            # ... and the plain job's fingerprint chunks, in the clear as always, are what the scan looks for.
            plain_record = await client.job(plain_id)
            assert plain_record.result.fingerprint.chunks
            assert all(any(ch in h for _, h in bus) for ch in plain_record.result.fingerprint.chunks)
            print(
                f"confidential job settled in {sealed_s:.1f}s; scanned {len(bus)} bus messages, {len(streams)} "
                f"stream messages, {len(keyspace)} Redis keys for {len(needles)} needles"
            )


def test_cli_submit_confidential(devnet):
    config, _ = devnet
    env = {k: v for k, v in os.environ.items() if k != "LORANET_NATS_URL"}  # the CLI finds the devnet's client URL
    cli = [sys.executable, "-m", "loranet_ops.cli", "--state-dir", config.state_dir]
    done = subprocess.run(
        [
            *cli,
            "submit",
            "--adapter",
            "demo-1",
            "--prompt",
            "sealed from the CLI",
            "--max-tokens",
            "8",
            "--confidential",
            "--wait",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "settled" and out["output"], out
    # `loranet job` opens the sealed output with the same (CLI) identity.
    record = subprocess.run([*cli, "job", out["job_id"], "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(record.stdout)["output"] == out["output"]


async def test_a_node_sealing_a_wrong_adapter_fingerprint_is_rejected(devnet):
    """A cheating node: the client's output (generated with the right adapter), with a fingerprint computed by
    a prefill with another adapter, sealed as an honest node seals it.  Outsiders cannot audit it any more, so
    the committee verifier must open the sealed fingerprint and compare it: only `fingerprint` fails."""
    config, _ = devnet
    resolved, adapters = await asyncio.to_thread(build_catalogue, config.model, 2, config.cache_dir)
    model_id = resolved.model_id
    model = ReferenceModel.from_path(resolved.path, model_id)
    for name, adapter_path, adapter_id, _ in adapters:
        model.add_adapter(name, adapter_path, adapter_id)
    node_id, node = f"cheat-{secrets.token_hex(3)}", Identity.generate()
    address = devnet_address(node_id)
    prompt = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))
    nc = await nats.connect(config.url_for("inference"))  # a node's NATS identity, as services/inference has
    js = nc.jetstream()
    kv = await js.key_value(p.NODES_BUCKET)

    async def heartbeat() -> None:
        while True:
            hb = factories.heartbeat(
                node_id,
                node_key=node.public,
                payout_address=address,
                model_ids=[model_id],
                slots_total=1,
                slots_free=1,
                at=time.time(),
            )
            await kv.put(node_id, codec.encode(sign(hb, node)))
            await asyncio.sleep(2)

    beating = asyncio.ensure_future(heartbeat())
    spec = p.node_work(node_id)
    work = await js.pull_subscribe(
        spec.filter_subject, durable=spec.durable, stream=spec.stream, config=topology.consumer_config(spec)
    )
    try:
        async with bus_recorder(config) as (admin, bus):
            async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
                await client.faucet(10**20, 10**19)
                await asyncio.sleep(1)  # the first heartbeat is in KV nodes
                job_id = await client.submit(ADAPTER, prompt, MAX_TOKENS, confidential=True, node_id=node_id)
                msg = (await work.fetch(1, timeout=60))[0]
                await msg.ack()
                batch = codec.decode(p.WorkBatch, msg.data)
                job = batch.segments[0].jobs[0]
                assert job.job_id == job_id and job.node_id == node_id
                ids = tokenizer.encode(confidential.open_prompt(job, node))  # sealed to this node: it reads it
                gen = await asyncio.to_thread(model.generate, ids, ADAPTER, job.max_tokens)
                wrong = next(name for name, _, _, _ in adapters if name != ADAPTER)
                hidden, _ = await asyncio.to_thread(model.prefill_hidden, [*ids, *gen.output_ids], wrong)
                chunks = fingerprint_chunks(hidden, len(ids), n_generated=len(gen.output_ids))
                now = time.time()
                result = build_result(
                    job=job,
                    node_id=node_id,
                    node_key=node.public,
                    node_address=address,
                    node_seq=time.time_ns(),
                    model_id=model_id,
                    tokenizer_id=TOKENIZER_ID,
                    prompt_tokens=ids,
                    output_tokens=gen.output_ids,
                    output_text=tokenizer.decode(gen.output_ids),
                    finish_reason="eos" if gen.finish_reason == "stop" else "length",
                    chunks=chunks,
                    started_at=now - 1,
                    finished_at=now,
                    assignment=batch.assignment_of(job.job_id),  # the scheduler's word, as any node carries it
                )
                result = sign(confidential.seal_result(result), node)
                await js.publish(
                    p.results(node_id), codec.encode(result), headers={"Nats-Msg-Id": f"{job_id}:{node_id}"}
                )
                event = p.JobEvent(
                    job_id=job_id,
                    stage="result",
                    service="inference",
                    node_id=node_id,
                    body=codec.encode(result),
                    at=time.time(),
                )
                await js.publish(
                    p.job_events(job.client_key, job_id),
                    codec.encode(event),
                    headers={"Nats-Msg-Id": f"{job_id}:result:{node_id}"},
                )

                outcome = await client.wait(job_id, 300)
                assert outcome.status == "refunded" and outcome.fee == 0, outcome
                assert not outcome.verdict["accepted"] and outcome.verdict["audited"], outcome
                assert outcome.verdict["failed_checks"] == ["fingerprint"], outcome  # sealing, replay etc. pass
                record = await client.job(job_id)
                checks = {c.name: c for c in record.verdicts[-1].checks}
                assert checks["sealing"].ok and checks["sampling_replay"].ok and checks["proof_structure"].ok
                assert record.verdicts[-1].result.fingerprint.chunks == []  # the verdict embeds the sealed result
                assert confidential.open_output(record.result, client.identity).fingerprint_chunks == chunks

                # The node's (wrong) proof and the output never crossed the bus in the clear either.
                await admin.flush()
                await asyncio.sleep(0.5)
                assert any(w == p.results(node_id) and job_id.encode() in h for w, h in bus)
                assert any(w.startswith("verdicts.") and job_id.encode() in h for w, h in bus)
                needles = needles_of(prompt, ids, gen.output_ids, tokenizer.decode(gen.output_ids), chunks)
                leaks = [(what, where) for what, needle in needles.items() for where, hay in bus if needle in hay]
                assert not leaks, leaks[:10]
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        await kv.delete(node_id)  # the node is gone: the scheduler drains its (empty) durable
        await nc.drain()
