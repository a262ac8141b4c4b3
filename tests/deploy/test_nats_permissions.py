"""deploy/nats/auth.conf against a real nats-server: each role can do what its code does, and no more.

The subjects come from loranet.protocol and loranet.topology, and the
operations are the library's own: Runtime.start (ensure_topology), Runtime.mount
(durable pull consumers, micro endpoints), the dead-letter path, JetStream
publishes, request-reply, the `nodes` KV bucket, and Client.publish/wait.  A
refused operation shows up as a "Permissions Violation" from the server, which
nats-py hands to the connection's error callback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from loranet import codec, protocol as p, topology
from loranet.client import Client
from loranet.runtime import ServiceError, Endpoint, Pull, Runtime
from loranet.servers import free_port, nats_server_binary, wait_for_port
from loranet.settings import CommonSettings
from loranet.signing import Identity
from services.scheduler.handlers import REDISPATCH_DURABLE, Scheduler
from services.scheduler.settings import SchedulerSettings
from services.verifier.domain import NodeRecord
from services.verifier.handlers import Verifier
from services.verifier.settings import VerifierSettings

ROOT = Path(__file__).resolve().parents[2]
AUTH = ROOT / "deploy" / "nats" / "auth.conf"
ROLES = ("init", "scheduler", "inference", "verifier", "settlement", "datastore", "gateway", "client", "admin")
NODE, OTHER_NODE = "node-a", "node-b"
JOB = "ab" * 16
PERMISSION = "permissions violation"  # nats-py lower-cases the server's -ERR text


def _load_init():
    spec = importlib.util.spec_from_file_location("loranet_deploy_init", ROOT / "deploy" / "init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nats_auth(tmp_path_factory):
    """nats-server with JetStream and deploy/nats/auth.conf; yields role -> URL."""
    root = tmp_path_factory.mktemp("nats-auth")
    shutil.copy(AUTH, root / "auth.conf")
    port = free_port()
    (root / "server.conf").write_text(
        f"listen: 127.0.0.1:{port}\nmax_payload: 8MB\n"
        f"jetstream {{\n  store_dir: \"{root / 'js'}\"\n}}\ninclude auth.conf\n")
    env = dict(os.environ, **{f"LORANET_NATS_PASSWORD_{r.upper()}": f"pw-{r}" for r in ROLES})
    log = open(root / "nats.log", "ab")
    proc = subprocess.Popen([nats_server_binary(), "-c", str(root / "server.conf")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    wait_for_port(port, 15, proc)
    yield {r: f"nats://{r}:pw-{r}@127.0.0.1:{port}" for r in ROLES}
    proc.terminate()
    proc.wait(10)


@dataclass
class Conn:
    nc: nats.aio.client.Client
    errors: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        return [e.lower() for e in self.errors if PERMISSION in e.lower()]


async def connect(url: str) -> Conn:
    conn = Conn(None)  # type: ignore[arg-type]

    async def on_error(exc: Exception) -> None:
        conn.errors.append(str(exc))

    conn.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, connect_timeout=5)
    return conn


async def settle(*conns: Conn, wait: float = 0.3) -> None:
    for conn in conns:
        await conn.nc.flush()
    await asyncio.sleep(wait)


async def wait_for(predicate, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Services:
    """The five services' runtimes, each connected as its own user, with the real route shapes."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.runtimes: dict[str, Runtime] = {}
        self.received: dict[str, list] = {}
        self.errors: dict[str, list[str]] = {}

    async def start(self) -> None:
        async def record(message, delivery=None):
            self.received.setdefault(type(message).__name__, []).append(message)

        async def reply(message):
            if isinstance(message, p.JobGet):
                return p.JobRecord(job_id=message.job_id, status="rejected", reason="from the test's datastore")
            if isinstance(message, p.BalanceGet):
                return p.Balance(address=message.address, token=0, escrow=0, credit=0)
            if isinstance(message, p.Reserve):
                raise ServiceError("conflict", "no escrow to reserve from", "max_fee")
            return p.Ok()

        # The scheduler and the verifier run their real handlers and background loops
        # (they need no model); the others run their real route shapes over stub handlers.
        sched_settings = SchedulerSettings(nats_url=self.urls["scheduler"], instance="scheduler-test",
                                           log_level="WARNING", node_ttl_s=1.0)
        rt = await self._runtime("scheduler", sched_settings)
        self.scheduler = Scheduler(rt, sched_settings)
        await self.scheduler.start()
        await rt.mount(self.scheduler.routes())

        ver_settings = VerifierSettings(nats_url=self.urls["verifier"], instance="verifier-test", log_level="WARNING",
                                        verifier_id="verifier-test", stats_interval_s=0.1)
        rt = await self._runtime("verifier", ver_settings)
        self.verifier = Verifier(rt, ver_settings, None, Identity.generate())
        self.verifier.records[NODE] = NodeRecord(NODE, results=1)
        rt.spawn(self.verifier.stats_loop(), name="stats")
        await rt.mount(self.verifier.routes())

        stubs = {
            "inference": [Pull("work", topology.node_consumer(NODE), p.WorkBatch, record)],
            "settlement": [Pull("verdicts", topology.SETTLEMENT, p.Verdict, record),
                           Endpoint("balance", p.SETTLEMENT_BALANCE, p.BalanceGet, reply),
                           Endpoint("faucet", p.SETTLEMENT_FAUCET, p.Faucet, reply),
                           Endpoint("reserve", p.SETTLEMENT_RESERVE, p.Reserve, reply),
                           Endpoint("release", p.SETTLEMENT_RELEASE, p.Release, reply)],
            "datastore": [Pull("job-events", topology.DATASTORE, p.JobEvent, record)]
                         + [Endpoint(s.replace(".", "-"), s, p.SCHEMAS[s], reply)
                            for s in p.SCHEMAS if s.startswith("datastore.")],
        }
        for role, routes in stubs.items():
            rt = await self._runtime(role, CommonSettings(nats_url=self.urls[role], instance=f"{role}-test",
                                                          log_level="WARNING"))
            await rt.mount(routes)

    async def _runtime(self, role: str, settings: CommonSettings) -> Runtime:
        rt = Runtime(role, settings)
        errors = self.errors.setdefault(role, [])
        await rt.start()
        rt.nc._error_cb = self._collector(errors)
        self.runtimes[role] = rt
        return rt

    @staticmethod
    def _collector(errors: list[str]):
        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))
        return on_error

    async def close(self) -> None:
        for rt in self.runtimes.values():
            await rt.close()

    def dead_lettered(self, role: str, route: str) -> int:
        stats = self.runtimes[role].stats.get(route)
        return stats.dead_lettered if stats else 0


