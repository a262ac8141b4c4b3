"""Crash safety: settlement killed (os._exit(137), as kill -9) at each point of a commit, then restarted.

Real nats-server, the chain process (loranet_ops.chain_node), and
`python -m services.settlement` as a subprocess with LORANET_FAULT_POINT set
on its first run. After the restart every job ends exactly once: settled if
its verdict accepted it, refunded if not; one receipt and one terminal event
per job; the client's escrow paid exactly the fees and the credits equal them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from loranet import codec, topology
from loranet import protocol as p
from loranet.signing import sign
from services.settlement.devchain import DevChain
from services.settlement.packing import Reservation
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
ESCROW = 10**18


def _settlement(
    nats_url: str,
    rpc_url: str,
    log: Path,
    fault: str = "",
    fault_after: int = 0,
    epoch_max_jobs: int = 16,
    max_reruns: int = 0,
) -> subprocess.Popen:
    env = dict(
        os.environ,
        LORANET_NATS_URL=nats_url,
        LORANET_RPC_URL=rpc_url,
        LORANET_EPOCH_MAX_S="0.3",
        LORANET_EPOCH_MAX_JOBS=str(epoch_max_jobs),
        LORANET_FAULT_POINT=fault,
        LORANET_FAULT_AFTER=str(fault_after),
        LORANET_INSTANCE="settlement-test",
        # no scheduler here: a rejected result is refunded, not re-run (unless a test asks)
        LORANET_MAX_RERUNS=str(max_reruns),
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.settlement"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _messages(js, subject: str, stream: str) -> list[bytes]:
    sub = await js.pull_subscribe(subject, stream=stream)
    out: list[bytes] = []
    try:
        while True:
            try:
                batch = await sub.fetch(256, timeout=0.5)
            except Exception:
                break
            out += [m.data for m in batch]
            for m in batch:
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


async def _receipts(js) -> dict[str, list[p.Receipt]]:
    out: dict[str, list[p.Receipt]] = {}
    for data in await _messages(js, p.RECEIPTS_ALL.pattern, "RECEIPTS"):
        receipt = codec.decode(p.Receipt, data)
        out.setdefault(receipt.job_id, []).append(receipt)
    return out


def _verdicts(client: str, accepted: int, rejected: int) -> list[p.Verdict]:
    out = []
    for k in range(accepted + rejected):
        v = factories.verdict(factories.result(factories.job(adapter_id="", client_address=client, max_fee=10**15)))
        if k >= accepted:
            v = sign(
                v.model_copy(update={"accepted": False, "checks": [p.Check(name="fingerprint", ok=False)]}),
                factories.VERIFIER,
            )
        out.append(v)
    return out


@pytest.mark.parametrize(
    "fault,accepted,rejected",
    [
        ("before_send", 10, 3),
        ("after_send", 10, 3),
        ("after_receipt", 10, 3),
        ("after_publish", 10, 3),
        ("after_send", 0, 4),  # a refund-only commit
    ],
)
async def test_kill_at_each_point_then_restart(nats_server, chain_node_url, tmp_path, fault, accepted, rejected):
    chain = DevChain.open(chain_node_url)
    client = chain.new_account(open_tokens=ESCROW)
    chain.deposit(client.key, ESCROW)
    parties = [factories.ADDR, chain.treasury()]
    credits_before = [chain.earned(a) for a in parties]
    seq_before = chain.last_seq()

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await topology.ensure_topology(js)
    verdicts = _verdicts(client.address, accepted, rejected)
    for v in verdicts + verdicts[:2]:  # two duplicate deliveries as well
        await js.publish(p.verdicts(v.job_id), codec.encode(v))

    log = tmp_path / "settlement.log"
    crashed = _settlement(nats_server.url, chain_node_url, log, fault)
    try:
        assert await asyncio.to_thread(crashed.wait, 120) == 137, log.read_text()[-3000:]
    finally:
        _stop(crashed)
    assert f'"point":"{fault}"' in log.read_text()
    before_restart = await _receipts(js)
    if fault in ("before_send", "after_send", "after_receipt"):
        assert not before_restart  # the crash came before any receipt
    if fault == "before_send":
        assert chain.last_seq() == seq_before  # nothing reached the chain
    elif accepted:
        assert chain.last_seq() == seq_before + 1  # the batch is mined, its receipts missing

    survivor = _settlement(nats_server.url, chain_node_url, log)
    try:
        deadline = time.monotonic() + 120
        receipts: dict[str, list[p.Receipt]] = {}
        while time.monotonic() < deadline:
            receipts = await _receipts(js)
            if len(receipts) == len(verdicts):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # anything late (a duplicate) would show now
        receipts = await _receipts(js)
    finally:
        _stop(survivor)
    text = log.read_text()
    assert len(receipts) == len(verdicts), text[-3000:]
    assert all(len(r) == 1 for r in receipts.values()), {k: len(r) for k, r in receipts.items()}
    if fault != "before_send" and accepted:
        assert '"event":"journal.recovering"' in text
    for v in verdicts:
        receipt = receipts[v.job_id][0]
        assert receipt.status == ("settled" if v.accepted else "refunded")
        assert chain.job_state(v.job_id) == receipt.status
    # One terminal event per job.
    for v in verdicts:
        events = [
            codec.decode(p.JobEvent, d)
            for d in await _messages(js, p.job_events(v.result.request.client_key, v.job_id), "EVENTS")
        ]
        assert [e.stage for e in events] == [receipts[v.job_id][0].status]
    fees = sum(r[0].fee for r in receipts.values())
    assert fees == 15 * 10**12 * accepted  # 3 prompt + 3 output tokens at the devnet price
    assert chain.escrow_of(client.address) == ESCROW - fees
    assert sum(chain.earned(a) - b for a, b in zip(parties, credits_before)) == fees
    assert all(sum(x.amount for x in r[0].payouts) == r[0].fee for r in receipts.values())
    if accepted:
        assert {r[0].epoch for r in receipts.values() if r[0].status == "settled"} == {seq_before + 1}
    await nc.close()


async def test_kill_mid_stream_after_some_epochs(nats_server, chain_node_url, tmp_path):
    """40 jobs in epochs of 8; killed at the third commit's receipt; the restart finishes the rest."""
    chain = DevChain.open(chain_node_url)
    client = chain.new_account(open_tokens=ESCROW)
    chain.deposit(client.key, ESCROW)
    seq_before = chain.last_seq()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await topology.ensure_topology(js)
    verdicts = _verdicts(client.address, 36, 4)
    for v in verdicts:
        await js.publish(p.verdicts(v.job_id), codec.encode(v))
    log = tmp_path / "settlement.log"
    crashed = _settlement(nats_server.url, chain_node_url, log, "after_receipt", fault_after=2, epoch_max_jobs=8)
    try:
        assert await asyncio.to_thread(crashed.wait, 120) == 137, log.read_text()[-3000:]
    finally:
        _stop(crashed)
    assert 0 < len(await _receipts(js)) < len(verdicts)
    survivor = _settlement(nats_server.url, chain_node_url, log, epoch_max_jobs=8)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(await _receipts(js)) < len(verdicts):
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        receipts = await _receipts(js)
    finally:
        _stop(survivor)
    assert len(receipts) == len(verdicts) and all(len(r) == 1 for r in receipts.values())
    assert '"event":"journal.batch_mined"' in log.read_text()
    fees = sum(r[0].fee for r in receipts.values())
    assert fees == 15 * 10**12 * 36 and chain.escrow_of(client.address) == ESCROW - fees
    settled_epochs = sorted({r[0].epoch for r in receipts.values() if r[0].status == "settled"})
    assert settled_epochs == list(range(seq_before + 1, chain.last_seq() + 1))  # no batch without receipts
    for v in verdicts:
        assert chain.job_state(v.job_id) == ("settled" if v.accepted else "refunded")
    await nc.close()


