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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from loranet import codec, natsauth, topology
from loranet import protocol as p
from loranet.client import Client
from loranet.errors import ServiceError
from loranet.runtime import Endpoint, Pull, Runtime
from loranet.settings import CommonSettings
from loranet.signing import Identity
from loranet_ops.servers import free_port, nats_server_binary, wait_for_port
from services.gateway.main import GATEWAY_INBOX_PREFIX
from services.scheduler.failover import REDISPATCH_DURABLE
from services.scheduler.handlers import SchedulerService
from services.scheduler.settings import SchedulerSettings
from services.verifier.domain import NodeRecord
from services.verifier.handlers import VerifierService
from services.verifier.settings import VerifierSettings
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
AUTH = ROOT / "deploy" / "nats" / "auth.conf"
ROLES = ("init", "scheduler", "inference", "verifier", "settlement", "datastore", "gateway", "admin")
NODE, OTHER_NODE = "node-a", "node-b"
JOB = "ab" * 16
CLIENT = "cd" * 32  # a client id (the hex of an Ed25519 key) for subjects services publish on
OTHER = "ef" * 32  # some other client's id
PERMISSION = "permissions violation"  # nats-py lower-cases the server's -ERR text


def _load_init():
    spec = importlib.util.spec_from_file_location("loranet_deploy_init", ROOT / "deploy" / "init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nats_auth(tmp_path_factory):
    """nats-server with JetStream and deploy/nats/auth.conf, and the real auth service (services/auth) answering
    its callout; yields role -> URL (`client`: the URL without credentials, a client brings its key)."""
    from loranet.signing import write_secret_file

    root = tmp_path_factory.mktemp("nats-auth")
    shutil.copy(AUTH, root / "auth.conf")
    port = free_port()
    (root / "server.conf").write_text(
        f"listen: 127.0.0.1:{port}\nmax_payload: 8MB\n"
        f'jetstream {{\n  store_dir: "{root / "js"}"\n}}\ninclude auth.conf\n'
    )
    issuer_public, issuer_seed = natsauth.new_issuer()
    service = Identity.generate()
    write_secret_file(root / "issuer.seed", issuer_seed)
    write_secret_file(root / "nkey.seed", natsauth.seed_of(service))
    env = dict(
        os.environ,
        LORANET_NATS_AUTH_ISSUER=issuer_public,
        LORANET_NATS_AUTH_NKEY=natsauth.public_of(service),
        **{f"LORANET_NATS_PASSWORD_{r.upper()}": f"pw-{r}" for r in ROLES},
    )
    log = open(root / "nats.log", "ab")
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(root / "server.conf")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    wait_for_port(port, 15, proc)
    auth_env = dict(
        os.environ,
        LORANET_NATS_URL=f"nats://127.0.0.1:{port}",
        LORANET_INSTANCE="auth-test",
        LORANET_AUTH_ISSUER_SEED_FILE=str(root / "issuer.seed"),
        LORANET_AUTH_NKEY_SEED_FILE=str(root / "nkey.seed"),
    )
    auth_log = open(root / "auth.log", "ab")
    auth = subprocess.Popen(
        [sys.executable, "-m", "services.auth"],
        env=auth_env,
        cwd=ROOT,
        stdout=auth_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    auth_log.close()
    deadline = time.monotonic() + 60
    while '"event":"service.started"' not in (root / "auth.log").read_text():
        assert auth.poll() is None and time.monotonic() < deadline, (root / "auth.log").read_text()
        time.sleep(0.1)
    urls = {r: f"nats://{r}:pw-{r}@127.0.0.1:{port}" for r in ROLES}
    urls["client"] = f"nats://127.0.0.1:{port}"
    yield urls
    for p_ in (auth, proc):
        p_.terminate()
        p_.wait(10)


@dataclass
class Conn:
    nc: nats.aio.client.Client
    errors: list[str] = field(default_factory=list)
    identity: Identity | None = None  # a client's key (a URL without credentials)

    def violations(self) -> list[str]:
        return [e.lower() for e in self.errors if PERMISSION in e.lower()]


async def connect(url: str, identity: Identity | None = None) -> Conn:
    """A connection as the URL's user, or (a URL without credentials) as a client with `identity`'s key
    (a fresh one by default), authorized by the auth service."""
    conn = Conn(None)  # type: ignore[arg-type]

    async def on_error(exc: Exception) -> None:
        conn.errors.append(str(exc))

    options = {}
    if "@" not in url:
        conn.identity = identity or Identity.generate()
        options = natsauth.connect_options(conn.identity)
    elif url.startswith("nats://gateway:"):
        options = {"inbox_prefix": GATEWAY_INBOX_PREFIX}
    conn.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, connect_timeout=5, **options)
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
            # A stub answer of each declared reply type (the runtime refuses any other).
            address = getattr(message, "address", "0x" + "1" * 40)
            if isinstance(message, p.JobGet):
                return p.JobRecord(job_id=message.job_id, status="rejected", reason="from the test's datastore")
            if isinstance(message, (p.BalanceGet, p.Faucet)):
                return p.Balance(address=address, token=0, escrow=0, credit=0)
            if isinstance(message, p.StakeGet):
                return p.Stake(address=address, stake=0)
            if isinstance(message, p.Reserve):
                raise ServiceError("conflict", "no escrow to reserve from", "max_fee")
            if isinstance(message, p.Release):
                return p.Receipt(
                    job_id=message.job_id,
                    status="refunded",
                    fee=0,
                    payouts=[],
                    epoch=0,
                    tx_hash="",
                    block=0,
                    settled_at=0.0,
                )
            if isinstance(message, (p.ModelGet, p.ModelPut)):
                return factories.model_manifest()
            if isinstance(message, p.AdapterList):
                return p.AdapterListReply(adapters=[])
            if isinstance(message, p.JobList):
                return p.JobListReply(jobs=[])
            if isinstance(message, p.EpochList):
                return p.EpochListReply(epochs=[])
            if isinstance(message, p.ClaimBalance):
                return p.Claimed(address=message.address, amount=0)
            if isinstance(message, (p.DatanetCreate, p.DatanetGet, p.Contribution)):
                return p.DatanetVersion(name="sea", version=0)
            if isinstance(message, p.DatanetRecord):
                return p.DatanetAnchor(
                    name=message.name,
                    version=message.version,
                    merkle_root="0x" + "1" * 64,
                    tx_hash="0x" + "2" * 64,
                    block=1,
                )
            if isinstance(message, p.AttributionGet):
                return p.AttributionIndexBlob(index_id=message.index_id, data=b"")
            return factories.manifest()

        async def blob(message):
            return p.AdapterBlob(adapter_id=factories.ADAPTER, config=b"{}", weights=b"")

        # The scheduler and the verifier run their real handlers and background loops
        # (they need no model); the others run their real route shapes over stub handlers.
        sched_settings = SchedulerSettings(
            nats_url=self.urls["scheduler"], instance="scheduler-test", log_level="WARNING", node_ttl_s=1.0
        )
        rt = await self._runtime("scheduler", sched_settings)
        self.scheduler = SchedulerService(rt, sched_settings, Identity.generate())
        await self.scheduler.start()
        await rt.mount(self.scheduler.routes())

        ver_settings = VerifierSettings(
            nats_url=self.urls["verifier"],
            instance="verifier-test",
            log_level="WARNING",
            verifier_id="verifier-test",
            stats_interval_s=0.1,
        )
        rt = await self._runtime("verifier", ver_settings)
        self.verifier = VerifierService(rt, ver_settings, None, Identity.generate())
        self.verifier.records[NODE] = NodeRecord(NODE, results=1)
        rt.spawn(self.verifier.stats_loop(), name="stats")
        await rt.mount(self.verifier.routes())

        stubs = {
            "inference": [Pull("work", p.node_work(NODE), record)],
            "settlement": [
                Pull("verdicts", p.SETTLEMENT_VERDICTS, record),
                Pull("flags", p.SETTLEMENT_FLAGS, record),
                Endpoint("balance", p.SETTLEMENT_BALANCE, reply),
                Endpoint("stake", p.SETTLEMENT_STAKE, reply),
                Endpoint("faucet", p.SETTLEMENT_FAUCET, reply),
                Endpoint("epochs", p.SETTLEMENT_EPOCHS, reply),
                Endpoint("claim", p.SETTLEMENT_CLAIM, reply),
                Endpoint("datanet-record", p.SETTLEMENT_DATANET_RECORD, reply),
                Endpoint("reserve", p.SETTLEMENT_RESERVE, reply),
                Endpoint("release", p.SETTLEMENT_RELEASE, reply),
            ],
            "datastore": [Pull("job-events", p.DATASTORE_EVENTS, record)]
            + [
                Endpoint(
                    s.pattern.replace(".", "-").replace("*", "client"),
                    s,
                    blob if s is p.DATASTORE_ADAPTER_BLOB else reply,
                )
                for s in p.SUBJECTS
                if isinstance(s, p.Request) and s.pattern.startswith("datastore.")
            ],
        }
        for role, routes in stubs.items():
            rt = await self._runtime(
                role, CommonSettings(nats_url=self.urls[role], instance=f"{role}-test", log_level="WARNING")
            )
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
    for spec in p.STREAMS:
        assert (await js.stream_info(spec.name)).config.subjects == list(spec.subjects)
    for spec in (p.SCHEDULER_JOBS, p.VERIFIER_RESULTS, p.SETTLEMENT_VERDICTS, p.DATASTORE_EVENTS):
        assert (await js.consumer_info(spec.stream, spec.durable)).config.filter_subject == spec.filter_subject
    await js.key_value(p.NODES_BUCKET)
    # init registers the catalogue through the datastore
    reply = await conn.nc.request(p.DATASTORE_MODEL_PUT.pattern, b"", timeout=5)  # answered (with a schema error)
    assert reply.headers and "Nats-Service-Error-Code" in reply.headers
    # and the demo datanets: created, contributed, their roots recorded on chain
    for subject in (p.DATASTORE_DATANET_CREATE, p.DATASTORE_DATANET_CONTRIBUTE, p.SETTLEMENT_DATANET_RECORD):
        reply = await conn.nc.request(subject.pattern, b"", timeout=5)
        assert reply.headers and "Nats-Service-Error-Code" in reply.headers, subject.pattern
    await settle(conn)
    assert not conn.errors, conn.errors
    await conn.nc.close()


async def test_every_role_consumes_its_subject_and_dead_letters_what_it_cannot_read(nats_auth, services):
    # (who publishes, the subject as the code builds it, who consumes it, through which route)
    flows = [
        ("client", p.JOBS_SUBMIT.pattern, "scheduler", "jobs"),
        ("scheduler", p.work(NODE), "inference", "work"),
        ("inference", p.results(NODE), "verifier", "results"),
        ("verifier", p.verdicts(JOB), "settlement", "verdicts"),
        ("settlement", p.audit_request("verifier-test"), "verifier", "audits"),  # a drawn committee member's audit
        ("verifier", p.flags(NODE), "settlement", "flags"),  # a node's statistics flagged
        ("scheduler", p.job_events(CLIENT, JOB), "datastore", "job-events"),
        ("settlement", p.job_events(CLIENT, JOB), "datastore", "job-events"),
    ]
    publishers = {role: await connect(nats_auth[role]) for role in {f[0] for f in flows}}
    for i, (publisher, subject, consumer, route) in enumerate(flows):
        before = services.dead_lettered(consumer, route)
        ack = (
            await publishers[publisher]
            .nc.jetstream()
            .publish(subject, b"\x00not msgpack", headers={"Nats-Msg-Id": f"t{i}"})
        )
        assert ack.seq > 0, f"{publisher} could not publish {subject}"
        # The consumer fetched it (CONSUMER.MSG.NEXT), put it on dlq.<subject> and terminated it ($JS.ACK).
        await wait_for(
            lambda: services.dead_lettered(consumer, route) > before, what=f"{consumer} dead-lettering {subject}"
        )
    await settle(*publishers.values())
    for role, conn in publishers.items():
        assert not conn.errors, (role, conn.errors)
        await conn.nc.close()
    assert not any(services.errors.values()), services.errors


async def test_each_role_publishes_and_requests_what_its_code_does(nats_auth, services):
    uses = {
        "scheduler": dict(
            js=[p.work(NODE), p.job_events(CLIENT, JOB), p.dead_letter(p.JOBS_SUBMIT.pattern)],
            req=[
                (p.DATASTORE_ADAPTER_GET.pattern, p.AdapterGet(adapter="demo-0")),
                (p.SETTLEMENT_BALANCE.pattern, p.BalanceGet(address="0x" + "1" * 40)),
                (p.SETTLEMENT_STAKE.pattern, p.StakeGet(ed25519_key="ab" * 32)),  # a node's declaration
            ],
        ),
        "inference": dict(
            js=[p.results(NODE), p.job_events(CLIENT, JOB), p.dead_letter(p.work(NODE))],
            req=[(p.DATASTORE_ADAPTER_BLOB.pattern, p.AdapterGet(adapter="demo-0"))],
        ),
        "verifier": dict(
            js=[
                p.verdicts(JOB),
                p.job_events(CLIENT, JOB),
                p.dead_letter(p.results(NODE)),
                p.dead_letter(p.audit_request("verifier-test")),
                p.flags(NODE),
            ],
            req=[
                (p.DATASTORE_ADAPTER_BLOB.pattern, p.AdapterGet(adapter="demo-0")),
                (p.DATASTORE_ADAPTER_GET.pattern, p.AdapterGet(adapter="demo-0")),  # attribution: the index id
                (p.DATASTORE_ATTRIBUTION_GET.pattern, p.AttributionGet(index_id="e" * 64)),
            ],
        ),
        "settlement": dict(
            js=[
                p.receipts(JOB),
                p.job_events(CLIENT, JOB),
                p.dead_letter(p.verdicts(JOB)),
                p.audit_request("verifier-test"),
            ],
            req=[
                (p.DATASTORE_ADAPTER_GET.pattern, p.AdapterGet(adapter="demo-0")),
                (p.DATASTORE_DATANET_GET.pattern, p.DatanetGet(name="sea", version=1)),  # to record its root
            ],
        ),
        "datastore": dict(js=[p.dead_letter(p.job_events(CLIENT, JOB))], req=[]),
        "gateway": dict(
            js=[p.JOBS_SUBMIT.pattern],
            req=[
                (p.DATASTORE_MODEL_GET.pattern, p.ModelGet(model="m")),
                (p.DATASTORE_ADAPTER_GET.pattern, p.AdapterGet(adapter="a")),
                (p.DATASTORE_ADAPTER_LIST.pattern, p.AdapterList()),
                (p.SETTLEMENT_BALANCE.pattern, p.BalanceGet(address="0x" + "1" * 40)),
                (p.SETTLEMENT_FAUCET.pattern, p.Faucet(address="0x" + "1" * 40, amount=1)),
                (p.SETTLEMENT_EPOCHS.pattern, p.EpochList(limit=3)),
                (p.SETTLEMENT_CLAIM.pattern, p.ClaimBalance(address="0x" + "1" * 40)),
            ],
        ),
    }
    uses["client"] = {
        **uses["gateway"],
        "req": [
            *uses["gateway"]["req"],
            (p.DATASTORE_DATANET_CREATE.pattern, p.DatanetCreate(name="sea")),
            (p.DATASTORE_DATANET_GET.pattern, p.DatanetGet(name="sea")),
            (p.SETTLEMENT_DATANET_RECORD.pattern, p.DatanetRecord(name="sea", version=1)),
        ],
    }
    # Nodes stream tokens. (The gateway submits, follows and lists each API key's jobs on that key's own
    # connection, a client's: test_a_client_submits_and_follows_its_own_job.)
    uses["gateway"] = {**uses["gateway"], "js": []}
    uses["inference"] = {**uses["inference"], "core": [p.job_tokens(CLIENT, JOB)]}
    for role, use in uses.items():
        conn = await connect(nats_auth[role])
        js = conn.nc.jetstream()
        for i, subject in enumerate(use["js"]):
            await js.publish(subject, b"\x00", headers={"Nats-Msg-Id": f"{role}-{i}-{time.time()}"})
        for subject in use.get("core", []):
            await conn.nc.publish(subject, b"\x00")
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


async def test_a_client_submits_and_follows_its_own_job(nats_auth, services):
    """As an SDK client does, and as the gateway does for each API key (on that key's own connection)."""
    conn = await connect(nats_auth["client"])
    client = Client(conn.nc, conn.identity or Identity.generate())
    job = client.build(model_id="cd" * 32, adapter_id="", prompt="hello", max_tokens=2)
    await client.publish(job)
    # The real scheduler admits it, asks settlement for the escrow (none) and rejects it;
    # the client follows jobs.events.<client_id>.<job_id> to that end and reads the record.
    outcome = await client.wait(job.job_id, timeout=15)
    assert outcome.job_id == job.job_id and outcome.status == "rejected"
    await settle(conn)
    assert not conn.errors, conn.errors
    await conn.nc.close()


async def test_scheduler_drains_a_dead_nodes_work_under_its_user(nats_auth, services):
    dead = "node-dead"
    init = await connect(nats_auth["init"])
    js = init.nc.jetstream()
    await js.add_consumer("WORK", topology.consumer_config(p.node_work(dead)))
    await (await connect(nats_auth["scheduler"])).nc.jetstream().publish(p.work(dead), b"\x00not a batch")
    before = services.dead_lettered("scheduler", "redispatch")

    async def names() -> set[str]:
        return {ci.name for ci in await js.consumers_info("WORK")}

    deadline = time.monotonic() + 20
    while (
        f"node-{dead}" in await names()
        or f"{REDISPATCH_DURABLE}{dead}" in await names()
        or services.dead_lettered("scheduler", "redispatch") == before
    ):
        assert time.monotonic() < deadline, await names()
        await services.scheduler.failover.once()  # lists WORK durables, deletes, drains, dead-letters
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
    ("inference", "pub", p.verdicts(JOB)),  # a node cannot publish verdicts
    ("inference", "pub", p.receipts(JOB)),
    ("inference", "pub", p.JOBS_SUBMIT.pattern),
    ("inference", "pub", p.work(OTHER_NODE)),
    ("inference", "pub", p.SETTLEMENT_FAUCET.pattern),
    ("verifier", "pub", p.results(NODE)),  # a verifier cannot forge results
    ("verifier", "pub", p.audit_request("verifier-test")),  # nor draw itself into a committee
    ("inference", "pub", p.audit_request("verifier-test")),
    ("inference", "pub", p.flags(OTHER_NODE)),  # nor flag a rival
    ("client", "pub", p.flags(NODE)),
    ("scheduler", "pub", p.flags(NODE)),
    ("scheduler", "pub", p.audit_request("verifier-test")),
    ("client", "pub", p.audit_request("verifier-test")),
    ("settlement", "pub", p.results(NODE)),  # settlement forwards results to committees, never forges one
    ("verifier", "pub", p.receipts(JOB)),
    ("scheduler", "pub", p.results(NODE)),
    ("scheduler", "pub", p.verdicts(JOB)),
    ("settlement", "pub", p.verdicts(JOB)),
    ("datastore", "pub", p.job_events(CLIENT, JOB)),
    ("datastore", "pub", p.JOBS_SUBMIT.pattern),
    ("client", "sub", p.results(NODE)),  # a client cannot read results ...
    ("client", "sub", p.RESULTS_ALL.pattern),
    ("client", "sub", p.VERDICTS_ALL.pattern),
    ("client", "sub", p.RECEIPTS_ALL.pattern),
    ("client", "sub", p.JOB_EVENTS_ALL.pattern),  # ... nor every job's events
    ("client", "sub", "jobs.events.>"),
    ("client", "sub", p.job_events_of(OTHER)),  # ... nor another client's
    ("client", "sub", p.job_tokens_of(OTHER)),  # ... nor another client's streamed tokens
    ("client", "sub", p.JOB_TOKENS_ALL.pattern),
    ("client", "pub", p.job_tokens(OTHER, JOB)),  # only nodes send tokens
    ("verifier", "pub", p.job_tokens(CLIENT, JOB)),
    ("client", "sub", p.WORK_ALL.pattern),
    ("client", "sub", "_INBOX.>"),  # nor the services' inboxes
    ("client", "sub", natsauth.inbox_prefix(OTHER) + ".>"),  # nor another client's inbox
    ("client", "sub", ">"),
    ("client", "sub", natsauth.AUTH_CALLOUT_SUBJECT),  # nor the other clients' connection requests
    ("client", "pub", p.results(NODE)),
    ("client", "pub", p.verdicts(JOB)),
    ("client", "pub", p.job_events(OTHER, JOB)),
    ("client", "pub", p.datastore_job_list(OTHER)),  # nor list another client's jobs
    # the gateway's own user reaches no API key's jobs, records, events or tokens (each key has its own)
    ("gateway", "pub", p.JOBS_SUBMIT.pattern),
    ("gateway", "pub", p.datastore_job_get(OTHER)),
    ("gateway", "pub", p.datastore_job_list(OTHER)),
    ("gateway", "sub", p.job_tokens_of(OTHER)),
    ("gateway", "sub", p.job_events_of(OTHER)),
    ("client", "pub", p.datastore_job_get(OTHER)),  # nor read another client's records
    ("client", "pub", "$JS.API.CONSUMER.CREATE.EVENTS"),  # a consumer on EVENTS only with its filter in the subject
    ("client", "pub", f"$JS.API.CONSUMER.CREATE.EVENTS.spy.{p.job_events_of(OTHER)}"),
    ("client", "pub", f"$JS.API.CONSUMER.CREATE.EVENTS.spy.{p.job_events(OTHER, JOB)}"),
    ("client", "pub", f"$JS.API.CONSUMER.CREATE.EVENTS.spy.{p.JOB_EVENTS_ALL.pattern}"),
    ("client", "pub", "$JS.API.CONSUMER.CREATE.EVENTS.spy.jobs.events.>"),
    ("client", "pub", "$JS.API.CONSUMER.CREATE.EVENTS.spy"),
    ("client", "pub", "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.spy"),
    ("client", "pub", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.datastore"),
    ("client", "pub", "$JS.API.CONSUMER.DELETE.EVENTS.datastore"),
    ("client", "pub", "$JS.API.STREAM.INFO.EVENTS"),  # its subjects would list every client's job ids
    ("client", "pub", "$JS.API.STREAM.MSG.GET.EVENTS"),
    ("client", "pub", f"$JS.API.CONSUMER.CREATE.RESULTS.spy.{p.RESULTS_ALL.pattern}"),
    ("client", "pub", "$JS.API.CONSUMER.CREATE.VERDICTS"),
    ("client", "pub", "$JS.API.CONSUMER.CREATE.RECEIPTS"),
    ("client", "pub", "$JS.API.STREAM.MSG.GET.RESULTS"),
    ("client", "pub", "$JS.API.DIRECT.GET.EVENTS"),
    ("client", "pub", "$JS.API.STREAM.DELETE.JOBS"),
    ("gateway", "sub", p.RESULTS_ALL.pattern),
    ("gateway", "sub", "_INBOX.>"),
    ("gateway", "sub", p.JOB_EVENTS_ALL.pattern),
    ("gateway", "pub", p.verdicts(JOB)),
    ("gateway", "pub", "$JS.API.CONSUMER.CREATE.EVENTS"),
    ("gateway", "pub", f"$JS.API.CONSUMER.CREATE.EVENTS.datastore.{p.JOB_EVENTS_ALL.pattern}"),
    ("scheduler", "pub", "$JS.API.STREAM.DELETE.JOBS"),
    ("inference", "pub", "$JS.API.STREAM.PURGE.RESULTS"),
    ("inference", "pub", f"$JS.API.CONSUMER.CREATE.RESULTS.verifier.{p.RESULTS_ALL.pattern}"),
    ("inference", "pub", f"$KV.{p.VERIFIERS_BUCKET}.verifier-0"),  # only verifiers announce committee keys
    ("scheduler", "pub", f"$KV.{p.VERIFIERS_BUCKET}.verifier-0"),
    ("client", "pub", f"$KV.{p.VERIFIERS_BUCKET}.verifier-0"),
    ("inference", "pub", f"$KV.{p.SCHEDULERS_BUCKET}.{'ab' * 32}"),  # only schedulers announce assignment keys
    ("verifier", "pub", f"$KV.{p.SCHEDULERS_BUCKET}.{'ab' * 32}"),
    ("client", "pub", f"$KV.{p.SCHEDULERS_BUCKET}.{'ab' * 32}"),
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
    hb = sign(
        factories.heartbeat(
            "node-sealed",
            node_key=node_id.public,
            payout_address="0x" + "3" * 40,
            model_ids=["cd" * 32],
            slots_total=1,
            slots_free=1,
            at=time.time(),
        ),
        node_id,
    )
    node = await connect(nats_auth["inference"])
    await (await node.nc.jetstream().key_value(p.NODES_BUCKET)).put("node-sealed", codec.encode(hb))
    conn = await connect(nats_auth["client"])
    client = Client(conn.nc, conn.identity)
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


# ---------------------------------------------------------------------------
# One NATS identity per client (the auth callout): no client reads another's results
# ---------------------------------------------------------------------------


async def _job_of(conn: Conn) -> str:
    """A job of `conn`'s client, run to its end by the real scheduler (rejected: no escrow)."""
    client = Client(conn.nc, conn.identity)
    job = client.build(model_id="cd" * 32, adapter_id="", prompt="a secret prompt", max_tokens=2)
    await client.publish(job)
    assert (await client.wait(job.job_id, timeout=15)).status == "rejected"
    return job.job_id


async def _api(conn: Conn, subject: str, config: dict) -> dict:
    """A raw JetStream API request: the server's JSON answer (an error refusal is an answer too)."""
    import json

    msg = await conn.nc.request(subject, json.dumps({"stream_name": "EVENTS", "config": config}).encode(), timeout=3)
    return json.loads(msg.data)


async def test_a_client_cannot_follow_another_clients_job_events(nats_auth, services):
    alice, bob = await connect(nats_auth["client"]), await connect(nats_auth["client"])
    bob_id = p.client_id(bob.identity.public)
    alice_id = p.client_id(alice.identity.public)
    bob_job = await _job_of(bob)  # bob's own submit → wait works end to end
    await _job_of(alice)
    js = alice.nc.jetstream()
    # Every way alice could put a consumer on bob's events: the SDK's (named, filtered), the
    # filterless create, a wildcard filter, a legacy durable create: refused by the server.
    attempts = [
        lambda: js.subscribe(
            p.job_events(bob_id, bob_job),
            stream="EVENTS",
            ordered_consumer=True,
            config=__import__("nats").js.api.ConsumerConfig(name="spy-1"),
        ),
        lambda: js.add_consumer("EVENTS", name="spy-2", filter_subject=p.job_events_of(bob_id), deliver_subject="x"),
        lambda: js.add_consumer("EVENTS", name="spy-3", filter_subject=p.JOB_EVENTS_ALL.pattern, deliver_subject="x"),
        lambda: js.add_consumer("EVENTS", deliver_subject=natsauth.inbox_prefix(alice_id) + ".spy"),  # filterless
        lambda: js.add_consumer("EVENTS", durable_name="spy-4", deliver_subject="x"),
        lambda: js.get_last_msg("EVENTS", p.job_events(bob_id, bob_job)),
    ]
    for attempt in attempts:
        with pytest.raises(Exception):  # the request goes nowhere: a timeout (no responders) after the -ERR
            await asyncio.wait_for(attempt(), 1.5)
    await settle(alice)
    assert len(alice.violations()) >= len(attempts), alice.errors
    # A crafted request: alice's own filter in the API subject, another in the body.  The server
    # checks that the body's filter is the subject's (so the permission on the subject holds).
    own = f"$JS.API.CONSUMER.CREATE.EVENTS.spy-5.{p.job_events_of(alice_id)}"
    inbox = natsauth.inbox_prefix(alice_id) + ".spy"
    for config in (
        {"name": "spy-5", "filter_subject": p.job_events_of(bob_id), "deliver_subject": inbox},
        {"name": "spy-5", "filter_subject": "jobs.events.>", "deliver_subject": inbox},
        {"name": "spy-5", "filter_subjects": [p.job_events_of(bob_id)], "deliver_subject": inbox},
        {
            "name": "spy-5",
            "filter_subjects": [p.job_events_of(alice_id), p.job_events_of(bob_id)],
            "deliver_subject": inbox,
        },
    ):
        answer = await _api(alice, own, config)
        # 10131: the body's filter is not the subject's; 10137: several filters need the filterless API
        assert answer.get("error", {}).get("err_code") in (10131, 10137), (config, answer)
    # (the same request with the subject's filter in the body is accepted: the refusals above are the filter's)
    answer = await _api(
        alice, own, {"name": "spy-5", "filter_subject": p.job_events_of(alice_id), "deliver_subject": inbox}
    )
    assert "error" not in answer and answer["config"]["filter_subject"] == p.job_events_of(alice_id), answer
    # nor take over the datastore's durable (an update could narrow the filter it records from)
    datastore = f"$JS.API.CONSUMER.CREATE.EVENTS.datastore.{p.job_events_of(alice_id)}"
    before = len(alice.violations())
    with pytest.raises(Exception):
        await alice.nc.request(datastore, b"{}", timeout=2)
    await settle(alice)
    assert len(alice.violations()) == before + 1, alice.errors
    # Core subscriptions to bob's events or inbox are refused too.
    for subject in (p.job_events(bob_id, bob_job), p.job_events_of(bob_id), natsauth.inbox_prefix(bob_id) + ".>"):
        await alice.nc.subscribe(subject)
    await settle(alice)
    assert len(alice.violations()) == before + 4, alice.errors
    # What alice may do sees only her own events: a consumer with her own filter.
    own_events = []
    sub = await js.subscribe(
        p.job_events_of(alice_id),
        stream="EVENTS",
        ordered_consumer=True,
        config=__import__("nats").js.api.ConsumerConfig(name="mine"),
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=2)
            own_events.append(msg.subject)
    except Exception:
        pass
    await sub.unsubscribe()
    assert own_events and all(p.parse_job_events(s)[0] == alice_id for s in own_events), own_events
    for c in (alice, bob):
        await c.nc.close()


async def test_a_client_cannot_read_another_clients_inbox_or_records(nats_auth, services):
    alice, bob = await connect(nats_auth["client"]), await connect(nats_auth["client"])
    bob_id = p.client_id(bob.identity.public)
    # bob's request-reply traffic arrives under his own prefix, which only he may subscribe to
    spied = []

    async def spy(msg) -> None:
        spied.append(msg)

    await alice.nc.subscribe(natsauth.inbox_prefix(bob_id) + ".>", cb=spy)
    await alice.nc.subscribe("_INBOX.>", cb=spy)
    await Client(bob.nc, bob.identity).balance()
    await bob.nc.request(p.datastore_job_get(bob_id), codec.encode(p.JobGet(job_id=JOB)), timeout=5)
    await settle(alice, bob)
    assert spied == [] and len(alice.violations()) == 2, alice.errors
    # bob's records are asked for on datastore.job.get.<bob's id>: alice may not publish there
    with pytest.raises(Exception):
        await alice.nc.request(p.datastore_job_get(bob_id), codec.encode(p.JobGet(job_id=JOB)), timeout=2)
    await settle(alice)
    assert any(p.datastore_job_get(bob_id) in e for e in alice.violations()), alice.errors
    assert not bob.errors, bob.errors
    for c in (alice, bob):
        await c.nc.close()


async def _raw_connect(url: str, connect_fields) -> str:
    """Speak the NATS protocol by hand: read INFO, send CONNECT (fields built from the INFO), return the answer."""
    import json
    from urllib.parse import urlparse

    where = urlparse(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        info = json.loads((await reader.readline()).decode().split(" ", 1)[1])
        writer.write(
            b"CONNECT "
            + json.dumps({"verbose": False, "pedantic": False, "protocol": 1, **connect_fields(info)}).encode()
            + b"\r\nPING\r\n"
        )
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    finally:
        writer.close()


async def test_a_connection_without_a_valid_key_signature_is_refused(nats_auth, services):
    import base64

    alice, mallory = Identity.generate(), Identity.generate()

    def signed(by: Identity, key: Identity, nonce: str | None = None):
        def fields(info: dict) -> dict:
            sig = by.sign_bytes((nonce or info["nonce"]).encode())
            return {"nkey": natsauth.public_of(key), "sig": base64.urlsafe_b64encode(sig).decode().rstrip("=")}

        return fields

    assert await _raw_connect(nats_auth["client"], signed(alice, alice)) == "PONG"  # the honest client
    refused = {
        "no credentials": lambda info: {},
        "unknown user": lambda info: {"user": "client", "pass": "devnet-client"},
        "alice's key, mallory's signature": signed(mallory, alice),
        "alice's signature over another nonce (a replay)": signed(alice, alice, nonce="AAAAAAAAAAAAAAA"),
        "a key without a signature": lambda info: {"nkey": natsauth.public_of(alice)},
        "a garbled key": lambda info: {"nkey": "U" + "A" * 55, "sig": "AAAA"},
    }
    for what, fields in refused.items():
        answer = await _raw_connect(nats_auth["client"], fields)
        assert "authorization violation" in answer.lower(), (what, answer)
    # and through nats-py: no key, no connection
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(nats_auth["client"], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)
