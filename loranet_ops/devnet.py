"""The embedded devnet: nats-server, redis-server and every service as local processes.

A supervisor process owns them all: it starts the servers, the chain process
(loranet_ops.chain_node: py-evm over JSON-RPC, so balances outlive a
settlement crash; its journal, <state_dir>/chain.journal, makes them outlive a
crash of the chain process and a devnet restart too), the datastore and
settlement, registers the demo catalogue, then starts the scheduler, the
verifiers and the inference nodes; it restarts a service that crashes and
stops everything on SIGTERM.  Its state (pids, ports, logs, restarts) lives in
<state_dir>/devnet.json, which `loranet devnet status` reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .servers import NatsServer, RedisServer, free_port

STATE_FILE = "devnet.json"
PASSWORDS_FILE = "nats-passwords.json"
# The per-role users and subject permissions, shared with docker compose.
AUTH_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nats" / "auth.conf"
ROLES = ("init", "scheduler", "inference", "verifier", "settlement", "datastore", "gateway", "admin")
# Clients have no password: each connects with its own key, which the auth service (services/auth)
# turns into a NATS user of its own (loranet.natsauth).  Its keys live in these files (mode 0600).
AUTH_ISSUER_SEED_FILE = "auth-issuer.seed"
AUTH_NKEY_SEED_FILE = "auth-nkey.seed"
# The chain process's journal: the devnet chain survives a crash of the chain process and
# `loranet devnet down` / `up`; remove the file (or the state dir) for a new chain.
CHAIN_JOURNAL_FILE = "chain.journal"
# The gateway's devnet API key (the key alone, for users) and the gateway's key map (JSON), mode 0600.
GATEWAY_KEY_FILE = "gateway.key"
GATEWAY_KEYS_FILE = "gateway-keys.json"
DEFAULT_GATEWAY_PORT = 18080  # what `loranet devnet up` asks for (DevnetConfig's 0 = a free port)
DEFAULT_STATE_DIR = ".devnet"
DEFAULT_NATS_PORT = 14222
DEFAULT_REDIS_PORT = 16379


@dataclass
class DevnetConfig:
    state_dir: str = DEFAULT_STATE_DIR
    nats_port: int = DEFAULT_NATS_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    inference_nodes: int = 2
    verifiers: int = 3
    # Verifiers drawn into each audited run's committee (settlement's committee_size; a majority of them
    # must agree): 0 = as many as the devnet runs, up to 3 (1: the first verdict decides).
    committee: int = 0
    demo_adapters: int = 4
    # The base model every node and verifier serves: a name or a checkpoint directory
    # ("" = $LORANET_MODEL, else smollm2-135m-instruct; loranet-tiny-llama is the tests' seeded model).
    model: str = ""
    cache_dir: str = ""
    epoch_max_s: float = 0.5
    metrics_base_port: int = 0  # 0 = no /metrics endpoints
    chain_port: int = 0  # the chain process's JSON-RPC port; 0 = a free one
    # The OpenAI-compatible gateway, one of the devnet's services (its own NATS user and API key file).
    gateway: bool = True
    gateway_port: int = 0  # 0 = a free one
    # Per-role NATS users with least-privilege permissions (deploy/nats/auth.conf).
    auth: bool = True
    # Node k declares (and heartbeats) regions[k % len(regions)] in the Registry's node map.
    regions: tuple[str, ...] = ("eu-west", "us-east")
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def scratch(cls, root: str | Path, **settings: Any) -> DevnetConfig:
        """A throwaway devnet under `root` on free ports (tests and benchmarks): one node, one verifier unless
        `settings` say otherwise."""
        settings = {"inference_nodes": 1, "verifiers": 1, **settings}
        return cls(state_dir=str(Path(root) / "state"), nats_port=free_port(), redis_port=free_port(), **settings)

    @property
    def nats_url(self) -> str:
        """The server's address, without credentials."""
        return f"nats://127.0.0.1:{self.nats_port}"

    def url_for(self, role: str) -> str:
        """The NATS URL with `role`'s credentials (`admin`, …), or the plain URL without auth; `client` gets
        the plain URL (a client authenticates with its own key, see Client.connect)."""
        return role_url(self.state_dir, role, self.nats_url)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


