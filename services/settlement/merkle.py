"""The Merkle root that Settlement.settle_batch emits for a batch's job ids.

Leaf = keccak256(job_id as 16 bytes, right-padded with 16 zero bytes: the ABI
encoding of a bytes16). A parent is keccak256 of its two children sorted as
unsigned 256-bit integers, so a proof needs no left/right flags; an odd node at
the end of a level is carried up unchanged. One job: the root is its leaf.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak


def leaf(job_id: bytes) -> bytes:
    """The leaf hash of one 16-byte job id."""
    if len(job_id) != 16:
        raise ValueError(f"job id must be 16 bytes, got {len(job_id)}")
    return keccak(job_id + bytes(16))


def _parent(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def merkle_root(job_ids: Sequence[bytes]) -> bytes:
    """The root over `job_ids` in batch order (the contract's order)."""
    if not job_ids:
        raise ValueError("a Merkle root needs at least one job id")
    level = [leaf(j) for j in job_ids]
    while len(level) > 1:
        nxt = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_proof(job_ids: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from job `index`'s leaf up to the root (levels where it has no sibling are skipped)."""
    level = [leaf(j) for j in job_ids]
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        nxt = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index //= 2
    return proof


def verify_proof(job_id: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """True when `proof` (from merkle_proof) links `job_id` to `root`."""
    node = leaf(job_id)
    for sibling in proof:
        node = _parent(node, sibling)
    return node == root