@pytest.fixture(scope="module")
async def services(nats_auth):
    init = _load_init()
    conn = await connect(nats_auth["init"])
    settings = init.InitSettings(nats_url=nats_auth["init"], wait_s=20)
    await init.ensure_streams_and_consumers(conn.nc.jetstream(), settings, init.EventLog("init", "test", "WARNING"))
    await settle(conn)
    assert not conn.errors, conn.errors
    await conn.nc.close()
    svc = Services(nats_auth)
    await svc.start()
    yield svc
    await svc.close()


async def test_init_creates_the_streams_consumers_and_bucket(nats_auth, services):
    conn = await connect(nats_auth["init"])
    js = conn.nc.jetstream()
    for spec in topology.STREAMS:
        assert (await js.stream_info(spec.name)).config.subjects == list(spec.subjects)
    for spec in (topology.SCHEDULER, topology.VERIFIER, topology.SETTLEMENT, topology.DATASTORE):
        assert (await js.consumer_info(spec.stream, spec.durable)).config.filter_subject == spec.filter_subject
    await js.key_value(p.NODES_BUCKET)
    # init registers the catalogue through the datastore
    reply = await conn.nc.request(p.DATASTORE_MODEL_PUT, b"", timeout=5)  # answered (with a schema error)
    assert reply.headers and "Nats-Service-Error-Code" in reply.headers
    await settle(conn)
    assert not conn.errors, conn.errors
    await conn.nc.close()


async def test_every_role_consumes_its_subject_and_dead_letters_what_it_cannot_read(nats_auth, services):
    # (who publishes, the subject as the code builds it, who consumes it, through which route)
    flows = [
        ("client", p.JOBS_SUBMIT, "scheduler", "jobs"),
        ("scheduler", p.work(NODE), "inference", "work"),
        ("inference", p.results(NODE), "verifier", "results"),
        ("verifier", p.verdicts(JOB), "settlement", "verdicts"),
        ("scheduler", p.job_events(JOB), "datastore", "job-events"),
        ("settlement", p.job_events(JOB), "datastore", "job-events"),
    ]
    publishers = {role: await connect(nats_auth[role]) for role in {f[0] for f in flows}}
    for i, (publisher, subject, consumer, route) in enumerate(flows):
        before = services.dead_lettered(consumer, route)
        ack = await publishers[publisher].nc.jetstream().publish(subject, b"\x00not msgpack", headers={"Nats-Msg-Id": f"t{i}"})
        assert ack.seq > 0, f"{publisher} could not publish {subject}"
        # The consumer fetched it (CONSUMER.MSG.NEXT), put it on dlq.<subject> and terminated it ($JS.ACK).
        await wait_for(lambda: services.dead_lettered(consumer, route) > before, what=f"{consumer} dead-lettering {subject}")
    await settle(*publishers.values())
    for role, conn in publishers.items():
        assert not conn.errors, (role, conn.errors)
        await conn.nc.close()
    assert not any(services.errors.values()), services.errors


