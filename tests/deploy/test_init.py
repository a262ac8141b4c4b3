"""deploy/init.py, the compose devnet's one-shot init, run as compose runs it (without the containers)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats

from loranet import protocol as p
from loranet.client import Client
from loranet.signing import Identity

ROOT = Path(__file__).resolve().parents[2]


def _load_init():
    spec = importlib.util.spec_from_file_location("loranet_deploy_init", ROOT / "deploy" / "init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


init = _load_init()


def test_contracts_are_deployed_once_and_a_stale_file_is_replaced(tmp_path):
    # The in-process chain stands in for anvil: deploy_contracts only sees Chain's interface.
    path = tmp_path / "deployment" / "chain.env"
    settings = init.InitSettings(deployment_file=str(path), wait_s=5)
    log = init.EventLog("init", "test", "WARNING")
    first = init.deploy_contracts(settings, log)
    assert all(first[k].startswith("0x") and len(first[k]) == 42 for k in init.ADDRESS_KEYS)
    assert init.parse_deployment(path.read_text()) == first
    # A file whose contracts are not on the chain (the chain was reset) is rewritten.
    path.write_text(init.format_deployment("0x" + "9" * 40, "0x" + "8" * 40, "0x" + "7" * 40, 1))
    again = init.deploy_contracts(settings, log)
    assert again["LORANET_TOKEN_ADDRESS"] != "0x" + "9" * 40
    assert init.parse_deployment(path.read_text()) == again


async def test_init_script_creates_the_topology_and_registers_the_catalogue(nats_server, redis_server, tmp_path):
    env = dict(
        os.environ,
        LORANET_NATS_URL=nats_server.url,
        LORANET_REDIS_URL=redis_server.url,
        LORANET_CACHE=str(tmp_path / "cache"),
        LORANET_DEMO_ADAPTERS="1",
        LORANET_WAIT_S="120",
        LORANET_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.pop("LORANET_RPC_URL", None)  # no chain to deploy to: settlement would run its in-process EVM
    datastore = subprocess.Popen(
        [sys.executable, "-m", "services.datastore"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Exactly the compose command: python deploy/init.py, from the repository root.
        done = subprocess.run(
            [sys.executable, "deploy/init.py"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert '"event":"init.done"' in done.stdout + done.stderr
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for spec in (p.SCHEDULER_JOBS, p.VERIFIER_RESULTS, p.SETTLEMENT_VERDICTS, p.DATASTORE_EVENTS):
            assert (await js.consumer_info(spec.stream, spec.durable)).config.durable_name == spec.durable
        await js.key_value(p.NODES_BUCKET)
        client = Client(nc, Identity.generate())
        model = await client.model()
        assert [a.name for a in await client.adapters(model.model_id)] == ["demo-0"]
        await nc.drain()
    finally:
        datastore.send_signal(signal.SIGTERM)
        datastore.wait(30)
