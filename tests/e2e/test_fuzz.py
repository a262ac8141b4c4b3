"""Hostile traffic on every subject and endpoint of a running devnet: nothing dies, nothing is lost.

The default suite sends a few of each kind per subject; `make fuzz` (LORANET_FUZZ_N=10000)
the full 10,000 per subject.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import nats
import pytest

from loranet import codec
from loranet import protocol as p
from loranet.client import Client
from loranet.signing import Identity
from loranet_ops import devnet as dn
from tests import fuzzing

N = int(os.environ.get("LORANET_FUZZ_N", "26"))
PULL_SUBJECTS = {
    p.JOBS_SUBMIT.pattern: p.JOBS_SUBMIT.pattern,
    p.JOBS_RERUN.pattern: p.JOBS_RERUN.pattern,
    p.WORK_ALL.pattern: p.work("node-0"),
    p.RESULTS_ALL.pattern: p.results("node-fuzz"),
    p.VERDICTS_ALL.pattern: p.verdicts("0" * 31 + "1"),
    p.JOB_EVENTS_ALL.pattern: p.job_events("0" * 64, "0" * 31 + "2"),
}
ENDPOINTS = [s.pattern for s in p.SUBJECTS if isinstance(s, p.Request)]
# Endpoints listening on a wildcard get their hostile requests on one concrete subject.
CONCRETE = {p.DATASTORE_JOB_GET.pattern: p.datastore_job_get("0" * 64)}


async def _count(js, subject: str) -> int:
    info = await js.stream_info("DEADLETTER", subjects_filter=subject)
    return sum((info.state.subjects or {}).values()) if info.state.subjects else 0


@pytest.mark.timeout(1800)
async def test_hostile_traffic_everywhere_while_honest_jobs_complete(devnet):
    config, _ = devnet
    rng = random.Random(1234)
    nc = await nats.connect(config.url_for("admin"), max_reconnect_attempts=3)  # hostile traffic reaches every subject
    js = nc.jetstream()
    try:
        async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
            await client.faucet(10**20, 10**19)
            # the devnet's first two adapters (demo-0/1 on the tiny model, the trained ones on SmolLM2)
            first, second = [a.name for a in await client.adapters()][:2]
            honest = [await client.submit(first, "honest under fire", 8)]
            expected: dict[str, int] = {}
            before = {subject: await _count(js, p.dead_letter(subject)) for subject in PULL_SUBJECTS.values()}
            for pattern, subject in PULL_SUBJECTS.items():
                for _kind, data in fuzzing.hostile_messages(pattern, N, rng):
                    await js.publish(subject, data)
                    # Some mutations leave a valid message (a dropped field that has a default, a
                    # replay): only those that cannot decode or verify must be dead-lettered.
                    expected[subject] = expected.get(subject, 0) + (not fuzzing.acceptable(pattern, data))
            honest.append(await client.submit(second, "still honest", 8))
            # Every request-reply endpoint answers every hostile request: a typed error, never silence.
            answered = errors = 0
            for pattern in ENDPOINTS:
                subject = CONCRETE.get(pattern, pattern)
                for _kind, data in fuzzing.hostile_messages(pattern, N, rng):
                    if len(data) > 1024 * 1024:
                        continue  # over NATS max_payload for requests is refused by the server itself
                    reply = await nc.request(subject, data, timeout=30)
                    answered += 1
                    if reply.headers and "Nats-Service-Error-Code" in reply.headers:
                        errors += 1
                        assert codec.decode(p.ErrorReply, reply.data).code in (
                            "invalid",
                            "not_found",
                            "conflict",
                            "hash_mismatch",
                            "unavailable",
                            "forbidden",  # a forged signature (a datanet contribution)
                        )
            assert answered and errors >= answered * 0.8
            # Every hostile message on a pull subject ends in the dead-letter stream with a reason.
            deadline = time.monotonic() + max(120, N / 20)
            while time.monotonic() < deadline:
                counts = {s: await _count(js, p.dead_letter(s)) - before[s] for s in PULL_SUBJECTS.values()}
                if all(counts[s] >= expected[s] for s in expected):
                    break
                await asyncio.sleep(1)
            assert all(counts[s] >= expected[s] for s in expected), (counts, expected)
            outcomes = [await client.wait(job_id, 600) for job_id in honest]
            assert [o.status for o in outcomes] == ["settled", "settled"]
    finally:
        await nc.close()
    state = dn.status(config.state_dir)
    assert state["running"]
    for name, info in state["services"].items():
        assert info["state"] == "running" and info["restarts"] == 0, (name, info)
