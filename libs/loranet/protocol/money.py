"""Settlement's requests: balances, stakes, escrow reservations, the devnet faucet."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from ..codec import AdditiveWire, Wire
from .base import Address, JobId, Name, ShortText, Wei


class BalanceGet(Wire):
    v: Literal[1] = 1
    address: Address


class Balance(Wire):
    v: Literal[1] = 1
    address: Address
    token: Wei  # OPEN held in the wallet
    escrow: Wei  # deposited for jobs
    credit: Wei  # earned, withdrawable
    stake: Wei = 0
    claimable: Wei = 0  # a data contributor's balance in the balances tree, not yet claimed into credit


class ClaimBalance(Wire):
    """Move an address's unclaimed data-contributor balance into its credit (settlement.claim: the settler
    sends Settlement.claim, which pays only that address)."""

    v: Literal[1] = 1
    address: Address


class Claimed(Wire):
    v: Literal[1] = 1
    address: Address
    amount: Wei  # credited by this claim (0: nothing new)
    tx_hash: Annotated[str, StringConstraints(pattern=r"^(0x[0-9a-f]{64})?$")] = ""
    credit: Wei = 0  # the address's credit after it


ZERO_ADDRESS = "0x" + "0" * 40
Ed25519Hex = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")]


class StakeGet(Wire):
    """A node's stake and declaration, by its staking address or by the Ed25519 key it bound."""

    v: Literal[1] = 1
    address: Address = ZERO_ADDRESS
    ed25519_key: Ed25519Hex = ""  # given: the node that bound this key (address is then ignored)

    @model_validator(mode="after")
    def _one_of(self) -> StakeGet:
        if not self.ed25519_key and int(self.address, 16) == 0:
            raise ValueError("give an address or an ed25519_key")
        return self


class Stake(AdditiveWire):
    """A node's stake in the Registry (settlement.stake)."""

    v: Literal[1] = 1
    address: Address
    stake: Wei
    unbonding: Wei = 0
    unbonding_until: Annotated[int, Field(ge=0)] = 0  # chain timestamp when the unbonding part can be withdrawn
    active: bool = False  # staked at least min_stake
    payout: Address = ZERO_ADDRESS
    ed25519_key: Ed25519Hex = ""
    min_stake: Wei = 0
    # What the node declared in the Registry (the network's map; empty device: nothing declared).
    device: Annotated[str, StringConstraints(max_length=64)] = ""
    memory_mb: Annotated[int, Field(ge=0)] = 0
    region: Annotated[str, StringConstraints(max_length=32)] = ""
    price: Wei = 0  # OPEN wei per million tokens
    verifier: bool = False  # a registered verifier (Registry.register_verifier), active
    dtype: Annotated[str, StringConstraints(max_length=16)] = ""  # declared precision of its weights

    _additive = ("dtype",)


class Reserve(Wire):
    """Admission: lock a job's max fee in its client's escrow (settlement.reserve)."""

    v: Literal[1] = 1
    job_id: JobId
    client_address: Address
    max_fee: Wei


class Release(AdditiveWire):
    """A reserved job that will never be verified (expired, failed): refund it (settlement.release)."""

    v: Literal[1] = 1
    job_id: JobId
    reason: ShortText = ""
    # Additive: the job's client key, which names the subject of its refund event (jobs.events.<client_id>.*);
    # without it settlement finds the client from the job's earlier events.
    client_key: Annotated[bytes, Field(max_length=32)] = b""

    _additive = ("client_key",)


class Reservation(Wire):
    """Reply to settlement.reserve: the job's state on chain and the client's escrow left unreserved."""

    v: Literal[1] = 1
    job_id: JobId
    state: Literal["reserved", "settled", "refunded"]
    available: Wei = 0


class Faucet(Wire):
    """Devnet only: give `address` OPEN and deposit `escrow` of it for jobs."""

    v: Literal[1] = 1
    address: Address
    amount: Wei
    escrow: Wei = 0


class EpochList(Wire):
    """The most recent settled epochs (settlement batches) on chain, newest first."""

    v: Literal[1] = 1
    limit: Annotated[int, Field(ge=1, le=200)] = 20


class EpochSummary(Wire):
    v: Literal[1] = 1
    seq: Annotated[int, Field(ge=0)]
    tx_hash: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
    block: Annotated[int, Field(ge=0)]
    jobs: Annotated[int, Field(ge=0)]
    total_fees: Wei
    merkle_root: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
    at: Annotated[int, Field(ge=0)] = 0  # the block's timestamp


class EpochListReply(Wire):
    v: Literal[1] = 1
    epochs: Annotated[list[EpochSummary], Field(max_length=200)]


class DatanetRecord(Wire):
    """Record a datanet version's Merkle root on chain (settlement reads the version from the datastore)."""

    v: Literal[1] = 1
    name: Name
    version: Annotated[int, Field(ge=1)]


class DatanetAnchor(Wire):
    v: Literal[1] = 1
    name: Name
    version: Annotated[int, Field(ge=1)]
    merkle_root: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
    tx_hash: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
    block: Annotated[int, Field(ge=0)]