@dataclass
class ServiceProc:
    name: str
    module: str
    env: dict[str, str]
    pid: int = 0
    restarts: int = 0
    state: str = "stopped"
    log: str = ""
    started_at: float = 0.0
    log_from: int = 0  # the log's size when this run started: earlier runs' lines do not count
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def log_text(self) -> str:
        """What this run of the service has logged (the last 200 kB of it)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(max(self.log_from, os.path.getsize(self.log) - 200_000))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def role_url(state_dir: str | Path, role: str, nats_url: str) -> str:
    """`nats_url` with the credentials of `role` from the devnet's passwords file (mode 0600), if any."""
    path = Path(state_dir) / PASSWORDS_FILE
    if role == "client" or not path.exists():
        return nats_url
    password = json.loads(path.read_text())[role]
    return nats_url.replace("nats://", f"nats://{role}:{password}@", 1)


def _passwords(state_dir: Path) -> dict[str, str]:
    import secrets

    # Letters first: nats-server parses a variable that looks like a number or a date as one.
    passwords = {role: f"pw{secrets.token_hex(16)}" for role in ROLES}
    path = state_dir / PASSWORDS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(passwords, f)
    return passwords


def gateway_key(state_dir: Path) -> str:
    """The devnet's gateway API key, created on first use: the key alone in `gateway.key` (for users) and
    the gateway's key map in `gateway-keys.json`, both mode 0600; kept across `devnet down` / `up`."""
    import secrets

    from loranet.signing import read_secret_file, write_secret_file

    key_file, keys_file = state_dir / GATEWAY_KEY_FILE, state_dir / GATEWAY_KEYS_FILE
    if key_file.exists() and keys_file.exists():
        return read_secret_file(key_file).strip()
    key = f"sk-devnet-{secrets.token_hex(16)}"
    write_secret_file(keys_file, json.dumps({key: "devnet"}))
    write_secret_file(key_file, key + "\n")
    return key


def _auth_keys(state_dir: Path) -> dict[str, str]:
    """Fresh keys of the auth callout: the issuer (account) and the auth service's own NKEY user.
    The seeds go to files (mode 0600) the auth service reads; the server gets the public keys."""
    from nacl.signing import SigningKey

    from loranet import natsauth
    from loranet.signing import Identity, write_secret_file

    issuer_public, issuer_seed = natsauth.new_issuer()
    service = Identity(SigningKey.generate())
    write_secret_file(state_dir / AUTH_ISSUER_SEED_FILE, issuer_seed)
    write_secret_file(state_dir / AUTH_NKEY_SEED_FILE, natsauth.seed_of(service))
    return {"LORANET_NATS_AUTH_ISSUER": issuer_public, "LORANET_NATS_AUTH_NKEY": natsauth.public_of(service)}


def state_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: str | Path) -> dict | None:
    path = state_path(state_dir)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def running_supervisor(state_dir: str | Path) -> dict | None:
    state = read_state(state_dir)
    if state and pid_alive(int(state.get("supervisor_pid", 0))):
        return state
    return None


