"""deploy/nats/server.conf as a real 3-node JetStream cluster on loopback ports.

Only what compose decides by name is rewritten (the nats-N hostnames, the
ports, the store directory); everything else, sync_interval and the users
included, is the file compose mounts.  init then creates every stream with 3
replicas, as LORANET_JS_REPLICAS=3 asks in docker-compose.yml.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from loranet import natsauth
from loranet import protocol as p
from loranet.signing import Identity
from loranet_ops.servers import free_port, nats_server_binary, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
NATS_DIR = ROOT / "deploy" / "nats"
NODES = ("nats-1", "nats-2", "nats-3")


def local_config(text: str, client: int, http: int, cluster: int, routes: dict[str, int], store: Path) -> str:
    text = re.sub(r"^port: 4222", f"port: {client}\nhost: 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^http_port: 8222", f"http_port: {http}", text, flags=re.M)
    text = text.replace("store_dir: /data/jetstream", f'store_dir: "{store}"')
    text = re.sub(r"^  port: 6222", f"  host: 127.0.0.1\n  port: {cluster}", text, flags=re.M)
    for name, port in routes.items():
        text = text.replace(f"nats-route://{name}:6222", f"nats-route://127.0.0.1:{port}")
    return text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("nats-cluster")
    ports = {n: {"client": free_port(), "http": free_port(), "cluster": free_port()} for n in NODES}
    routes = {n: ports[n]["cluster"] for n in NODES}
    source = (NATS_DIR / "server.conf").read_text()
    issuer_public, _ = natsauth.new_issuer()
    env = dict(
        os.environ,
        LORANET_NATS_PASSWORD_INIT="pw-init",
        LORANET_NATS_AUTH_ISSUER=issuer_public,
        LORANET_NATS_AUTH_NKEY=natsauth.public_of(Identity.generate()),
        **{
            f"LORANET_NATS_PASSWORD_{r}": "x"
            for r in ("SCHEDULER", "INFERENCE", "VERIFIER", "SETTLEMENT", "DATASTORE", "GATEWAY", "ADMIN")
        },
    )
    procs = []
    for name in NODES:
        d = root / name
        d.mkdir()
        shutil.copy(NATS_DIR / "auth.conf", d / "auth.conf")
        (d / "server.conf").write_text(
            local_config(source, ports[name]["client"], ports[name]["http"], ports[name]["cluster"], routes, d / "js")
        )
        log = open(d / "nats.log", "ab")
        procs.append(
            subprocess.Popen(
                [nats_server_binary(), "-c", str(d / "server.conf")],
                env=dict(env, NATS_SERVER_NAME=name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    try:
        for name, proc in zip(NODES, procs):
            wait_for_port(ports[name]["client"], 15, proc)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(15)


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status
    except Exception:
        return 0


async def test_three_nodes_form_a_cluster_and_hold_every_stream_three_times(cluster):
    deadline = time.monotonic() + 30
    while not all(healthz(cluster[n]["http"]) == 200 for n in NODES):  # compose's health check
        assert time.monotonic() < deadline, {n: healthz(cluster[n]["http"]) for n in NODES}
        await asyncio.sleep(0.3)
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['nats-1']['http']}/varz", timeout=2) as r:
        varz = json.loads(r.read())
    assert varz["jetstream"]["config"]["sync_always"] is True  # fsync before every ack
    assert varz["max_payload"] == 8 * 1024 * 1024

    spec = importlib.util.spec_from_file_location("loranet_deploy_init", ROOT / "deploy" / "init.py")
    init = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(init)
    url = f"nats://init:pw-init@127.0.0.1:{cluster['nats-2']['client']}"
    nc = await nats.connect(url)
    js = nc.jetstream()
    settings = init.InitSettings(nats_url=url, js_replicas=3, wait_s=30)
    await init.ensure_streams_and_consumers(js, settings, init.EventLog("init", "test", "WARNING"))
    for stream in p.STREAMS:
        info = await js.stream_info(stream.name)
        assert info.config.num_replicas == 3
        assert len(info.cluster.replicas or []) == 2, (stream.name, info.cluster)
    kv = await js.stream_info(f"KV_{p.NODES_BUCKET}")
    assert kv.config.num_replicas == 3
    await nc.drain()
    # A job acknowledged through one node (as an operator: init and the gateway may not submit jobs; clients
    # need the auth service) is there through another.
    client = await nats.connect(f"nats://admin:x@127.0.0.1:{cluster['nats-1']['client']}")
    ack = await client.jetstream().publish(p.JOBS_SUBMIT.pattern, b"x")
    await client.drain()
    other = await nats.connect(f"nats://init:pw-init@127.0.0.1:{cluster['nats-3']['client']}")
    assert (await other.jetstream().stream_info("JOBS")).state.last_seq == ack.seq
    await other.drain()
