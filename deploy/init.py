"""One-shot init for the compose devnet: `python deploy/init.py`.

1. NATS: every stream and the `nodes` KV bucket (loranet.topology.ensure_topology,
   with the cluster's replica count), and the durable consumers of the scheduler,
   verifier, settlement and datastore, so no replica races another to create them.
2. Chain: deploys the OPEN token, Registry and Settlement contracts on the JSON-RPC
   chain (anvil) once, and writes their addresses to LORANET_DEPLOYMENT_FILE as
   LORANET_*_ADDRESS lines; settlement sources that file before it starts, so it
   attaches instead of deploying its own.  A file whose contracts are still on the
   chain is kept (a restarted init does not redeploy).
3. Catalogue: registers the built-in model and the demo adapters with the datastore
   (loranet_ops.demo.register_catalogue), waiting for the datastore to answer.

Exits 0 when all three are done; docker compose starts the services after it
(`depends_on: condition: service_completed_successfully`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from loranet import protocol as p
from loranet import topology
from loranet.observability import EventLog
from loranet.settings import CommonSettings

ADDRESS_KEYS = ("LORANET_TOKEN_ADDRESS", "LORANET_REGISTRY_ADDRESS", "LORANET_SETTLEMENT_ADDRESS")


class InitSettings(CommonSettings):
    rpc_url: str = ""  # "" = no chain to deploy to (the settlement service runs its in-process EVM)
    deployer_key: str = ""
    settler_key: str = ""
    treasury: str = ""
    deployment_file: str = "/deployment/chain.env"
    demo_adapters: int = 4
    model_path: str = ""  # the base model to register: a name or directory; "" = $LORANET_MODEL, else SmolLM2
    cache_dir: str = ""
    # How long to wait for NATS (JetStream meta leader), the chain and the datastore.
    wait_s: float = 180.0


# -- the deployment file -------------------------------------------------------


def format_deployment(token: str, registry: str, settlement: str, chain_id: int) -> str:
    """The env file settlement sources (`set -a; . chain.env`): one KEY=value per line."""
    return (
        f"# written by deploy/init.py; chain id {chain_id}\n"
        f"LORANET_TOKEN_ADDRESS={token}\nLORANET_REGISTRY_ADDRESS={registry}\n"
        f"LORANET_SETTLEMENT_ADDRESS={settlement}\nLORANET_CHAIN_ID={chain_id}\n"
    )


def parse_deployment(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def deploy_contracts(settings: InitSettings, log: EventLog) -> dict[str, str]:
    """Attach to the contracts in the deployment file if they are on the chain, else deploy; write the file."""
    from services.settlement.devchain import DevChain
    from services.settlement.transport import ChainError

    path = Path(settings.deployment_file)
    keys = {
        k: v
        for k, v in {
            "deployer_key": settings.deployer_key,
            "settler_key": settings.settler_key,
            "treasury": settings.treasury,
        }.items()
        if v
    }
    deadline = time.monotonic() + settings.wait_s
    while True:
        try:
            if path.exists():
                known = parse_deployment(path.read_text())
                if all(known.get(k) for k in ADDRESS_KEYS):
                    try:
                        chain = DevChain.open(
                            settings.rpc_url,
                            token_address=known["LORANET_TOKEN_ADDRESS"],
                            registry_address=known["LORANET_REGISTRY_ADDRESS"],
                            settlement_address=known["LORANET_SETTLEMENT_ADDRESS"],
                            **keys,
                        )
                        log.info("chain.attached", **{k.lower(): known[k] for k in ADDRESS_KEYS})
                        return known
                    except ChainError as exc:  # the chain was reset: deploy again
                        log.warning("chain.stale_deployment", error=str(exc))
            chain = DevChain.open(settings.rpc_url, **keys)
            break
        except ChainError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("chain.waiting", rpc_url=settings.rpc_url, error=str(exc)[:200])
            time.sleep(2)
    d = chain.deployment
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(format_deployment(d.token, d.registry, d.settlement, d.chain_id))
    tmp.replace(path)
    log.info(
        "chain.deployed",
        token=d.token,
        registry=d.registry,
        settlement=d.settlement,
        chain_id=d.chain_id,
        file=str(path),
    )
    return parse_deployment(path.read_text())


# -- NATS ---------------------------------------------------------------------


async def ensure_streams_and_consumers(js, settings: InitSettings, log: EventLog) -> None:
    deadline = time.monotonic() + settings.wait_s
    while True:
        try:
            await topology.ensure_topology(js, settings.js_replicas, settings.node_ttl_s)
            break
        except Exception as exc:  # JetStream not ready yet (no meta leader while the cluster forms)
            if time.monotonic() > deadline:
                raise
            log.info("jetstream.waiting", error=repr(exc)[:200])
            await asyncio.sleep(1)
    for spec in p.CONSUMERS:
        try:
            await js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            await js.add_consumer(spec.stream, topology.consumer_config(spec))
        log.info("consumer.ready", stream=spec.stream, durable=spec.durable)


async def register(nc, settings: InitSettings, log: EventLog) -> None:
    from loranet_ops.demo import register_catalogue

    deadline = time.monotonic() + settings.wait_s
    while True:
        try:
            model_id, names = await register_catalogue(
                nc, settings.model_path, settings.demo_adapters, settings.cache_dir or None
            )
            log.info("catalogue.registered", model_id=model_id, adapters=names)
            return
        except (TimeoutError, NoRespondersError, NatsTimeoutError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the datastore did not answer within {settings.wait_s:.0f}s") from exc
            log.info("datastore.waiting", error=repr(exc)[:200])
            await asyncio.sleep(1)


async def main(settings: InitSettings | None = None) -> int:
    settings = settings or InitSettings.from_env()
    log = EventLog("init", settings.instance or "init", settings.log_level)
    nc = await nats.connect(
        settings.nats_url, name="loranet-init", connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=1
    )
    try:
        await ensure_streams_and_consumers(nc.jetstream(), settings, log)
        if settings.rpc_url:
            await asyncio.to_thread(deploy_contracts, settings, log)
        await register(nc, settings, log)
    finally:
        await nc.drain()
    log.info("init.done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