class Supervisor:
    def __init__(self, config: DevnetConfig) -> None:
        self.config = config
        self.dir = Path(config.state_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / PASSWORDS_FILE).unlink(missing_ok=True)
        self.auth = config.auth and AUTH_CONF.exists()
        passwords = _passwords(self.dir) if self.auth else None
        self.nats = NatsServer(
            config.nats_port,
            self.dir / "nats",
            self.dir / "logs" / "nats.log",
            auth_conf=AUTH_CONF if self.auth else None,
            passwords=passwords,
            extra_env=_auth_keys(self.dir) if self.auth else None,
        )
        self.redis = RedisServer(config.redis_port, self.dir / "redis", self.dir / "logs" / "redis.log")
        self.services: list[ServiceProc] = []
        self.chain_port = config.chain_port or free_port()
        self.gateway_port = config.gateway_port or free_port()
        if config.gateway:
            gateway_key(self.dir)
        self.ready = False
        self.stopping = False
        self.phase = "starting"
        self.error = ""

    def _env(self, name: str, index: int, extra: dict[str, str], role: str = "") -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LORANET_NATS_URL": self.config.url_for(role) if role else self.config.nats_url,
                "LORANET_INSTANCE": name,
                "LORANET_STATE_DIR": str(self.dir / "state"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        from loranet.model.catalog import default_model_name  # (torch is imported only when services are planned)

        env["LORANET_MODEL"] = self.config.model or default_model_name()
        if self.config.cache_dir:
            env["LORANET_CACHE"] = self.config.cache_dir
            env["LORANET_CACHE_DIR"] = self.config.cache_dir
        if self.config.metrics_base_port:
            env["LORANET_METRICS_PORT"] = str(self.config.metrics_base_port + index)
        env.update(self.config.extra_env)
        env.update(extra)
        return env

    def plan(self) -> tuple[list[ServiceProc], list[ServiceProc]]:
        """(services started before the catalogue is registered, services started after)."""
        i = 0

        def svc(name: str, module: str, role: str = "", **extra: str) -> ServiceProc:
            nonlocal i
            i += 1
            return ServiceProc(
                name, module, self._env(name, i, extra, role), log=str(self.dir / "logs" / f"{name}.log")
            )

        first = (
            [
                svc(
                    "auth",
                    "services.auth",
                    LORANET_AUTH_ISSUER_SEED_FILE=str(self.dir / AUTH_ISSUER_SEED_FILE),
                    LORANET_AUTH_NKEY_SEED_FILE=str(self.dir / AUTH_NKEY_SEED_FILE),
                )
            ]
            if self.auth
            else []
        )
        first += [
            svc(
                "chain",
                "loranet_ops.chain_node",
                LORANET_CHAIN_PORT=str(self.chain_port),
                LORANET_CHAIN_DEPLOYMENT_FILE=str(self.dir / "chain.json"),
                LORANET_CHAIN_JOURNAL=str(self.dir / CHAIN_JOURNAL_FILE),
            ),
            svc("datastore", "services.datastore", "datastore", LORANET_REDIS_URL=self.config.redis_url),
            svc(
                "settlement",
                "services.settlement",
                "settlement",
                LORANET_EPOCH_MAX_S=str(self.config.epoch_max_s),
                LORANET_RPC_URL=self.rpc_url,
                # only the verifiers the devnet staked and registered (stake_nodes) decide jobs, a majority
                # of a committee drawn among them for every audited or rejected run
                LORANET_REGISTERED_VERIFIERS_ONLY="1",
                LORANET_COMMITTEE_SIZE=str(self.committee_size),
                LORANET_VERDICT_QUORUM=str(self.committee_size // 2 + 1),
            ),
        ]
        second = [svc("scheduler", "services.scheduler", "scheduler")]
        second += [
            svc(f"verifier-{k}", "services.verifier", "verifier", LORANET_VERIFIER_ID=f"verifier-{k}")
            for k in range(self.config.verifiers)
        ]
        second += [
            svc(
                f"node-{k}",
                "services.inference",
                "inference",
                LORANET_NODE_ID=f"node-{k}",
                LORANET_REGION=self.region(k),
            )
            for k in range(self.config.inference_nodes)
        ]
        if self.config.gateway:
            second.append(
                svc(
                    "gateway",
                    "services.gateway",
                    "gateway",
                    LORANET_GATEWAY_HOST="127.0.0.1",
                    LORANET_GATEWAY_PORT=str(self.gateway_port),
                    LORANET_GATEWAY_KEYS_FILE=str(self.dir / GATEWAY_KEYS_FILE),
                    # each API key's client connects as itself through the auth callout
                    LORANET_GATEWAY_CLIENT_NATS_URL=self.config.nats_url if self.config.auth else "",
                )
            )
        return first, second

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.chain_port}"

    def start_service(self, svc: ServiceProc) -> None:
        log = open(svc.log, "ab")
        svc.log_from = log.tell()  # after `devnet down` / `up` the log holds the last run's start too
        svc.proc = subprocess.Popen(
            [sys.executable, "-m", svc.module],
            env=svc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        svc.pid, svc.state, svc.started_at = svc.proc.pid, "starting", time.time()

    def wait_started(self, svcs: list[ServiceProc], timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for svc in svcs:
            while True:
                if '"event":"service.started"' in svc.log_text():
                    svc.state = "running"
                    break
                if svc.proc and svc.proc.poll() is not None:
                    raise RuntimeError(f"{svc.name} exited with code {svc.proc.returncode}; see {svc.log}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{svc.name} did not start within {timeout:.0f}s; see {svc.log}")
                time.sleep(0.2)
        self.write_state()

    @property
    def committee_size(self) -> int:
        """Verifiers per audited run's committee: the configured number, else all of them up to 3."""
        return self.config.committee or max(1, min(self.config.verifiers, 3))

    def region(self, k: int) -> str:
        """Node k's region: what it heartbeats and what it declares (the Registry wants one)."""
        return self.config.regions[k % len(self.config.regions)] if self.config.regions else "local"

    def stake_nodes(self) -> None:
        """Stake each node's Ed25519 key in the Registry and declare its device, memory and region: the map
        the scheduler checks heartbeats against; stake and register each verifier's key, whose verdicts alone
        settlement counts (devnet: a fresh funded account stakes for each; one already staked, after
        `devnet down`/`up`, is left as it is)."""
        from loranet.signing import Identity, devnet_address
        from loranet.split import DEFAULT_PRICE
        from services.settlement.devchain import DevChain

        chain = DevChain.open(self.rpc_url)

        def stake(name: str) -> str | None:
            """Stake the key in <state>/<name>.key (the service's own key file) for a fresh funded account:
            the account's key, or None when the key is staked already."""
            identity = Identity.load_or_create(self.dir / "state" / f"{name}.key")
            if chain.node_of_key(identity.public):
                return None
            account = chain.new_account(open_tokens=chain.min_stake())
            chain.stake(account.key, chain.min_stake(), identity.public, payout=devnet_address(name))
            return account.key

        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
        device = self.config.extra_env.get("LORANET_DEVICE", "cpu").split(":")[0]
        price = DEFAULT_PRICE.per_output_token * 10**6  # per million generated tokens
        dtype = self.config.extra_env.get("LORANET_DTYPE", "float32")  # what services.inference serves
        for k in range(self.config.inference_nodes):
            if key := stake(f"node-{k}"):
                chain.declare(key, device, memory_mb, self.region(k), price, dtype)
        for k in range(self.config.verifiers):
            if key := stake(f"verifier-{k}"):
                chain.register_verifier(key)

    def register_catalogue(self) -> None:
        import nats

        from .demo import register_catalogue

        async def go() -> None:
            nc = await nats.connect(self.config.url_for("init"))
            try:
                await register_catalogue(
                    nc, self.config.model, self.config.demo_adapters, self.config.cache_dir or None
                )
            finally:
                await nc.close()

        asyncio.run(go())

    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "phase": self.phase,
            "ready": self.ready,
            "error": self.error,
            "nats_url": self.config.nats_url,
            "nats_auth": self.auth,
            "redis_url": self.config.redis_url,
            "rpc_url": self.rpc_url,
            "gateway": {
                "url": f"http://127.0.0.1:{self.gateway_port}/v1",
                "api_key_file": str(self.dir / GATEWAY_KEY_FILE),
            }
            if self.config.gateway
            else None,
            "state_dir": str(self.dir),
            "config": asdict(self.config),
            "servers": {
                "nats": {
                    "pid": self.nats.proc.pid if self.nats.proc else 0,
                    "state": "running" if self.nats.running else "stopped",
                    "log": str(self.nats.log_path),
                },
                "redis": {
                    "pid": self.redis.proc.pid if self.redis.proc else 0,
                    "state": "running" if self.redis.running else "stopped",
                    "log": str(self.redis.log_path),
                },
            },
            "services": {
                s.name: {"pid": s.pid, "state": s.state, "restarts": s.restarts, "log": s.log, "module": s.module}
                for s in self.services
            },
        }
        tmp = state_path(self.dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path(self.dir))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stop_flag())
        signal.signal(signal.SIGINT, lambda *_: self._stop_flag())
        try:
            self.phase = "servers"
            self.write_state()
            self.nats.start()
            self.redis.start()
            first, second = self.plan()
            self.services = first + second
            self.phase = "services"
            for svc in first:
                self.start_service(svc)
                if svc.name == "chain":  # settlement attaches to its contracts at start
                    self.wait_started([svc])
                    # before settlement starts: both send from the deployer's account (nonces)
                    self.stake_nodes()
            self.write_state()
            self.wait_started(first)
            self.phase = "catalogue"
            self.write_state()
            self.register_catalogue()
            self.phase = "nodes"
            for svc in second:
                self.start_service(svc)
            self.write_state()
            self.wait_started(second)
            self.phase = "ready"
            self.ready = True
            self.write_state()
            self.supervise()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.phase = "failed"
            self.write_state()
            print(f"devnet failed: {self.error}", file=sys.stderr)
            self.shutdown()
            return 1
        self.shutdown()
        return 0

    def _stop_flag(self) -> None:
        self.stopping = True

    def supervise(self) -> None:
        while not self.stopping:
            changed = False
            for svc in self.services:
                if svc.proc and svc.proc.poll() is not None and not self.stopping:
                    svc.state = f"crashed (exit {svc.proc.returncode}), restarting"
                    svc.restarts += 1
                    self.write_state()
                    time.sleep(min(0.5 * svc.restarts, 5))
                    self.start_service(svc)
                    changed = True
                    if svc.name == "chain":
                        # The chain comes back from its journal (same contracts, same state), but
                        # settlement's requests failed meanwhile: restart it, so it recovers its
                        # epoch from its own journal against the restored chain.
                        self._restart_settlement()
            for server in (self.nats, self.redis):
                if not server.running and not self.stopping:
                    server.start()
                    changed = True
            for svc in self.services:
                if (
                    svc.state == "starting"
                    and svc.proc
                    and svc.proc.poll() is None
                    and time.time() - svc.started_at > 1
                ):
                    text = svc.log_text()
                    if text.rfind('"event":"service.started"') > text.rfind('"event":"service.stopped"'):
                        svc.state = "running"
                        changed = True
            if changed:
                self.write_state()
            time.sleep(0.5)

    def _restart_settlement(self) -> None:
        chain = next(s for s in self.services if s.name == "chain")
        try:
            self.wait_started([chain], timeout=60)
        except Exception:
            return
        for svc in self.services:
            if svc.name == "settlement" and svc.proc and svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)  # the loop above starts it again

    def shutdown(self) -> None:
        self.phase = "stopping"
        for svc in reversed(self.services):
            if svc.proc and svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25
        for svc in reversed(self.services):
            if svc.proc:
                try:
                    svc.proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    svc.proc.kill()
                    svc.proc.wait()
            svc.state = "stopped"
        self.redis.stop()
        self.nats.stop()
        self.phase = "stopped"
        self.ready = False
        self.write_state()


