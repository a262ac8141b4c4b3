"""Redis access for the datastore (redis.asyncio).  Key layout: see domain.py and README.md.

Every method turns a lost Redis into ServiceError("unavailable"), so a caller
gets an answer it can retry on instead of a crashed service; redis-py
reconnects on the next command once Redis is back.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from loranet import codec
from loranet import protocol as p
from loranet.errors import HashMismatch, ServiceError

from . import domain
from .settings import DatastoreSettings

P = ParamSpec("P")
T = TypeVar("T")


class BlobCorrupted(HashMismatch):
    """A stored blob does not hash to its key: never serve it."""

    def __init__(self, sha: str, detail: str) -> None:
        super().__init__(f"blob {sha}: {detail}")
        self.sha = sha
        self.detail = detail


def _guarded(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
            raise ServiceError(
                "unavailable", f"the registry's Redis is unreachable ({type(exc).__name__}); retry shortly"
            ) from None

    return call


# Registers a model or adapter atomically: the id's record, the name claim and
# the index sets, or nothing.  KEYS: record, name, index sets...
# ARGV: id, digest, manifest bytes, extra record fields (name, value)...
_REGISTER = """
local digest = redis.call('HGET', KEYS[1], 'digest')
if digest then
  if digest == ARGV[2] then return {'exists', redis.call('HGET', KEYS[1], 'manifest')} end
  return {'conflict_id', ''}