async def test_each_role_publishes_and_requests_what_its_code_does(nats_auth, services):
    uses = {
        "scheduler": dict(js=[p.work(NODE), p.job_events(JOB), p.dead_letter(p.JOBS_SUBMIT)],
                          req=[(p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter="demo-0")),
                               (p.SETTLEMENT_BALANCE, p.BalanceGet(address="0x" + "1" * 40))]),
        "inference": dict(js=[p.results(NODE), p.job_events(JOB), p.dead_letter(p.work(NODE))],
                          req=[(p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter="demo-0"))]),
        "verifier": dict(js=[p.verdicts(JOB), p.job_events(JOB), p.dead_letter(p.results(NODE))],
                         req=[(p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter="demo-0"))]),
        "settlement": dict(js=[p.receipts(JOB), p.job_events(JOB), p.dead_letter(p.verdicts(JOB))],
                           req=[(p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter="demo-0"))]),
        "datastore": dict(js=[p.dead_letter(p.job_events(JOB))], req=[]),
        "gateway": dict(js=[p.JOBS_SUBMIT],
                        req=[(p.DATASTORE_MODEL_GET, p.ModelGet(model="m")), (p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter="a")),
                             (p.DATASTORE_ADAPTER_LIST, p.AdapterList()), (p.SETTLEMENT_BALANCE, p.BalanceGet(address="0x" + "1" * 40)),
                             (p.SETTLEMENT_FAUCET, p.Faucet(address="0x" + "1" * 40, amount=1))]),
    }
    uses["client"] = uses["gateway"]
    for role, use in uses.items():
        conn = await connect(nats_auth[role])
        js = conn.nc.jetstream()
        for i, subject in enumerate(use["js"]):
            await js.publish(subject, b"\x00", headers={"Nats-Msg-Id": f"{role}-{i}-{time.time()}"})
        for subject, message in use["req"]:
            answer = await conn.nc.request(subject, codec.encode(message), timeout=5)
            assert not (answer.headers or {}).get("Nats-Service-Error-Code"), (role, subject, answer.headers)
        await settle(conn)
        assert not conn.errors, (role, conn.errors)
        await conn.nc.close()


async def test_node_registry_writes_by_nodes_reads_by_scheduler_and_verifier(nats_auth, services):
    node = await connect(nats_auth["inference"])
    await (await node.nc.jetstream().key_value(p.NODES_BUCKET)).put(NODE, b"heartbeat")
    for role in ("scheduler", "verifier"):
        conn = await connect(nats_auth[role])
        kv = await conn.nc.jetstream().key_value(p.NODES_BUCKET)
        if role == "scheduler":
            assert NODE in await kv.keys()
        assert (await kv.get(NODE)).value == b"heartbeat"
        # Readers cannot forge a heartbeat (kv.put publishes on $KV.nodes.<key>).
        await conn.nc.publish(f"$KV.{p.NODES_BUCKET}.{OTHER_NODE}", b"forged")
        await settle(conn, wait=0.05)
        assert [e for e in conn.errors if PERMISSION not in e.lower()] == [], conn.errors
        assert any(f'"$kv.nodes.{OTHER_NODE}"' in e for e in conn.violations()), conn.errors
        await conn.nc.close()
    await settle(node)
    assert not node.errors, node.errors
    await node.nc.close()


@pytest.mark.parametrize("role", ["client", "gateway"])
async def test_a_client_submits_and_follows_its_own_job(nats_auth, services, role):
    conn = await connect(nats_auth[role])
    client = Client(conn.nc, Identity.generate())
    job = client.build(model_id="cd" * 32, adapter_id="", prompt="hello", max_tokens=2)
    await client.publish(job)
    # The real scheduler admits it, asks settlement for the escrow (none) and rejects it;
    # the client follows jobs.events.<job_id> to that end and reads the record.
    outcome = await client.wait(job.job_id, timeout=15)
    assert outcome.job_id == job.job_id and outcome.status == "rejected"
    await settle(conn)
    assert not conn.errors, conn.errors
    await conn.nc.close()


