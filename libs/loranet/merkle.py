"""Merkle trees over 32-byte leaf hashes, as the settlement contract builds them (keccak256).

A parent is keccak256 of its two children sorted as unsigned 256-bit integers, so a proof needs no
left/right flags; an odd node at the end of a level is carried up unchanged; one leaf is its own root.
Settlement's batch roots (services/settlement/merkle.py: leaves of job ids) and datanet versions' roots
(leaves of contribution ids) are both this tree.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak


def parent(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def root(leaves: Sequence[bytes]) -> bytes:
    """The root over `leaves` (already hashed), in order."""
    if not leaves:
        raise ValueError("a Merkle root needs at least one leaf")
    level = list(leaves)
    while len(level) > 1:
        nxt = [parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up to the root (levels where it has no sibling are skipped)."""
    level = list(leaves)
    out: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            out.append(level[sibling])
        nxt = [parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index //= 2
    return out


def verify(leaf: bytes, siblings: Sequence[bytes], expected_root: bytes) -> bool:
    """True when `siblings` (from `proof`) link `leaf` to `expected_root`."""
    node = leaf
    for sibling in siblings:
        node = parent(node, sibling)
    return node == expected_root