async def test_kill_between_recording_a_rerun_and_publishing_it(nats_server, chain_node_url, tmp_path):
    """The re-run is recorded (attempts.<job_id>) and settlement dies before publishing it: the
    restarted settlement gets the verdict again and publishes the re-run, once; nothing is refunded
    and the reservation stays held."""
    chain = DevChain.open(chain_node_url)
    client = chain.new_account(open_tokens=ESCROW)
    chain.deposit(client.key, ESCROW)
    job = factories.job(adapter_id="", client_address=client.address, max_fee=10**15)
    chain.reserve([Reservation(bytes.fromhex(job.job_id), client.address, job.max_fee)])
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await topology.ensure_topology(js)
    v = factories.verdict(factories.result(job))
    v = sign(
        v.model_copy(update={"accepted": False, "checks": [p.Check(name="fingerprint", ok=False)]}), factories.VERIFIER
    )
    await js.publish(p.verdicts(v.job_id), codec.encode(v))
    log = tmp_path / "settlement.log"
    crashed = _settlement(nats_server.url, chain_node_url, log, "before_rerun_publish", max_reruns=2)
    try:
        assert await asyncio.to_thread(crashed.wait, 120) == 137, log.read_text()[-3000:]
    finally:
        _stop(crashed)

    async def published() -> int:
        info = await js.stream_info("JOBS", subjects_filter=p.JOBS_RERUN.pattern)
        return sum((info.state.subjects or {}).values()) if info.state.subjects else 0

    assert await published() == 0  # recorded, not published
    survivor = _settlement(nats_server.url, chain_node_url, log, max_reruns=2)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not await published():
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.5)  # a second copy would show now
    finally:
        _stop(survivor)
    reruns = await _messages(js, p.JOBS_RERUN.pattern, "JOBS")
    assert len(reruns) == 1, log.read_text()[-3000:]
    rerun = codec.decode(p.RerunRequest, reruns[0])
    assert rerun.attempt == 1 and rerun.exclude == ["node-0"] and rerun.request == job
    events = [
        codec.decode(p.JobEvent, d) for d in await _messages(js, p.job_events(job.client_key, job.job_id), "EVENTS")
    ]
    assert [e.stage for e in events] == ["rerun"]
    assert chain.job_state(job.job_id) == "reserved"
    await nc.close()
