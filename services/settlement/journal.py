"""The epoch settlement is committing, written down before any transaction is sent.

A commit is one settle_batch (seq + its jobs) or one refund (job ids + why).
Settlement puts it in the NATS KV bucket `settlement` (key `pending`) before
sending, and clears it once every receipt is published. After a crash the
record says what may be on chain without its receipts; handlers.SettlementService
reconciles it with the contract (`last_seq`, the BatchSettled log of that seq,
`job_states`) before it takes any new verdict. Only one commit is in flight at
a time, so one key suffices. The bucket also keeps the verdicts of runs still
short of their quorum, with the committee drawn for them (key `votes.<job_id>[.<attempt>]`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import msgpack
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from .packing import SettleJob

PENDING_KEY = "pending"
VOTES_PREFIX = "votes."
FLAGS_PREFIX = "flags."
ATTEMPTS_PREFIX = "attempts."


@dataclass(frozen=True)
class Attempts:
    """A job re-run after rejected results: its current attempt, every node that failed it and their
    operators (payout addresses)."""

    attempt: int = 0
    failed: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return json.dumps(
            {"v": 1, "attempt": self.attempt, "failed": list(self.failed), "operators": list(self.operators)},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Attempts:
        raw = json.loads(data)
        if raw.get("v") != 1:
            raise ValueError(f"unknown attempts record version {raw.get('v')!r}")
        return cls(
            attempt=int(raw["attempt"]),
            failed=tuple(str(n) for n in raw["failed"]),
            operators=tuple(str(a) for a in raw.get("operators", ())),
        )


@dataclass(frozen=True)
class Votes:
    """A run's verdicts so far (encoded) and the committee drawn for it (verifier id → key; None: none
    drawn yet, or none needed)."""

    verdicts: tuple[bytes, ...] = ()
    members: dict[str, bytes] | None = None

    def encode(self) -> bytes:
        return msgpack.packb({"v": 2, "verdicts": list(self.verdicts), "members": self.members}, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Votes:
        raw = msgpack.unpackb(data)
        if isinstance(raw, list):  # the first format: the verdicts alone
            return cls(tuple(raw))
        if raw.get("v") != 2:
            raise ValueError(f"unknown votes record version {raw.get('v')!r}")
        members = raw.get("members")
        return cls(tuple(raw["verdicts"]), None if members is None else {str(k): bytes(v) for k, v in members.items()})


@dataclass(frozen=True)
class PendingCommit:
    """What is about to go on chain: batch `seq` of `settles`, or a refund of `refunds`."""

    seq: int = 0  # 0 for a refund
    settles: tuple[SettleJob, ...] = ()
    refunds: tuple[tuple[str, str], ...] = ()  # (job_id hex, reason)
    created_at: float = field(default_factory=time.time)
    # job id → its client's id (hex key): the subject of the receipt's job event, jobs.events.<client_id>.*
    clients: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "seq": self.seq,
                "created_at": self.created_at,
                "settles": [_job_to_json(j) for j in self.settles],
                "refunds": [list(r) for r in self.refunds],
                "clients": self.clients,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> PendingCommit:
        raw = json.loads(data)
        if raw.get("v") != 1:
            raise ValueError(f"unknown journal record version {raw.get('v')!r}")
        return cls(
            seq=int(raw["seq"]),
            settles=tuple(_job_from_json(j) for j in raw["settles"]),
            refunds=tuple((str(a), str(b)) for a, b in raw["refunds"]),
            created_at=float(raw["created_at"]),
            clients={str(k): str(v) for k, v in raw.get("clients", {}).items()},
        )


def _job_to_json(job: SettleJob) -> dict:
    # Amounts as decimal strings, like on the wire.
    return {
        "job_id": job.job_id.hex(),
        "client": job.client,
        "fee": str(job.fee),
        "max_fee": str(job.max_fee),
        "node": job.node,
        "developer": job.developer,
        "verifiers": list(job.verifiers),
        "contributors": [[a, w] for a, w in job.contributors],
    }


def _job_from_json(raw: dict) -> SettleJob:
    return SettleJob(
        job_id=bytes.fromhex(raw["job_id"]),
        client=raw["client"],
        fee=int(raw["fee"]),
        max_fee=int(raw["max_fee"]),
        node=raw["node"],
        developer=raw["developer"],
        verifiers=tuple(raw["verifiers"]),
        contributors=tuple((a, int(w)) for a, w in raw["contributors"]),
    )


class Journal:
    """The pending commit in a KV bucket; `put` returns once JetStream has stored it."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def put(self, commit: PendingCommit) -> None:
        await self.kv.put(PENDING_KEY, commit.encode())

    async def get(self) -> PendingCommit | None:
        try:
            entry = await self.kv.get(PENDING_KEY)
        except KeyNotFoundError:  # also raised for a deleted key
            return None
        if not entry.value:
            return None
        return PendingCommit.decode(entry.value)

    async def clear(self) -> None:
        await self.kv.delete(PENDING_KEY)

    # With a verifier quorum above 1, a job's verdicts arrive one by one and each is acknowledged
    # before the quorum is reached: they are kept here, so a restart does not forget them.

    # A job whose result was finally rejected and that was sent to another node: its attempt and the
    # nodes that failed it (key attempts.<job_id>), written before the re-run is published.

    async def attempts(self, job_id: str) -> Attempts:
        try:
            entry = await self.kv.get(ATTEMPTS_PREFIX + job_id)
        except KeyNotFoundError:
            return Attempts()
        return Attempts.decode(entry.value) if entry.value else Attempts()

    async def all_attempts(self) -> dict[str, Attempts]:
        """Every job's attempts record (read once at start)."""
        return {name: await self.attempts(name) for name in await self._names(ATTEMPTS_PREFIX)}

    async def _names(self, prefix: str) -> list[str]:
        """The names of the bucket's records under `prefix` (the prefix taken off)."""
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        return [k[len(prefix) :] for k in keys if k.startswith(prefix)]

    async def put_attempts(self, job_id: str, attempts: Attempts) -> None:
        await self.kv.put(ATTEMPTS_PREFIX + job_id, attempts.encode())

    async def votes(self, key: str) -> Votes:
        """The encoded verdicts counted so far for run `key` and its committee (empty if none)."""
        try:
            entry = await self.kv.get(VOTES_PREFIX + key)
        except KeyNotFoundError:
            return Votes()
        return Votes.decode(entry.value) if entry.value else Votes()

    async def all_votes(self) -> dict[str, Votes]:
        """Every run still short of its quorum (read once at start)."""
        return {name: await self.votes(name) for name in await self._names(VOTES_PREFIX)}

    async def put_votes(self, key: str, votes: Votes) -> None:
        await self.kv.put(VOTES_PREFIX + key, votes.encode())

    # Verifiers' flags on one node's statistics (key flags.<node key hex>): kept until enough agree, then
    # the evidence the node was slashed with (so a later flag does not slash it again).

    async def node_flags(self, node_key: bytes) -> tuple[list[bytes], bytes]:
        """(encoded flags so far, the evidence it was slashed with or b"")."""
        try:
            entry = await self.kv.get(FLAGS_PREFIX + node_key.hex())
        except KeyNotFoundError:
            return [], b""
        raw = msgpack.unpackb(entry.value) if entry.value else {}
        return list(raw.get("flags", [])), bytes(raw.get("slashed", b""))

    async def put_node_flags(self, node_key: bytes, flags: list[bytes], slashed: bytes = b"") -> None:
        await self.kv.put(
            FLAGS_PREFIX + node_key.hex(), msgpack.packb({"flags": flags, "slashed": slashed}, use_bin_type=True)
        )

    async def clear_votes(self, job_id: str) -> None:
        await self.kv.delete(VOTES_PREFIX + job_id)
