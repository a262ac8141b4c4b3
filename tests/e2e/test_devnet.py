"""One job end to end through all five services, as separate processes on the embedded devnet.

Real nats-server, real redis-server, the in-process EVM inside settlement, the
seeded model on every node and verifier; the CLI is exercised as users run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from loranet import codec, natsauth
from loranet import protocol as p
from loranet.client import Client
from loranet.errors import RemoteError
from loranet.signing import Identity, sign
from loranet_ops import devnet as dn


async def test_jobs_settle_end_to_end(devnet):
    config, _ = devnet
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        funded = await client.faucet(10**20, 10**19)
        assert funded.escrow == 10**19
        jobs = [
            await client.submit("demo-0", "Hello loranet", 12),
            await client.submit("demo-1", "Another adapter", 40),
            await client.submit("", "Base model only", 8),
        ]
        outcomes = [await client.wait(job_id, 300) for job_id in jobs]
        for out in outcomes:
            assert out.status == "settled", out
            assert out.verdict["accepted"] and out.verdict["audited"]
            assert out.output
            assert out.fee > 0 and sum(out.payouts.values()) == out.fee
            assert out.stages == ["admitted", "dispatched", "result", "verdict", "settled"]
            assert out.tx_hash.startswith("0x")
        with_adapter = outcomes[0].payouts
        assert with_adapter["node"] == outcomes[0].fee // 2
        assert len([k for k in with_adapter if k.startswith("contributor:")]) == 3
        node_address = (await client.job(jobs[0])).result.node_address
        assert (await client.balance(node_address)).credit >= sum(o.payouts["node"] for o in outcomes)
        # Escrow paid exactly the fees.
        assert (await client.balance()).escrow == 10**19 - sum(o.fee for o in outcomes)


async def test_refusals_are_reported_and_forgeries_dead_lettered(devnet):
    config, _ = devnet
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        with pytest.raises(RemoteError) as err:
            await client.submit("no-such-adapter", "x", 4)
        assert err.value.code == "not_found"
        model_id = (await client.model()).model_id
        # Signed, but for an adapter nobody registered: rejected with the reason.
        unknown = client.build(model_id=model_id, adapter_id="ab" * 32, prompt="x", max_tokens=4)
        await client.publish(unknown)
        out = await client.wait(unknown.job_id, 60)
        assert out.status == "rejected" and "unknown adapter" in out.reason
        # No escrow: rejected.
        broke = client.build(model_id=model_id, adapter_id="", prompt="x", max_tokens=4)
        await client.publish(broke)
        out = await client.wait(broke.job_id, 60)
        assert out.status == "rejected" and "escrow" in out.reason
        # Forged: signed by someone else's key → dead letter, no event for the job id.
        other = Identity.generate()
        forged = sign(client.build(model_id=model_id, adapter_id="", prompt="x", max_tokens=4), other)
        await client.publish(forged)
        await client.nc.publish(p.JOBS_SUBMIT.pattern, b"\x00garbage")
        admin = await nats.connect(config.url_for("admin"))
        js = admin.jetstream()
        sub = await js.pull_subscribe(p.dead_letter(p.JOBS_SUBMIT.pattern), stream="DEADLETTER")
        letters = []
        deadline = time.monotonic() + 30
        while len(letters) < 2 and time.monotonic() < deadline:
            try:
                letters += [codec.decode(p.DeadLetter, m.data) for m in await sub.fetch(10, timeout=1)]
            except Exception:
                pass
        await admin.close()
        reasons = [d.reason for d in letters]
        assert any("forged or unsigned job" in r for r in reasons), reasons
        assert any(r.startswith("not_msgpack") or r.startswith("invalid") for r in reasons), reasons
        with pytest.raises(RemoteError):
            await client.job(forged.job_id)
        # The network still serves honest work afterwards.
        await client.faucet(10**19, 10**18)
        job_id = await client.submit("demo-1", "still alive?", 6)
        assert (await client.wait(job_id, 120)).status == "settled"


def test_cli_submit_wait_json(devnet):
    config, _ = devnet
    env = {k: v for k, v in os.environ.items() if k != "LORANET_NATS_URL"}  # the CLI finds the devnet's client URL
    cmd = [
        sys.executable,
        "-m",
        "loranet_ops.cli",
        "--state-dir",
        config.state_dir,
        "submit",
        "--adapter",
        "demo-0",
        "--prompt",
        "from the CLI",
        "--max-tokens",
        "8",
        "--wait",
        "--json",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "settled" and out["output"]
    assert sum(int(v) for v in out["payouts"].values()) == int(out["fee"])
    record = subprocess.run(
        [sys.executable, "-m", "loranet_ops.cli", "--state-dir", config.state_dir, "job", out["job_id"], "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(record.stdout)["status"] == "settled"
    status = subprocess.run(
        [sys.executable, "-m", "loranet_ops.cli", "--state-dir", config.state_dir, "devnet", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    services = json.loads(status.stdout)["services"]
    assert {s["state"] for s in services.values()} == {"running"}, services


async def test_roles_are_least_privileged(devnet):
    config, state = devnet
    assert state["nats_auth"] is True
    with pytest.raises(Exception):  # no credentials, no connection
        await nats.connect(config.nats_url, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=3)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    for role, subject in (
        ("inference", p.verdicts("0" * 32)),
        ("client", p.results("node-0")),
        ("client", p.receipts("0" * 32)),
        ("inference", p.receipts("0" * 32)),
    ):
        key = natsauth.connect_options(Identity.generate()) if role == "client" else {}  # a client: its own key
        nc = await nats.connect(config.url_for(role), error_cb=on_error, max_reconnect_attempts=0, **key)
        errors.clear()
        await nc.publish(subject, b"x")
        await nc.subscribe(subject)
        await nc.flush()
        await asyncio.sleep(0.3)
        await nc.close()
        text = " ".join(str(e) for e in errors).lower()
        assert "permissions violation" in text and "publish" in text and "subscription" in text, (role, subject, errors)


async def test_a_client_reads_its_own_jobs_only(devnet):
    """Each client is its own NATS identity (the devnet's auth service): bob settles a job and reads it;
    alice, who learns its id (job ids are on chain), can neither follow its events nor get its record."""
    config, _ = devnet
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc).lower())

    async with (
        await Client.connect(config.url_for("client"), Identity.generate()) as bob,
        await Client.connect(config.url_for("client"), Identity.generate(), error_cb=on_error) as alice,
    ):
        await bob.faucet(10**19, 10**18)
        job_id = await bob.submit("demo-0", "bob's private prompt", 6)
        assert (await bob.wait(job_id, 300)).status == "settled"
        assert (await bob.job(job_id)).result.output_text
        with pytest.raises(RemoteError) as err:  # the real datastore: not alice's job
            await alice._request(
                p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), to=p.datastore_job_get(alice.identity.public)
            )
        assert err.value.code == "not_found"
        with pytest.raises(nats.errors.TimeoutError):  # bob's subject: refused by the server, so no answer
            await alice._request(
                p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), timeout=2, to=p.datastore_job_get(bob.identity.public)
            )
        with pytest.raises(Exception):  # a consumer on bob's events: refused by the server
            await asyncio.wait_for(
                alice.js.add_consumer(
                    "EVENTS",
                    name="spy",
                    filter_subject=p.job_events(bob.identity.public, job_id),
                    deliver_subject=natsauth.inbox_prefix(alice.client_id) + ".spy",
                ),
                3,
            )
        await alice.nc.flush()
        assert any(f'publish to "{p.datastore_job_get(bob.identity.public)}"' in e for e in refused), refused
        assert any("publish to" in e and "$js.api.consumer.create.events.spy" in e for e in refused), refused


def test_no_secret_in_any_log(devnet):
    """Passwords and key seeds never reach a log line (keys live in 0600 files)."""
    config, _ = devnet
    state_dir = Path(config.state_dir)
    secrets = list(json.loads((state_dir / dn.PASSWORDS_FILE).read_text()).values())
    assert oct((state_dir / dn.PASSWORDS_FILE).stat().st_mode & 0o777) == "0o600"
    for key_file in (state_dir / "state").glob("*.key"):
        assert key_file.stat().st_mode & 0o077 == 0, key_file
        secrets.append(key_file.read_text().strip())
    for seed_file in (dn.AUTH_ISSUER_SEED_FILE, dn.AUTH_NKEY_SEED_FILE):  # the auth callout's seeds
        assert (state_dir / seed_file).stat().st_mode & 0o077 == 0, seed_file
        secrets.append((state_dir / seed_file).read_text().strip())
    assert len(secrets) >= len(dn.ROLES) + 4  # every role's password, the auth seeds, a node's and a verifier's seed
    logs = list((state_dir / "logs").glob("*.log")) + [state_dir / "supervisor.log"]
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret appears in {log.name}"


def test_cli_nodes_and_adapter_register(devnet, tmp_path):
    from loranet.model.adapters import build_demo_adapter
    from loranet.model.checkpoint import load_base_model
    from loranet.signing import devnet_address

    config, _ = devnet
    env = {k: v for k, v in os.environ.items() if k != "LORANET_NATS_URL"}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "loranet_ops.cli", "--state-dir", config.state_dir, *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    nodes = json.loads(cli("nodes", "--json").stdout)
    assert [n["node_id"] for n in nodes] == ["node-0"] and nodes[0]["heartbeat_age_s"] < 30
    # the node map (issue 18): what node-0 staked and declared in the Registry, and its heartbeat agrees
    declared = nodes[0]["declared"]
    assert declared and declared["region"] == nodes[0]["region"] == "eu-west" and declared["device"] == "cpu"
    assert declared["memory_mb"] > 0 and int(declared["stake"]) > 0
    assert declared["dtype"] == nodes[0]["dtype"] == "float32"  # the precision it serves, declared and heartbeat
    base = load_base_model(Path(config.cache_dir) / "models" / "loranet-tiny-llama")
    build_demo_adapter(base, tmp_path / "mine", seed=42, index=9)
    manifest = {
        "name": "my-adapter",
        "base_model": "loranet-tiny-llama",
        "owner_address": devnet_address("me"),
        "contributors": [
            {"contributor_id": "corpus-a", "address": devnet_address("a"), "weight_bps": 7000},
            {"contributor_id": "corpus-b", "address": devnet_address("b"), "weight_bps": 3000},
        ],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    done = cli("adapter", "register", str(tmp_path / "mine"), "--manifest", str(tmp_path / "manifest.json"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "my-adapter"
    assert "my-adapter" in [a["name"] for a in json.loads(cli("adapters", "--json").stdout)]
    manifest["contributors"][0]["weight_bps"] = 6000  # no longer 10000 in all
    manifest["name"] = "bad-weights"
    (tmp_path / "bad.json").write_text(json.dumps(manifest))
    bad = cli("adapter", "register", str(tmp_path / "mine"), "--manifest", str(tmp_path / "bad.json"))
    assert bad.returncode != 0 and "10000" in bad.stderr
    out = json.loads(
        cli(
            "submit", "--adapter", "my-adapter", "--prompt", "my own adapter", "--max-tokens", "6", "--wait", "--json"
        ).stdout
    )
    assert out["status"] == "settled"
    assert {k.split(":")[0] for k in out["payouts"]} == {"node", "developer", "contributor", "verifier", "treasury"}


def test_the_gateway_is_a_devnet_service_with_its_own_key(devnet):
    """`devnet up` runs the OpenAI-compatible gateway as one of its services; its API key is in a 0600 file;
    the official `openai` client works with the URL and key from `devnet status --json` and nothing else."""
    import stat

    import openai

    config, _ = devnet
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "loranet_ops.cli", "--state-dir", config.state_dir, "devnet", "status", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    gateway = status["gateway"]
    assert status["services"]["gateway"]["state"] == "running"
    key_file = Path(gateway["api_key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    api = openai.OpenAI(base_url=gateway["url"], api_key=key_file.read_text().strip(), max_retries=0, timeout=120)
    models = [m.id for m in api.models.list().data]
    assert models and all(isinstance(m, str) for m in models)
    answer = api.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "hello"}], max_tokens=4, temperature=0
    )
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway["url"], api_key="sk-not-the-devnet-key", max_retries=0).models.list()
