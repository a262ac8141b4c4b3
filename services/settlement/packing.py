"""The calldata of Settlement.settle_batch and Settlement.reserve, both ways.

A batch is a party table (every client, node, developer and verifier it
touches, once) and two packed 256-bit words per job that refer to parties by
16-bit index:

    w0 = job_id:128 | fee:96 | client:16 | node:16
    w1 = max_fee:96 | developer:16 | n_verifiers:8 | data:8
         | verifier[0..7]:16 each, the first in the high bits

data = 1 when the job's contributor pool goes to its data contributors: the
batch's pools are divided among them by the pooled words (balances.py), each
job's share by its answer's attribution (`SettleJob.contributors`, recorded
with the job's receipt; the contract checks the sum). `decode_batch` gives the
jobs back (without that division), `loranet.split.split_fee` each job's
payouts, and the BatchSettled event (whose transaction hash commits to the
calldata) carries the job ids' Merkle root (services/settlement/merkle.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eth_utils import to_checksum_address

from loranet.split import MAX_CONTRIBUTORS, MAX_FEE, MAX_VERIFIERS, check_weights, split_fee

# Limits of Settlement.vy.
MAX_JOBS = 256
MAX_PARTIES = 512


class BatchTooLarge(ValueError):
    """A batch over one of the contract's bounds: settle it in parts."""


_M16 = (1 << 16) - 1
_M96 = (1 << 96) - 1


def job_id_bytes(job_id: bytes | str) -> bytes:
    """A job id as 16 bytes, from bytes or 32 hex characters (with or without 0x)."""
    if isinstance(job_id, str):
        text = job_id[2:] if job_id.startswith("0x") else job_id
        try:
            job_id = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"job id {text!r} is not hex") from None
    if len(job_id) != 16:
        raise ValueError(f"job id must be 16 bytes (32 hex characters), got {len(job_id)} bytes")
    if not any(job_id):
        raise ValueError("job id must not be zero")
    return bytes(job_id)


def _address(value: str, what: str) -> str:
    try:
        address = to_checksum_address(value)
    except (ValueError, TypeError):
        raise ValueError(f"{what}: {value!r} is not an Ethereum address") from None
    if int(address, 16) == 0:
        raise ValueError(f"{what}: the zero address cannot be paid or charged")
    return address


@dataclass(frozen=True)
class SettleJob:
    """One verified job as settle_batch charges and pays it."""

    job_id: bytes
    client: str
    fee: int
    max_fee: int
    node: str
    developer: str
    verifiers: tuple[str, ...] = ()
    contributors: tuple[tuple[str, int], ...] = ()  # (address, weight_bps), weights sum to 10000

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "job_id", job_id_bytes(self.job_id))
        set_(self, "client", _address(self.client, "client"))
        set_(self, "node", _address(self.node, "node"))
        set_(self, "developer", _address(self.developer, "developer"))
        set_(self, "verifiers", tuple(_address(v, "verifier") for v in self.verifiers))
        set_(self, "contributors", tuple((_address(a, "contributor"), int(w)) for a, w in self.contributors))
        if not 0 <= self.max_fee <= MAX_FEE:
            raise ValueError(f"job {self.job_id.hex()}: max_fee {self.max_fee} is outside 0..2**96-1")
        if not 0 <= self.fee <= self.max_fee:
            raise ValueError(f"job {self.job_id.hex()}: fee {self.fee} must be in 0..max_fee ({self.max_fee})")
        if len(self.verifiers) > MAX_VERIFIERS:
            raise ValueError(f"job {self.job_id.hex()}: {len(self.verifiers)} verifiers, at most {MAX_VERIFIERS}")
        if len(self.contributors) > MAX_CONTRIBUTORS:
            raise ValueError(
                f"job {self.job_id.hex()}: {len(self.contributors)} contributors, at most {MAX_CONTRIBUTORS}"
            )
        check_weights(w for _, w in self.contributors)

    def payouts(self, treasury: str) -> dict[str, int]:
        """This job's fee split per address (loranet.split.split_fee)."""
        return split_fee(self.fee, list(self.contributors), list(self.verifiers), self.node, self.developer, treasury)


@dataclass(frozen=True)
class Reservation:
    """A job's max fee locked in its client's escrow at admission."""

    job_id: bytes
    client: str
    max_fee: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "job_id", job_id_bytes(self.job_id))
        object.__setattr__(self, "client", _address(self.client, "client"))
        if not 0 <= self.max_fee <= MAX_FEE:
            raise ValueError(f"job {self.job_id.hex()}: max_fee {self.max_fee} is outside 0..2**96-1")


class _PartyTable:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, address: str) -> int:
        i = self._index.get(address)
        if i is None:
            i = len(self.addresses)
            if i >= MAX_PARTIES:
                raise BatchTooLarge(f"a batch touches at most {MAX_PARTIES} distinct addresses; split it")
            self._index[address] = i
            self.addresses.append(address)
        return i


def encode_batch(jobs: Sequence[SettleJob]) -> tuple[list[str], list[int]]:
    """(parties, words) for settle_batch; raises BatchTooLarge over the contract's limits."""
    if not jobs:
        raise ValueError("a batch needs at least one job")
    if len(jobs) > MAX_JOBS:
        raise BatchTooLarge(f"{len(jobs)} jobs in one batch; at most {MAX_JOBS}")
    party = _PartyTable()
    words: list[int] = []
    for job in jobs:
        w0 = (int.from_bytes(job.job_id, "big") << 128) | (job.fee << 32) | (party(job.client) << 16) | party(job.node)
        w1 = (job.max_fee << 160) | (party(job.developer) << 144)
        w1 |= (len(job.verifiers) << 136) | ((1 if job.contributors else 0) << 128)
        for k, verifier in enumerate(job.verifiers):
            w1 |= party(verifier) << (112 - 16 * k)
        words += [w0, w1]
    return party.addresses, words


def decode_batch(parties: Sequence[str], words: Sequence[int]) -> list[tuple[SettleJob, bool]]:
    """The jobs of a settle_batch call, from its decoded calldata arguments, each with whether its
    contributor pool went to the data contributors (their division is not in the job words)."""
    jobs: list[tuple[SettleJob, bool]] = []
    for i in range(0, len(words) - 1, 2):
        w0, w1 = words[i], words[i + 1]
        nv = (w1 >> 136) & 0xFF
        job = SettleJob(
            job_id=(w0 >> 128).to_bytes(16, "big"),
            client=parties[(w0 >> 16) & _M16],
            fee=(w0 >> 32) & _M96,
            max_fee=w1 >> 160,
            node=parties[w0 & _M16],
            developer=parties[(w1 >> 144) & _M16],
            verifiers=tuple(parties[(w1 >> (112 - 16 * k)) & _M16] for k in range(nv)),
        )
        jobs.append((job, bool((w1 >> 128) & 0xFF)))
    return jobs


def encode_reservations(reservations: Iterable[Reservation]) -> tuple[list[str], list[int]]:
    """(clients, words) for Settlement.reserve: job_id:128 | max_fee:96 | client:16 | 0:16."""
    party = _PartyTable()
    words = [
        (int.from_bytes(r.job_id, "big") << 128) | (r.max_fee << 32) | (party(r.client) << 16) for r in reservations
    ]
    if not words:
        raise ValueError("nothing to reserve")
    if len(words) > MAX_JOBS:
        raise ValueError(f"{len(words)} reservations in one call; at most {MAX_JOBS}")
    return party.addresses, words