end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return {'conflict_name', owner} end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'digest', ARGV[2], 'manifest', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[1]) end
return {'created', ARGV[3]}
"""


class RegistryStore:
    def __init__(self, client: aioredis.Redis, settings: DatastoreSettings) -> None:
        self.redis: Any = client  # bytes in, bytes out (decode_responses=False): redis-py types it as bytes | str
        self.settings = settings
        self._register = client.register_script(_REGISTER)

    @classmethod
    def from_settings(cls, settings: DatastoreSettings) -> RegistryStore:
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            decode_responses=False,
        )
        return cls(client, settings)

    async def close(self) -> None:
        await self.redis.aclose()

    @_guarded
    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- registry ----------------------------------------------------------

    async def _commit(self, keys: list[str], record_id: str, manifest: Any, extra: list[str]) -> tuple[str, bytes]:
        stamped = manifest.model_copy(update={"registered_at": time.time()})
        outcome, value = await self._register(
            keys=keys, args=[record_id, domain.manifest_digest(manifest), codec.encode(stamped), *extra]
        )
        return outcome.decode(), value

    @_guarded
    async def put_model(self, manifest: p.ModelManifest) -> tuple[bool, p.ModelManifest]:
        """Register; (created?, the stored manifest).  Same content again is a no-op."""
        outcome, value = await self._commit(
            [domain.model_key(manifest.model_id), domain.model_name_key(manifest.name)], manifest.model_id, manifest, []
        )
        if outcome == "conflict_id":
            raise ServiceError(
                "conflict", f"model {manifest.model_id} is registered with a different manifest", "manifest"
            )
        if outcome == "conflict_name":
            raise ServiceError(
                "conflict", f"model name {manifest.name!r} belongs to model {value.decode()}", "manifest.name"
            )
        return outcome == "created", codec.decode(p.ModelManifest, value)

    @_guarded
    async def get_model(self, model: str) -> p.ModelManifest | None:
        model_id = model if domain.is_content_id(model) else await self._name_to_id(domain.model_name_key(model))
        raw = await self.redis.hget(domain.model_key(model_id), "manifest") if model_id else None
        return codec.decode(p.ModelManifest, raw) if raw else None

    async def _name_to_id(self, name_key: str) -> str:
        raw = await self.redis.get(name_key)
        return raw.decode() if raw else ""

    @_guarded
    async def put_adapter(
        self, manifest: p.AdapterManifest, config: bytes, weights: bytes, attribution: bytes = b""
    ) -> tuple[bool, p.AdapterManifest]:
        """Store the blobs (content-addressed, so rewriting heals a damaged copy), then register."""
        stored = await self.redis.hget(domain.adapter_key(manifest.adapter_id), "digest")
        if stored is not None and stored.decode() != domain.manifest_digest(manifest):
            # Refuse before writing any blob.
            raise ServiceError(
                "conflict", f"adapter {manifest.adapter_id} is registered with a different manifest", "manifest"
            )
        config_sha = await self._put_blob(config)
        weights_sha = await self._put_blob(weights)
        if attribution:  # content-addressed: manifest.attribution_index is its sha256
            await self._put_blob(attribution)
        keys = [
            domain.adapter_key(manifest.adapter_id),
            domain.adapter_name_key(manifest.name),
            domain.ADAPTERS_ALL,
            domain.adapters_by_base_key(manifest.base_model_id),
            domain.adapters_by_owner_key(manifest.owner_address),
        ]
        outcome, value = await self._commit(
            keys, manifest.adapter_id, manifest, ["config_sha", config_sha, "weights_sha", weights_sha]
        )
        if outcome == "conflict_id":
            raise ServiceError(
                "conflict", f"adapter {manifest.adapter_id} is registered with a different manifest", "manifest"
            )
        if outcome == "conflict_name":
            raise ServiceError(
                "conflict", f"adapter name {manifest.name!r} belongs to adapter {value.decode()}", "manifest.name"
            )
        return outcome == "created", codec.decode(p.AdapterManifest, value)

    @_guarded
    async def resolve_adapter(self, adapter: str) -> str:
        """The adapter_id for an id or a registered name ("" if unknown)."""
        adapter_id = (
            adapter if domain.is_content_id(adapter) else await self._name_to_id(domain.adapter_name_key(adapter))
        )
        if adapter_id and await self.redis.exists(domain.adapter_key(adapter_id)):
            return adapter_id
        return ""

    @_guarded
    async def get_adapter(self, adapter_id: str) -> p.AdapterManifest | None:
        raw = await self.redis.hget(domain.adapter_key(adapter_id), "manifest")
        return codec.decode(p.AdapterManifest, raw) if raw else None

    @_guarded
    async def list_adapters(self, base_model_id: str = "", owner_address: str = "") -> list[p.AdapterManifest]:
        sets = [domain.adapters_by_base_key(base_model_id)] if base_model_id else []
        if owner_address:
            sets.append(domain.adapters_by_owner_key(owner_address))
        ids = await (self.redis.sinter(sets) if sets else self.redis.smembers(domain.ADAPTERS_ALL))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for adapter_id in ids:
                pipe.hget(domain.adapter_key(adapter_id.decode()), "manifest")
            raws = await pipe.execute()
        manifests = [codec.decode(p.AdapterManifest, raw) for raw in raws if raw]
        return sorted(manifests, key=lambda m: m.name)

    @_guarded
    async def adapter_blobs(self, adapter_id: str) -> tuple[bytes, bytes] | None:
        """(config, weights) of a registered adapter, each checked against its sha256; BlobCorrupted if not."""
        shas = await self.redis.hmget(domain.adapter_key(adapter_id), ["config_sha", "weights_sha"])
        if not all(shas):
            return None
        return await self._get_blob(shas[0].decode()), await self._get_blob(shas[1].decode())

    async def _put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        size = self.settings.blob_chunk_bytes
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        async with self.redis.pipeline(transaction=True) as pipe:
            for i, chunk in enumerate(chunks):
                pipe.set(domain.blob_chunk_key(sha, i), chunk)
            pipe.hset(domain.blob_meta_key(sha), mapping={"size": len(data), "chunks": len(chunks)})
            await pipe.execute()
        return sha

    # -- datanets ------------------------------------------------------------

    @_guarded
    async def create_datanet(self, req: p.DatanetCreate) -> tuple[bool, p.DatanetVersion]:
        """Create `req.name` at version 0 (empty); (created?, its latest version). Version 0 is written first,
        then the pointer to it, so a crash in between is healed by creating again."""
        v0 = p.DatanetVersion(name=req.name, version=0, description=req.description, created_at=time.time())
        await self.redis.set(domain.datanet_version_key(req.name, 0), codec.encode(v0), nx=True)
        created = await self.redis.hsetnx(domain.datanet_key(req.name), "latest", 0)
        latest = await self.datanet_version(req.name, -1)
        assert latest is not None
        return bool(created), latest

    @_guarded
    async def datanet_version(self, name: str, version: int = -1) -> p.DatanetVersion | None:
        latest = await self.redis.hget(domain.datanet_key(name), "latest")
        if latest is None or version > int(latest):
            return None
        raw = await self.redis.get(domain.datanet_version_key(name, int(latest) if version < 0 else version))
        return codec.decode(p.DatanetVersion, raw) if raw else None

    @_guarded
    async def contribute(self, c: p.Contribution, records: int) -> tuple[bool, p.DatanetVersion]:
        """Add a checked contribution as the datanet's next version; (added?, the version that holds it).

        A payout address stays with the first key that claimed it; content stays with its first contributor;
        the same contribution again returns the version that already holds it."""
        key = c.contributor_key.hex()
        cid = c.contribution_id()
        binding = domain.payout_binding_key(c.payout_address)
        await self.redis.set(binding, key, nx=True)
        bound = (await self.redis.get(binding) or b"").decode()
        if bound != key:
            raise ServiceError(
                "forbidden",
                f"payout address {c.payout_address} belongs to contributor key {bound[:16]}…, not this one",
                "payout_address",
            )
        await self.redis.hsetnx(domain.contribution_key(cid), "contributor_key", key)
        owner = (await self.redis.hget(domain.contribution_key(cid), "contributor_key") or b"").decode()
        if owner != key:
            raise ServiceError(
                "conflict",
                f"these records ({cid[:12]}…) were contributed first by key {owner[:16]}…: the first keeps them",
                "records",
            )
        await self._put_blob(c.records)  # content-addressed: its sha256 is the contribution id
        for _ in range(50):
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(domain.datanet_key(c.datanet))
                latest = await pipe.hget(domain.datanet_key(c.datanet), "latest")
                if latest is None:
                    raise ServiceError(
                        "not_found", f"no datanet {c.datanet!r}: create it first (loranet datanet create)", "datanet"
                    )
                raw = await pipe.get(domain.datanet_version_key(c.datanet, int(latest)))
                current = codec.decode(p.DatanetVersion, raw)
                held = [v for v in current.contributions if v.contribution_id == cid]
                if held:
                    return False, current
                new = domain.next_version(current, c, records, time.time())
                pipe.multi()
                pipe.set(domain.datanet_version_key(c.datanet, new.version), codec.encode(new))
                pipe.hset(domain.datanet_key(c.datanet), "latest", new.version)
                try:
                    await pipe.execute()
                except WatchError:
                    continue  # another contribution made a version meanwhile: build on it
                return True, new
        raise ServiceError("unavailable", f"datanet {c.datanet} is busy; try again", "datanet")

    @_guarded
    async def contribution_records(self, contribution_id: str) -> bytes | None:
        """A contribution's records (hash-checked), None when no contribution has that id (other blobs,
        such as adapter weights, are not served under a contribution's name)."""
        if not await self.redis.hexists(domain.contribution_key(contribution_id), "contributor_key"):
            return None
        return await self._get_blob(contribution_id)  # its blob missing is damage, not absence

    @_guarded
    async def blob(self, sha: str) -> bytes | None:
        """A stored blob by its sha256, checked (BlobCorrupted if it fails), None when there is none."""
        if not await self.redis.exists(domain.blob_meta_key(sha)):
            return None
        return await self._get_blob(sha)

    async def _get_blob(self, sha: str) -> bytes:
        meta = await self.redis.hgetall(domain.blob_meta_key(sha))
        if not meta:
            raise BlobCorrupted(sha, "metadata missing")
        n = int(meta[b"chunks"])
        chunks = await self.redis.mget([domain.blob_chunk_key(sha, i) for i in range(n)])
        missing = [i for i, c in enumerate(chunks) if c is None]
        if missing:
            raise BlobCorrupted(sha, f"chunks {missing} of {n} missing")
        data = b"".join(chunks)
        found = hashlib.sha256(data).hexdigest()
        if found != sha or len(data) != int(meta[b"size"]):
            raise BlobCorrupted(sha, f"content hashes to {found} ({len(data)} bytes, expected {int(meta[b'size'])})")
        return data

    # -- job records -------------------------------------------------------

    @_guarded
    async def record_event(
        self, job_id: str, field: str, event: bytes, request: p.JobRequest | None, client_id: str = ""
    ) -> bool:
        """Record one event under `field` unless already there; True if new.  Refreshes retention.
        `client_id` (from the event's subject) is kept once, as the job's `client` field."""
        retention = self.settings.job_retention_s
        key = domain.job_key(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, field, event)
            if client_id:
                pipe.hsetnx(key, domain.CLIENT_FIELD, client_id)
            pipe.expire(key, retention)
            if request is not None:
                index = domain.client_jobs_key(request.client_address)
                pipe.zadd(index, {job_id: request.created_at})
                pipe.zremrangebyscore(index, "-inf", f"({time.time() - retention}")
                pipe.expire(index, retention)
            results = await pipe.execute()
        return bool(results[0])

    @_guarded
    async def job_fields(self, job_id: str) -> dict[str, bytes]:
        raw = await self.redis.hgetall(domain.job_key(job_id))
        return {k.decode(): v for k, v in raw.items()}

    @_guarded
    async def client_jobs(self, address: str, before: float, limit: int) -> list[tuple[str, dict[str, bytes]]]:
        """Newest first: (job_id, recorded fields) of a client's jobs created before `before` (0 = any).

        Index entries whose record has expired are dropped from the index as they are met."""
        index = domain.client_jobs_key(address)
        top = f"({before}" if before > 0 else "+inf"
        found: list[tuple[str, dict[str, bytes]]] = []
        offset = 0
        while len(found) < limit:
            ids = await self.redis.zrevrangebyscore(index, top, "-inf", start=offset, num=limit - len(found))
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(domain.job_key(job_id.decode()))
                records = await pipe.execute()
            expired = [j for j, r in zip(ids, records) if not r]
            found += [(j.decode(), {k.decode(): v for k, v in r.items()}) for j, r in zip(ids, records) if r]
            if expired:
                await self.redis.zrem(index, *expired)
            offset += len(ids) - len(expired)
        return found
