"""The fee split and the pricing rule: the one place they are written down.

A job's fee is split in basis points (1 bps = 1/10000):

    node operator       5000
    adapter developer   2000
    data contributors   2000, divided by the adapter's attribution weights
                              (which sum to 10000)
    verifiers            500, in equal parts among the job's verifiers
    treasury             500 plus every rounding remainder

Every share is a floor, taken in this order: node = fee*5000//10000,
developer = fee*2000//10000; the contributor pool fee*2000//10000 gives each
contributor pool*weight//10000; the verifier pool fee*500//10000 gives each
verifier pool//n_verifiers. The treasury receives the fee minus everything
above, so the shares always add up to the fee exactly. A job without verifiers
or without contributors sends that whole pool to the treasury.

services/settlement/contracts/Settlement.vy computes the same arithmetic on
chain; tests/settlement checks the two agree to the wei.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BPS = 10_000
NODE_BPS = 5_000
DEVELOPER_BPS = 2_000
CONTRIBUTORS_BPS = 2_000
VERIFIERS_BPS = 500
TREASURY_BPS = BPS - NODE_BPS - DEVELOPER_BPS - CONTRIBUTORS_BPS - VERIFIERS_BPS  # 500

# Fees travel as uint96 on the wire and on chain.
MAX_FEE = 2**96 - 1
MAX_VERIFIERS = 8
MAX_CONTRIBUTORS = 64


@dataclass(frozen=True)
class Shares:
    """One job's split by role; `by_address()` merges parties that coincide."""

    node: int
    developer: int
    contributors: tuple[int, ...]
    verifiers: tuple[int, ...]
    treasury: int

    @property
    def total(self) -> int:
        return self.node + self.developer + sum(self.contributors) + sum(self.verifiers) + self.treasury


def check_weights(weights: Iterable[int]) -> None:
    """Raise ValueError unless the attribution weights are each in [0, 10000] and sum to 10000."""
    weights = list(weights)
    for w in weights:
        if not 0 <= w <= BPS:
            raise ValueError(f"contributor weight {w} bps is outside 0..{BPS}")
    if weights and sum(weights) != BPS:
        raise ValueError(f"contributor weights must sum to {BPS} bps, got {sum(weights)}")


def split_shares(fee: int, weights: Sequence[int], n_verifiers: int) -> Shares:
    """Split `fee` by role: contributors by `weights` (bps, summing to 10000), `n_verifiers` equal parts.

    Raises ValueError for a fee outside 0..2**96-1, bad weights, or too many parties.
    """
    if not 0 <= fee <= MAX_FEE:
        raise ValueError(f"fee {fee} is outside 0..2**96-1")
    if not 0 <= n_verifiers <= MAX_VERIFIERS:
        raise ValueError(f"{n_verifiers} verifiers; at most {MAX_VERIFIERS} per job")
    if len(weights) > MAX_CONTRIBUTORS:
        raise ValueError(f"{len(weights)} contributors; at most {MAX_CONTRIBUTORS} per job")
    check_weights(weights)
    node = fee * NODE_BPS // BPS
    developer = fee * DEVELOPER_BPS // BPS
    contributor_pool = fee * CONTRIBUTORS_BPS // BPS
    contributors = tuple(contributor_pool * w // BPS for w in weights)
    verifier_pool = fee * VERIFIERS_BPS // BPS
    verifiers = tuple(verifier_pool // n_verifiers for _ in range(n_verifiers)) if n_verifiers else ()
    treasury = fee - node - developer - sum(contributors) - sum(verifiers)
    return Shares(node, developer, contributors, verifiers, treasury)


def split_fee(
    fee: int,
    contributors: Sequence[tuple[str, int]],
    verifiers: Sequence[str],
    node: str,
    developer: str,
    treasury: str,
) -> dict[str, int]:
    """Split one job's `fee` (wei) into amounts per payout address.

    `contributors` is [(address, weight_bps)] with weights summing to 10000 (or
    empty); `verifiers` the job's verifier addresses (or empty). An address that
    plays several roles gets the sum of its shares. Addresses are compared as
    given, so pass them in one spelling (checksummed). The values sum to `fee`.
    """
    shares = split_shares(fee, [w for _, w in contributors], len(verifiers))
    out: dict[str, int] = {}

    def add(address: str, amount: int) -> None:
        out[address] = out.get(address, 0) + amount

    add(node, shares.node)
    add(developer, shares.developer)
    for (address, _), amount in zip(contributors, shares.contributors):
        add(address, amount)
    for address, amount in zip(verifiers, shares.verifiers):
        add(address, amount)
    add(treasury, shares.treasury)
    return out


# ---------------------------------------------------------------------------
# Pricing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """Wei of OPEN per prompt token and per generated token, plus a flat per-job fee."""

    per_prompt_token: int = 10**12  # 1e-6 OPEN
    per_output_token: int = 4 * 10**12  # 4e-6 OPEN: generation costs more than prefill
    per_job: int = 0

    def __post_init__(self) -> None:
        for field in ("per_prompt_token", "per_output_token", "per_job"):
            if getattr(self, field) < 0:
                raise ValueError(f"Price.{field} must be >= 0")


DEFAULT_PRICE = Price()


def job_fee(prompt_tokens: int, output_tokens: int, price: Price = DEFAULT_PRICE, max_fee: int | None = None) -> int:
    """A job's fee in wei: per_job + prompt_tokens*per_prompt_token + output_tokens*per_output_token.

    Capped at `max_fee` (the client's signed ceiling) when given, and at 2**96-1.
    Token counts must be >= 0.
    """
    if prompt_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got prompt={prompt_tokens} output={output_tokens}")
    fee = price.per_job + prompt_tokens * price.per_prompt_token + output_tokens * price.per_output_token
    if max_fee is not None:
        if max_fee < 0:
            raise ValueError(f"max_fee must be >= 0, got {max_fee}")
        fee = min(fee, max_fee)
    return min(fee, MAX_FEE)