async def test_scheduler_drains_a_dead_nodes_work_under_its_user(nats_auth, services):
    dead = "node-dead"
    init = await connect(nats_auth["init"])
    js = init.nc.jetstream()
    await js.add_consumer("WORK", topology.consumer_config(topology.node_consumer(dead)))
    await (await connect(nats_auth["scheduler"])).nc.jetstream().publish(p.work(dead), b"\x00not a batch")
    before = services.dead_lettered("scheduler", "redispatch")

    async def names() -> set[str]:
        return {ci.name for ci in await js.consumers_info("WORK")}

    deadline = time.monotonic() + 20
    while f"node-{dead}" in await names() or f"{REDISPATCH_DURABLE}{dead}" in await names() \
            or services.dead_lettered("scheduler", "redispatch") == before:
        assert time.monotonic() < deadline, await names()
        await services.scheduler.failover_once()  # lists WORK durables, deletes, drains, dead-letters
        await asyncio.sleep(0.3)
    await settle(init)
    assert not services.errors["scheduler"], services.errors["scheduler"]
    await init.nc.close()


async def test_settlement_keeps_its_journal_and_reads_receipts(nats_auth, services):
    # What the settlement service's crash-recovery journal does: its own KV bucket
    # `settlement` (created by settlement alone), and the last receipt of a job.
    conn = await connect(nats_auth["settlement"])
    js = conn.nc.jetstream()
    await js.create_key_value(KeyValueConfig(bucket="settlement", history=1, storage=StorageType.FILE))
    kv = await js.key_value("settlement")
    await kv.put("pending", b"epoch")
    assert (await kv.get("pending")).value == b"epoch"
    await kv.delete("pending")
    await js.publish(p.receipts(JOB), b"receipt")
    assert (await js.get_last_msg("RECEIPTS", p.receipts(JOB))).data == b"receipt"
    await settle(conn)
    assert not conn.errors, conn.errors
    await conn.nc.close()
    for role in ("scheduler", "inference"):  # no one else writes it
        other = await connect(nats_auth[role])
        await other.nc.publish("$KV.settlement.pending", b"forged")
        await settle(other, wait=0.05)
        assert any('"$kv.settlement.pending"' in e for e in other.violations()), (role, other.errors)
        await other.nc.close()


async def test_verifier_publishes_its_statistics(nats_auth, services):
    conn = await connect(nats_auth["init"])
    kv = await conn.nc.jetstream().key_value(services.verifier.settings.stats_bucket)
    deadline = time.monotonic() + 10
    while True:
        try:
            entry = await kv.get(f"verifier-test.{NODE}")
            break
        except Exception:
            assert time.monotonic() < deadline, services.errors["verifier"]
            await asyncio.sleep(0.1)
    assert b'"results": 1' in entry.value
    assert not services.errors["verifier"], services.errors["verifier"]
    await conn.nc.close()


