"""The Merkle root that Settlement.settle_batch emits for a batch's job ids (libs/loranet/merkle.py's tree).

Leaf = keccak256(job_id as 16 bytes, right-padded with 16 zero bytes: the ABI encoding of a bytes16). One
job: the root is its leaf.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

from loranet import merkle


def leaf(job_id: bytes) -> bytes:
    """The leaf hash of one 16-byte job id."""
    if len(job_id) != 16:
        raise ValueError(f"job id must be 16 bytes, got {len(job_id)}")
    return keccak(job_id + bytes(16))


def merkle_root(job_ids: Sequence[bytes]) -> bytes:
    """The root over `job_ids` in batch order (the contract's order)."""
    if not job_ids:
        raise ValueError("a Merkle root needs at least one job id")
    return merkle.root([leaf(j) for j in job_ids])


def merkle_proof(job_ids: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from job `index`'s leaf up to the root (levels where it has no sibling are skipped)."""
    return merkle.proof([leaf(j) for j in job_ids], index)


def verify_proof(job_id: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """True when `proof` (from merkle_proof) links `job_id` to `root`."""
    return merkle.verify(leaf(job_id), proof, root)
