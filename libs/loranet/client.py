"""The client SDK: sign and submit jobs, follow them to their end, read records.

    async with await Client.connect(url, identity) as client:
        job_id = await client.submit("demo-0", "Hello", max_tokens=16)
        outcome = await client.wait(job_id)

Confidential jobs (`submit(..., confidential=True)`): the prompt is sealed to one
live node serving the model (read from KV `nodes`) and to every verifier that
announced itself for the model (KV `verifiers`); the output comes back sealed
to this client's key and `wait` opens it (loranet.confidential).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.nuid import NUID

from . import codec, confidential, natsauth
from . import protocol as p
from .errors import Invalid, LoranetError, RemoteError
from .model.catalog import default_model_name
from .model.tokenizers import render_chat
from .runtime import request
from .signing import Identity, SignatureInvalid, devnet_address, sign

M = TypeVar("M", bound=p.Wire)
R = TypeVar("R", bound=p.Wire)

DEFAULT_MAX_FEE = 10**18  # 1 OPEN
REGISTRY_FRESH_S = 30.0  # heartbeats and verifier announcements older than this are ignored
WAIT_RECHECK_S = 15.0  # wait() reads the job's record when its events have been quiet this long


class JobFailed(LoranetError):
    pass


@dataclass
class Outcome:
    """What a client learns about a finished job."""

    job_id: str
    status: str
    reason: str = ""
    output: str = ""
    finish_reason: str = ""  # OpenAI's terms: stop | length ("" while there is no result)
    node_id: str = ""
    verdict: dict[str, Any] = field(default_factory=dict)
    fee: int = 0
    payouts: dict[str, int] = field(default_factory=dict)
    tx_hash: str = ""
    epoch: int = 0
    stages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "reason": self.reason,
            "output": self.output,
            "finish_reason": self.finish_reason,
            "node_id": self.node_id,
            "verdict": self.verdict,
            "fee": str(self.fee),
            "payouts": {k: str(v) for k, v in self.payouts.items()},
            "tx_hash": self.tx_hash,
            "epoch": self.epoch,
            "stages": self.stages,
        }


def payout_table(receipt: p.Receipt) -> dict[str, int]:
    """Receipt payouts as party → amount (contributors and verifiers keyed by address)."""
    out: dict[str, int] = {}
    for payout in receipt.payouts:
        key = payout.party if payout.party in ("node", "developer", "treasury") else f"{payout.party}:{payout.address}"
        out[key] = out.get(key, 0) + payout.amount
    return out


def outcome_of(record: p.JobRecord, identity: Identity | None = None) -> Outcome:
    """The outcome of a job record; `identity` (the client's) opens a confidential job's sealed output."""
    out = Outcome(
        job_id=record.job_id,
        status=record.status,
        reason=record.reason,
        node_id=record.node_id,
        stages=list(record.stages),
    )
    if record.result is not None:
        out.output = record.result.output_text
        out.finish_reason = p.OPENAI_FINISH_REASONS.get(record.result.finish_reason, "stop")
        if record.result.sealed_output is not None and identity is not None:
            try:
                out.output = confidential.opened_result(record.result, identity).output_text
            except confidential.ConfidentialError as exc:
                out.reason = (out.reason + "; " if out.reason else "") + f"sealed output does not open: {exc}"
    if record.verdicts:
        v = record.verdicts[-1]
        out.verdict = {
            "accepted": v.accepted,
            "audited": v.audited,
            "verifier": v.verifier_id,
            "failed_checks": [c.name for c in v.checks if not c.ok],
            "verdicts": len(record.verdicts),
            # which training records the answer reproduced, and the data share it pays each contributor
            "attribution": v.attribution.model_dump(mode="json") if v.attribution else None,
        }
    if record.receipt is not None:
        out.fee = record.receipt.fee
        out.payouts = payout_table(record.receipt)
        out.tx_hash = record.receipt.tx_hash
        out.epoch = record.receipt.epoch
    return out


async def registry_values(js: JetStreamContext, bucket: str, keys: str = ">") -> list[bytes]:
    """Every current value of a KV registry bucket, or of its keys matching `keys` (one ordered consumer,
    no per-key gets)."""
    try:
        kv = await js.key_value(bucket)
    except Exception as exc:
        raise JobFailed(f"cannot read the {bucket!r} registry: {exc}") from None
    watcher = await kv.watch(keys, ignore_deletes=True)
    values = []
    try:
        async for entry in watcher:
            if entry is None:
                break
            values.append(entry.value or b"")
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    return values


Announced = TypeVar("Announced", p.NodeHeartbeat, p.VerifierAnnouncement)


async def fresh_announcements(
    js: JetStreamContext, bucket: str, schema: type[Announced], model_id: str = ""
) -> list[Announced]:
    """A registry bucket's fresh, correctly signed entries (heartbeats, verifier announcements), for
    `model_id` if given."""
    out, now = [], time.time()
    for value in await registry_values(js, bucket):
        try:
            entry = codec.decode(schema, value)
            entry.verify()
        except (codec.DecodeError, SignatureInvalid):
            continue
        if now - entry.at < REGISTRY_FRESH_S and (not model_id or model_id in entry.model_ids):
            out.append(entry)
    return out


async def live_nodes(js: JetStreamContext, model_id: str = "") -> list[p.NodeHeartbeat]:
    """Live nodes from the registry (fresh, correctly signed heartbeats), serving `model_id` if given."""
    return await fresh_announcements(js, p.NODES_BUCKET, p.NodeHeartbeat, model_id)


async def _quiet(exc: Exception) -> None:
    """A connection error the caller hears of as the exception nats.connect raises (or a request's)."""


def _has_credentials(url: str) -> bool:
    from urllib.parse import urlparse

    return any(urlparse(u.strip()).username for u in url.split(","))


class Client:
    def __init__(self, nc: NATS, identity: Identity, address: str | None = None, timeout_s: float = 10.0) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.identity = identity
        self.address = address or devnet_address(f"client:{identity.public.hex()}")
        self.timeout_s = timeout_s

    @classmethod
    async def connect(cls, url: str, identity: Identity, address: str | None = None, **options: Any) -> Client:
        """Connect as this identity: its Ed25519 key is the NATS NKEY the server's auth callout checks
        (loranet.natsauth), with its own inbox prefix.  A URL that carries a user and password (an
        operator's, a test's) connects as that user instead."""
        auth = {} if _has_credentials(url) else natsauth.connect_options(identity)
        options.setdefault("error_cb", _quiet)  # nats-py's default prints a traceback per failed attempt
        options.setdefault("max_reconnect_attempts", 3)
        options.setdefault("name", "loranet-client")
        nc = await nats.connect(url, connect_timeout=5, **auth, **options)
        return cls(nc, identity, address)

    @property
    def client_id(self) -> str:
        return p.client_id(self.identity.public)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.drain()

    async def _request(self, subject: p.Request[M, R], message: M, timeout: float | None = None, to: str = "") -> R:
        return await request(self.nc, subject, message, timeout or self.timeout_s, to=to)

    async def adapter(self, name_or_id: str) -> p.AdapterManifest:
        return await self._request(p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=name_or_id))

    async def model(self, name_or_id: str = "") -> p.ModelManifest:
        """A base model's registry record ("" = the default model, $LORANET_MODEL or SmolLM2)."""
        return await self._request(p.DATASTORE_MODEL_GET, p.ModelGet(model=name_or_id or default_model_name()))

    async def adapters(self, base_model_id: str = "") -> list[p.AdapterManifest]:
        reply = await self._request(p.DATASTORE_ADAPTER_LIST, p.AdapterList(base_model_id=base_model_id))
        return reply.adapters

    async def register_adapter(self, path: str, manifest: dict[str, Any]) -> p.AdapterManifest:
        """Register the PEFT adapter directory `path` with `manifest` (name, base_model (id or name),
        owner_address, license, contributors [{contributor_id, address, weight_bps}]); rank and
        target modules come from its adapter_config.json, the id from its content."""
        import json

        from .attribution import INDEX_FILE, read_index_file
        from .model.adapters import adapter_id_of_blobs, adapter_to_blobs, check_adapter_targets

        config_bytes, weights = adapter_to_blobs(path)
        config = json.loads(config_bytes)
        base = (await self.model(str(manifest.get("base_model", "")))).model_id
        check_adapter_targets({}, config.get("target_modules"), f"{path}/adapter_config.json")
        trained_for = str(config.get("base_model_name_or_path") or "")
        if len(trained_for) == 64 and trained_for != base:
            raise ValueError(
                f"{path}/adapter_config.json: the adapter was trained for base model {trained_for[:12]}…, "
                f"not {base[:12]}…"
            )
        index_id, index = read_index_file(path)
        named = str(manifest.get("attribution_index") or "")
        if named and named != index_id:
            raise ValueError(
                f"the manifest names attribution index {named[:12]}…, but {path}/{INDEX_FILE} "
                f"{'hashes to ' + index_id[:12] + '…' if index_id else 'is missing'}"
            )
        record = p.AdapterManifest(
            adapter_id=adapter_id_of_blobs(config_bytes, weights),
            name=manifest["name"],
            base_model_id=base,
            owner_address=manifest.get("owner_address") or self.address,
            license=manifest.get("license", "apache-2.0"),
            contributors=[p.Contributor(**c) for c in manifest["contributors"]],
            rank=int(config.get("r", 8)),
            target_modules=sorted(config.get("target_modules") or []),
            registered_at=time.time(),
            attribution_index=index_id,
        )
        upload = p.AdapterPut(manifest=record, config=config_bytes, weights=weights, attribution=index)
        return await self._request(p.DATASTORE_ADAPTER_PUT, upload, timeout=60)

    # -- datanets --------------------------------------------------------------

    async def create_datanet(self, name: str, description: str = "") -> p.DatanetVersion:
        return await self._request(p.DATASTORE_DATANET_CREATE, p.DatanetCreate(name=name, description=description))

    async def contribute(
        self, datanet: str, records: bytes, payout_address: str = "", license: str = "cc-by-4.0"
    ) -> p.DatanetVersion:
        """Sign `records` (chat or text JSONL) as this client's contribution to `datanet`; the new version."""
        contribution = p.Contribution(
            datanet=datanet,
            contributor_key=self.identity.public,
            payout_address=payout_address or self.address,
            license=license,
            records=records,
            created_at=time.time(),
        )
        return await self._request(p.DATASTORE_DATANET_CONTRIBUTE, sign(contribution, self.identity), timeout=60)

    async def record_datanet(self, name: str, version: int) -> p.DatanetAnchor:
        """Have a datanet version's Merkle root recorded on chain (once; again returns the first record)."""
        return await self._request(p.SETTLEMENT_DATANET_RECORD, p.DatanetRecord(name=name, version=version), timeout=60)

    async def contribution_records(self, contribution_id: str) -> bytes:
        """A contribution's records (JSONL), hash-checked by the datastore."""
        reply = await self._request(
            p.DATASTORE_CONTRIBUTION_GET, p.ContributionGet(contribution_id=contribution_id), timeout=60
        )
        return reply.records

    async def datanet(self, name: str, version: int = -1) -> p.DatanetVersion:
        return await self._request(p.DATASTORE_DATANET_GET, p.DatanetGet(name=name, version=version))

    async def balance(self, address: str | None = None) -> p.Balance:
        return await self._request(p.SETTLEMENT_BALANCE, p.BalanceGet(address=address or self.address))

    async def stake_of_key(self, ed25519_key: bytes) -> p.Stake:
        """The stake and Registry declaration of the node that bound this Ed25519 key."""
        return await self._request(p.SETTLEMENT_STAKE, p.StakeGet(ed25519_key=ed25519_key.hex()))

    async def claim(self, address: str | None = None) -> p.Claimed:
        """Have the settler claim a data contributor's balance into its credit (only that address is paid)."""
        return await self._request(p.SETTLEMENT_CLAIM, p.ClaimBalance(address=address or self.address), timeout=60)

    async def faucet(self, amount: int, escrow: int) -> p.Balance:
        return await self._request(
            p.SETTLEMENT_FAUCET, p.Faucet(address=self.address, amount=amount, escrow=escrow), timeout=60
        )

    async def job(self, job_id: str) -> p.JobRecord:
        """The record of one of this client's jobs (the datastore answers no other client's)."""
        return await self._request(
            p.DATASTORE_JOB_GET, p.JobGet(job_id=job_id), to=p.datastore_job_get(self.identity.public)
        )

    def build(
        self,
        *,
        model_id: str,
        adapter_id: str,
        prompt: str,
        max_tokens: int,
        sampling: p.SamplingParams | None = None,
        max_fee: int = DEFAULT_MAX_FEE,
        ttl_s: float = 600.0,
        region: str = "",
        job_id: str | None = None,
        tokenizer_id: str = "",
    ) -> p.JobRequest:
        now = time.time()
        job = p.JobRequest(
            job_id=job_id or p.new_job_id(),
            client_key=self.identity.public,
            client_address=self.address,
            model_id=model_id,
            adapter_id=adapter_id,
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=sampling or p.SamplingParams(),
            max_fee=max_fee,
            created_at=now,
            expires_at=now + ttl_s,
            region=region,
            tokenizer_id=tokenizer_id,
        )
        return sign(job, self.identity)

    async def publish(self, job: p.JobRequest) -> None:
        ack = await self.js.publish(p.JOBS_SUBMIT.pattern, codec.encode(job), headers={"Nats-Msg-Id": job.job_id})
        if ack.duplicate:
            raise JobFailed(f"job id {job.job_id} was already submitted")

    async def nodes(self, model_id: str = "") -> list[p.NodeHeartbeat]:
        """Live nodes (fresh, correctly signed heartbeats), serving `model_id` if given."""
        return await live_nodes(self.js, model_id)

    async def verifiers(self, model_id: str = "") -> list[p.VerifierAnnouncement]:
        """Verifiers that announced their key recently (signed), for `model_id` if given: a confidential job's
        committee."""
        return await fresh_announcements(self.js, p.VERIFIERS_BUCKET, p.VerifierAnnouncement, model_id)

    async def committee(self, model_id: str) -> list[bytes]:
        """The keys a confidential prompt is sealed to: the announced verifiers registered in the Registry
        (settlement.stake by key); on a network that registers none, every announced one."""
        announced = [v.verifier_key for v in await self.verifiers(model_id)]
        registered = []
        for key in announced:
            try:
                if (await self.stake_of_key(key)).verifier:
                    registered.append(key)
            except (RemoteError, TimeoutError, nats.errors.Error):
                pass  # no settlement to ask: the announced committee
        return registered or announced

    async def seal_for(self, job: p.JobRequest, node_id: str = "") -> p.JobRequest:
        """The confidential form of an unsigned job: its prompt sealed to one node and the committee, signed.

        The node: `node_id`, else a live node serving the model (region-matched if the job names one), with
        the adapter hot first, then the most free slots.  The committee: every verifier announced for the model."""
        nodes = [hb for hb in await self.nodes(job.model_id) if not job.region or hb.region == job.region]
        if node_id:
            nodes = [hb for hb in nodes if hb.node_id == node_id]
        if not nodes:
            raise JobFailed(
                f"no live node{' ' + node_id if node_id else ''} serves model {job.model_id[:12]}… to seal a "
                "confidential job to"
            )
        node = min(
            nodes,
            key=lambda hb: (
                bool(job.adapter_id) and job.adapter_id not in hb.adapters_hot,
                -hb.slots_free,
                hb.queue_depth,
                hb.node_id,
            ),
        )
        committee = await self.committee(job.model_id)
        if not committee:
            raise JobFailed(
                f"no verifier has announced a key for model {job.model_id[:12]}… (KV {p.VERIFIERS_BUCKET!r})"
            )
        sealed = confidential.seal_prompt(job.job_id, job.client_key, job.prompt, node.node_key, committee)
        job = job.model_copy(update={"prompt": "", "sealed_prompt": sealed, "node_id": node.node_id, "signature": b""})
        return sign(p.JobRequest.model_validate(job.model_dump()), self.identity)

    async def submit(
        self,
        adapter: str,
        prompt: str,
        max_tokens: int = 32,
        *,
        model: str = "",
        sampling: p.SamplingParams | None = None,
        max_fee: int = DEFAULT_MAX_FEE,
        region: str = "",
        confidential: bool = False,
        node_id: str = "",
        chat: bool = False,
    ) -> str:
        """Resolve `adapter` (id, registered name, or "" for the base model), sign and submit; returns the job id.

        `chat`: `prompt` is one user turn, rendered through the base model's chat template (from its registry
        record); the job names the model's tokenizer, so a node or model with another is refused.

        `confidential`: seal the prompt to one live node (`node_id`, or one picked from the registry) and the
        verifier committee; only they, and the client for the output, can read the job (see `seal_for`)."""
        if not prompt.strip():
            raise Invalid("must not be empty", "message" if chat else "prompt")
        if adapter:
            manifest = await self.adapter(adapter)
            adapter_id, base = manifest.adapter_id, await self.model(manifest.base_model_id)
            if model and model not in (base.name, base.model_id):
                raise JobFailed(f"adapter {manifest.name} is trained for base model {base.name}, not {model}")
        else:
            adapter_id, base = "", await self.model(model)
        if chat:
            if not base.chat_template:
                raise JobFailed(f"model {base.name} has no chat template in its registry record")
            prompt = render_chat(base.chat_template, [{"role": "user", "content": prompt}])
        job = self.build(
            model_id=base.model_id,
            adapter_id=adapter_id,
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=sampling,
            max_fee=max_fee,
            region=region,
            tokenizer_id=base.tokenizer_id,
        )
        if confidential:
            job = await self.seal_for(job, node_id)
        await self.publish(job)
        return job.job_id

    async def wait(
        self, job_id: str, timeout: float = 300.0, on_event: Callable[[p.JobEvent], None] | None = None
    ) -> Outcome:
        """Follow jobs.events.<client_id>.<job_id> to a terminal stage, then read the full record.

        The consumer is named, so nats-py creates it through the filtered API subject
        ($JS.API.CONSUMER.CREATE.EVENTS.<name>.<filter>): the only form a client's NATS identity may use."""
        done = asyncio.Event()
        final: list[p.JobEvent] = []

        async def on_msg(msg: Any) -> None:
            try:
                event = codec.decode(p.JobEvent, msg.data)
            except codec.DecodeError:
                return
            if on_event:
                on_event(event)
            if event.stage in p.TERMINAL_STAGES:
                final.append(event)
                done.set()

        config = ConsumerConfig(name=f"wait-{NUID().next().decode()}", inactive_threshold=30.0)
        sub = await self.js.subscribe(
            p.job_events(self.identity.public, job_id),
            stream="EVENTS",
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=on_msg,
            config=config,
        )
        give_up = time.monotonic() + timeout
        try:
            while not done.is_set():
                left = give_up - time.monotonic()
                if left <= 0:
                    raise JobFailed(f"job {job_id} did not finish within {timeout:.0f}s")
                try:
                    await asyncio.wait_for(done.wait(), min(left, WAIT_RECHECK_S))
                except TimeoutError:
                    # Quiet for a while: if the consumer was lost (an ordered consumer re-created after
                    # a reconnect cannot reuse its name), the record still says how the job ended.
                    try:
                        record = await self.job(job_id)
                    except (RemoteError, nats.errors.Error):
                        continue
                    if record.status in p.TERMINAL_STAGES:
                        return outcome_of(record, self.identity)
        finally:
            await sub.unsubscribe()
        # The datastore records events asynchronously: read until it has the terminal stage.
        deadline = time.monotonic() + 10
        while True:
            try:
                record = await self.job(job_id)
                if record.status in p.TERMINAL_STAGES or time.monotonic() > deadline:
                    return outcome_of(record, self.identity)
            except RemoteError:
                if time.monotonic() > deadline:
                    return Outcome(job_id=job_id, status=final[0].stage, reason=final[0].reason)
            await asyncio.sleep(0.1)