def start_detached(config: DevnetConfig, timeout: float = 600.0, progress=None) -> dict:
    """Start a supervisor in the background and wait until the devnet is ready."""
    existing = running_supervisor(config.state_dir)
    if existing:
        return existing
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    state_path(config.state_dir).unlink(missing_ok=True)
    args = [sys.executable, "-m", "loranet_ops.devnet", json.dumps(asdict(config))]
    log = open(Path(config.state_dir) / "supervisor.log", "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    last_phase = ""
    while time.monotonic() < deadline:
        state = read_state(config.state_dir)
        if state:
            if progress and state.get("phase") != last_phase:
                last_phase = state.get("phase", "")
                progress(last_phase)
            if state.get("ready"):
                return state
            if state.get("phase") == "failed":
                raise RuntimeError(f"devnet failed to start: {state.get('error')} (logs in {config.state_dir}/logs)")
        if proc.poll() is not None:
            raise RuntimeError(
                f"devnet supervisor exited with code {proc.returncode}; see {config.state_dir}/supervisor.log"
            )
        time.sleep(0.3)
    raise TimeoutError(f"devnet not ready after {timeout:.0f}s; see {config.state_dir}/logs")


def stop(state_dir: str | Path, timeout: float = 60.0) -> bool:
    """Stop a running devnet; False if none was running."""
    state = running_supervisor(state_dir)
    if not state:
        return False
    pid = int(state["supervisor_pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def status(state_dir: str | Path) -> dict:
    """Every server and service with its state, as the supervisor last wrote it, checked against live pids."""
    state = read_state(state_dir)
    if not state:
        return {"running": False, "services": {}}
    running = pid_alive(int(state.get("supervisor_pid", 0)))
    for group in ("servers", "services"):
        for _name, info in state.get(group, {}).items():
            if not running or not pid_alive(int(info.get("pid", 0))):
                info["state"] = "stopped" if not running else "down"
    state["running"] = running
    return state


if __name__ == "__main__":
    cfg = DevnetConfig(**json.loads(sys.argv[1])) if len(sys.argv) > 1 else DevnetConfig()
    sys.exit(Supervisor(cfg).run())
