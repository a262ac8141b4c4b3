"""On the embedded devnet the chain is its own process: kill -9 settlement and every balance survives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

from loranet.client import Client
from loranet.signing import Identity
from loranet_ops import devnet as dn


def _service(state_dir: str, name: str) -> dict:
    return dn.status(state_dir)["services"][name]


async def test_settlement_crash_keeps_the_chain(devnet):
    config, state = devnet
    deployment = json.loads((Path(state["state_dir"]) / "chain.json").read_text())
    assert deployment["rpc_url"] == state["rpc_url"] and deployment["settlement"].startswith("0x")
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        funded = await client.faucet(10**20, 10**19)
        job_id = await client.submit("demo-0", "before the crash", 4)
        first = await client.wait(job_id, 180)
        assert first.status == "settled"

        before = _service(config.state_dir, "settlement")
        os.kill(int(before["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = _service(config.state_dir, "settlement")
            if now["restarts"] > before["restarts"] and now["state"] == "running":
                break
            await asyncio.sleep(0.5)
        assert _service(config.state_dir, "settlement")["restarts"] == before["restarts"] + 1

        # The same chain, the same contracts: the escrow left after the first job is still there.
        balance = None
        while time.monotonic() < deadline:
            try:
                balance = await client.balance()
                break
            except Exception:  # settlement still attaching
                await asyncio.sleep(0.5)
        assert balance is not None and balance.escrow == funded.escrow - first.fee
        job_id = await client.submit("demo-1", "after the crash", 4)
        second = await client.wait(job_id, 180)
        assert second.status == "settled" and second.epoch > first.epoch, second.reason
        assert (await client.balance()).escrow == funded.escrow - first.fee - second.fee


def test_cli_stake_of_a_node(devnet):
    import subprocess
    import sys

    config, _ = devnet
    env = {k: v for k, v in os.environ.items() if k != "LORANET_NATS_URL"}  # the CLI finds the devnet's client URL
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loranet_ops.cli",
            "--state-dir",
            config.state_dir,
            "stake",
            "--node",
            "node-0",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # Devnet nodes serve unstaked: the Registry knows no key for them.
    assert out["node_id"] == "node-0" and out["address"].startswith("0x")
    assert out["stake"] == "0" and out["active"] is False and out["min_stake"] == str(1000 * 10**18)


async def test_devnet_down_and_up_keeps_the_chain(tmp_path):
    """The chain process journals to <state_dir>/chain.journal: `devnet down` then `up` serves the same chain."""
    config = dn.DevnetConfig.scratch(
        tmp_path,
        demo_adapters=1,
        cache_dir=str(tmp_path / "cache"),
        epoch_max_s=0.2,
    )
    identity = Identity.generate()
    state = await asyncio.to_thread(dn.start_detached, config, 400)
    try:
        deployment = json.loads((Path(state["state_dir"]) / "chain.json").read_text())
        async with await Client.connect(config.url_for("client"), identity) as client:
            funded = await client.faucet(10**20, 10**19)
            first = await client.wait(await client.submit("demo-0", "before down", 4), 180)
            assert first.status == "settled", first.reason
    finally:
        await asyncio.to_thread(dn.stop, config.state_dir)

    state = await asyncio.to_thread(dn.start_detached, config, 400)
    try:
        again = json.loads((Path(state["state_dir"]) / "chain.json").read_text())
        assert {k: again[k] for k in ("token", "registry", "settlement", "chain_id")} == {
            k: deployment[k] for k in ("token", "registry", "settlement", "chain_id")
        }
        assert '"event":"chain.restored"' in Path(state["services"]["chain"]["log"]).read_text()
        async with await Client.connect(config.url_for("client"), identity) as client:
            balance = await client.balance()
            assert balance.escrow == funded.escrow - first.fee
            second = await client.wait(await client.submit("demo-0", "after up", 4), 180)
            assert second.status == "settled" and second.epoch > first.epoch, second.reason
            assert (await client.balance()).escrow == funded.escrow - first.fee - second.fee
    finally:
        await asyncio.to_thread(dn.stop, config.state_dir)