# What each role must NOT do: (role, "pub" | "sub", subject).
FORBIDDEN = [
    ("inference", "pub", p.verdicts(JOB)),          # a node cannot publish verdicts
    ("inference", "pub", p.receipts(JOB)),
    ("inference", "pub", p.JOBS_SUBMIT),
    ("inference", "pub", p.work(OTHER_NODE)),
    ("inference", "pub", p.SETTLEMENT_FAUCET),
    ("verifier", "pub", p.results(NODE)),           # a verifier cannot forge results
    ("verifier", "pub", p.receipts(JOB)),
    ("scheduler", "pub", p.results(NODE)),
    ("scheduler", "pub", p.verdicts(JOB)),
    ("settlement", "pub", p.verdicts(JOB)),
    ("datastore", "pub", p.job_events(JOB)),
    ("datastore", "pub", p.JOBS_SUBMIT),
    ("client", "sub", p.results(NODE)),             # a client cannot read results ...
    ("client", "sub", p.RESULTS_ALL),
    ("client", "sub", p.VERDICTS_ALL),
    ("client", "sub", p.RECEIPTS_ALL),
    ("client", "sub", p.JOB_EVENTS_ALL),            # ... nor every job's events
    ("client", "sub", p.WORK_ALL),
    ("client", "pub", p.results(NODE)),
    ("client", "pub", p.verdicts(JOB)),
    ("client", "pub", p.job_events(JOB)),
    ("client", "pub", p.DATASTORE_JOB_LIST),        # nor list another address's jobs
    ("client", "pub", f"$JS.API.CONSUMER.CREATE.RESULTS.spy.{p.RESULTS_ALL}"),
    ("client", "pub", "$JS.API.CONSUMER.CREATE.VERDICTS"),
    ("client", "pub", "$JS.API.CONSUMER.CREATE.RECEIPTS"),
    ("client", "pub", "$JS.API.STREAM.MSG.GET.RESULTS"),
    ("client", "pub", "$JS.API.DIRECT.GET.EVENTS"),
    ("client", "pub", "$JS.API.STREAM.DELETE.JOBS"),
    ("gateway", "sub", p.RESULTS_ALL),
    ("gateway", "pub", p.verdicts(JOB)),
    ("scheduler", "pub", "$JS.API.STREAM.DELETE.JOBS"),
    ("inference", "pub", "$JS.API.STREAM.PURGE.RESULTS"),
    ("inference", "pub", f"$JS.API.CONSUMER.CREATE.RESULTS.verifier.{p.RESULTS_ALL}"),
    ("inference", "pub", f"$KV.{p.VERIFIERS_BUCKET}.verifier-0"),  # only verifiers announce committee keys
    ("scheduler", "pub", f"$KV.{p.VERIFIERS_BUCKET}.verifier-0"),
    ("client", "pub", f"$KV.{p.VERIFIERS_BUCKET}.verifier-0"),
    ("client", "pub", f"$JS.API.STREAM.MSG.GET.KV_{p.NODES_BUCKET}"),  # the registries are watched, not fetched
]


@pytest.mark.parametrize("role,kind,subject", FORBIDDEN, ids=lambda v: str(v))
async def test_forbidden_subjects_are_refused(nats_auth, role, kind, subject):
    conn = await connect(nats_auth[role])
    if kind == "pub":
        await conn.nc.publish(subject, b"x")
    else:
        await conn.nc.subscribe(subject)
    await settle(conn, wait=0.05)  # the server's -ERR precedes the PONG that ends flush()
    word = "publish to" if kind == "pub" else "subscription to"
    assert any(word in e and f'"{subject.lower()}"' in e for e in conn.violations()), (role, kind, subject, conn.errors)
    await conn.nc.close()


async def test_confidential_jobs_registries_verifiers_announce_clients_read(nats_auth, services):
    # A verifier announces its key in KV `verifiers`; a node heartbeats into KV `nodes`; a client reads
    # both (the committee and the node a confidential prompt is sealed to), and can write neither.
    from loranet.signing import sign

    services.runtimes["verifier"].spawn(services.verifier.announce_loop(), name="announce")
    node_id = Identity.generate()
    hb = sign(p.NodeHeartbeat(node_id="node-sealed", node_key=node_id.public, payout_address="0x" + "3" * 40,
                              model_ids=["cd" * 32], device="cpu", memory_free=0, adapters_hot=[], slots_total=1,
                              slots_free=1, queue_depth=0, tokens_per_s=0.0, at=time.time()),
              node_id, p.DOMAIN_HEARTBEAT)
    node = await connect(nats_auth["inference"])
    await (await node.nc.jetstream().key_value(p.NODES_BUCKET)).put("node-sealed", codec.encode(hb))
    conn = await connect(nats_auth["client"])
    client = Client(conn.nc, Identity.generate())
    deadline = time.monotonic() + 10
    while not await client.verifiers():
        assert time.monotonic() < deadline, services.errors["verifier"]
        await asyncio.sleep(0.2)
    assert [v.verifier_key for v in await client.verifiers()] == [services.verifier.identity.public]
    assert [n.node_id for n in await client.nodes("cd" * 32)] == ["node-sealed"]  # unsigned entries skipped
    for subject in (f"$KV.{p.VERIFIERS_BUCKET}.verifier-test", f"$KV.{p.NODES_BUCKET}.node-sealed"):
        await conn.nc.publish(subject, b"forged")
    await settle(conn, wait=0.05)
    assert len(conn.violations()) == 2 and len(conn.errors) == 2, conn.errors
    await settle(node)
    assert not node.errors and not services.errors["verifier"], (node.errors, services.errors["verifier"])
    for c in (conn, node):
        await c.nc.close()
