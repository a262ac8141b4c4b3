"""The data contributors' balances tree, as Settlement.vy keeps its root (see the contract's docstring).

A sparse Merkle tree of depth DEPTH: the leaf at position p is keccak256(p:32 | account:32 | cumulative:32),
`cumulative` everything ever owed to that position; an unused position is 32 zero bytes, and a parent is 32
zero bytes over two zero children, else keccak256(left | right). Positions are handed out in order of first
appearance, one per account. Each settle_batch moves the pooled parties' leaves from their previous
cumulative to the new one: `BalanceTree.update` gives the calldata (one word per pooled party and the
siblings the contract's level-by-level walk meets), `apply` records a mined batch. The tree is never
stored off chain: `Chain` rebuilds it from the batches' calldata (`replay`), the chain being the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import keccak, to_checksum_address

from loranet.split import split_shares

from .packing import BatchTooLarge, SettleJob

DEPTH = 24
MAX_SIBLINGS = 1024  # Settlement.vy's bound on one batch's siblings
ZERO = bytes(32)
_M112 = (1 << 112) - 1
CREDIT = 2  # a pooled word's kind: credited directly, not in the tree


def leaf(position: int, account: str, cumulative: int) -> bytes:
    return keccak(
        position.to_bytes(32, "big") + bytes(12) + bytes.fromhex(account[2:]) + cumulative.to_bytes(32, "big")
    )


def parent(left: bytes, right: bytes) -> bytes:
    return ZERO if left == ZERO and right == ZERO else keccak(left + right)


def contributor_amounts(jobs: Sequence[SettleJob]) -> dict[str, int]:
    """What each data contributor is owed over a batch's jobs (loranet.split's floors per job), in order of
    first appearance."""
    out: dict[str, int] = {}
    for job in jobs:
        shares = split_shares(job.fee, [w for _, w in job.contributors], len(job.verifiers))
        for (address, _), amount in zip(job.contributors, shares.contributors):
            out[address] = out.get(address, 0) + amount
    return out


@dataclass(frozen=True)
class Update:
    """One batch's move of the balances tree: the accounts in position order, the contract's pooled words
    (position:24 << 232 | kind:8 << 224 | previous cumulative:112 << 112 | amount:112; kind 1 at an unused
    position), the siblings, and the root after."""

    accounts: tuple[str, ...]
    words: tuple[int, ...]
    siblings: tuple[bytes, ...]
    root: bytes


@dataclass(frozen=True)
class Position:
    """An account's leaf: where it is and what it holds."""

    position: int
    account: str
    cumulative: int


class BalanceTree:
    def __init__(self) -> None:
        self._leaves: dict[int, tuple[str, int]] = {}
        self._position: dict[str, int] = {}
        # level -> index -> node, only non-zero nodes (level 0: the leaves)
        self._nodes: list[dict[int, bytes]] = [{} for _ in range(DEPTH + 1)]
        self.seq = 0  # the last batch applied
        self.root_seq = 0  # the last batch that moved the tree: Settlement.balances_at holds its root

    def __len__(self) -> int:
        return len(self._leaves)

    @property
    def root(self) -> bytes:
        return self._nodes[DEPTH].get(0, ZERO)

    def _node(self, level: int, index: int) -> bytes:
        return self._nodes[level].get(index, ZERO)

    def of(self, account: str) -> Position | None:
        position = self._position.get(to_checksum_address(account))
        if position is None:
            return None
        address, cumulative = self._leaves[position]
        return Position(position, address, cumulative)

    def proof(self, position: int) -> list[bytes]:
        """The DEPTH siblings from a leaf up to the root (Settlement.claim's proof)."""
        return [self._node(level, (position >> level) ^ 1) for level in range(DEPTH)]

    def order(self, accounts: Sequence[str]) -> list[str]:
        """`accounts` in position order (new ones after the known, in the order given)."""
        positions = self.positions_for(accounts)
        return sorted(positions, key=positions.__getitem__)

    def positions_for(self, accounts: Sequence[str]) -> dict[str, int]:
        """Each account's position: its own, else the next free ones in the order given."""
        out: dict[str, int] = {}
        free = len(self._leaves)
        for account in accounts:
            account = to_checksum_address(account)
            if account in out:
                continue
            known = self._position.get(account)
            if known is None:
                known, free = free, free + 1
            out[account] = known
        if free > 1 << DEPTH:
            raise ValueError(f"the balances tree holds at most {1 << DEPTH} positions")
        return out

    def update(self, owed: Sequence[tuple[str, int]]) -> Update:
        """The calldata that adds `owed` [(account, amount)] (accounts distinct, in position order) to the
        tree, and the root after; the tree itself is unchanged until `apply`."""
        positions = self.positions_for([a for a, _ in owed])
        words: list[int] = []
        news: list[bytes] = []
        idx: list[int] = []
        for account, amount in owed:
            account = to_checksum_address(account)
            position = positions[account]
            known = self._leaves.get(position)
            previous = known[1] if known else 0
            if idx and position <= idx[-1]:
                raise ValueError("pooled accounts must come in increasing position")
            if previous + amount > _M112 or amount > _M112:
                raise ValueError(f"{account}: cumulative balance over 2**112")
            words.append((position << 232) | ((0 if known else 1) << 224) | (previous << 112) | amount)
            news.append(leaf(position, account, previous + amount))
            idx.append(position)
        siblings: list[bytes] = []
        for level in range(DEPTH):
            up_idx, up_new = [], []
            at = 0
            while at < len(idx):
                i = idx[at]
                if i % 2 == 0 and at + 1 < len(idx) and idx[at + 1] == i + 1:
                    left, right = news[at], news[at + 1]
                    at += 2
                else:
                    sibling = self._node(level, i ^ 1)
                    siblings.append(sibling)
                    left, right = (news[at], sibling) if i % 2 == 0 else (sibling, news[at])
                    at += 1
                up_idx.append(i >> 1)
                up_new.append(parent(left, right))
            idx, news = up_idx, up_new
        if len(siblings) > MAX_SIBLINGS:
            raise BatchTooLarge(
                f"a batch's balance update needs {len(siblings)} siblings, at most {MAX_SIBLINGS}; split it"
            )
        return Update(
            tuple(to_checksum_address(a) for a, _ in owed),
            tuple(words),
            tuple(siblings),
            news[0] if news else self.root,
        )

    def apply(self, seq: int, accounts: Sequence[str], words: Sequence[int]) -> None:
        """Record mined batch `seq` (its accounts and pooled words): each tree word's leaf moves from its
        previous cumulative by its amount. Raises ValueError if the words do not describe this tree."""
        for account, word in zip(accounts, words, strict=True):
            account = to_checksum_address(account)
            position, kind = word >> 232, (word >> 224) & 0xFF
            previous, amount = (word >> 112) & _M112, word & _M112
            if kind == CREDIT:
                continue
            self.root_seq = seq
            known = self._leaves.get(position)
            if (known is None) != (kind == 1) or (known is not None and known != (account, previous)):
                raise ValueError(f"batch {seq}: position {position} is not what the tree holds")
            self._leaves[position] = (account, previous + amount)
            self._position[account] = position
            node = leaf(position, account, previous + amount)
            for level in range(DEPTH):
                self._nodes[level][position] = node
                sibling = self._node(level, position ^ 1)
                node = parent(node, sibling) if position % 2 == 0 else parent(sibling, node)
                position >>= 1
            self._nodes[DEPTH][0] = node
        self.seq = seq
