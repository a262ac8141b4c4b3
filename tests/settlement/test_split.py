"""The split rule, the pricing rule, the Merkle tree and the calldata codec, without a chain."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loranet.split import (
    BPS,
    CONTRIBUTORS_BPS,
    DEVELOPER_BPS,
    NODE_BPS,
    TREASURY_BPS,
    VERIFIERS_BPS,
    Price,
    job_fee,
    split_fee,
    split_shares,
)
from services.settlement.merkle import leaf, merkle_proof, merkle_root, verify_proof
from services.settlement.packing import SettleJob, decode_batch, encode_batch

A = ["0x" + f"{i:040x}" for i in range(1, 20)]


def test_constants_add_up():
    assert NODE_BPS + DEVELOPER_BPS + CONTRIBUTORS_BPS + VERIFIERS_BPS + TREASURY_BPS == BPS
    assert (NODE_BPS, DEVELOPER_BPS, CONTRIBUTORS_BPS, VERIFIERS_BPS, TREASURY_BPS) == (5000, 2000, 2000, 500, 500)


def test_round_fee_splits_exactly():
    out = split_fee(10_000, [(A[3], 5000), (A[4], 5000)], [A[5], A[6]], A[0], A[1], A[2])
    assert out == {A[0]: 5000, A[1]: 2000, A[3]: 1000, A[4]: 1000, A[5]: 250, A[6]: 250, A[2]: 500}


def test_remainders_go_to_treasury():
    out = split_fee(7, [(A[3], 3333), (A[4], 3333), (A[5], 3334)], [A[6], A[7], A[8]], A[0], A[1], A[2])
    assert out[A[0]] == 3 and out[A[1]] == 1 and out[A[3]] == 0
    assert out[A[2]] == 7 - 3 - 1 and sum(out.values()) == 7


def test_missing_roles_go_to_treasury():
    out = split_fee(10_000, [], [], A[0], A[1], A[2])
    assert out == {A[0]: 5000, A[1]: 2000, A[2]: 3000}


def test_an_address_with_several_roles_gets_the_sum():
    out = split_fee(10_000, [(A[0], 10_000)], [A[0]], A[0], A[0], A[2])
    assert out == {A[0]: 9500, A[2]: 500}


@pytest.mark.parametrize("weights", [[5000, 4999], [10_001], [-1, 10_001]])
def test_bad_weights_refused(weights):
    with pytest.raises(ValueError, match="weight"):
        split_shares(100, weights, 1)


def test_fee_bounds():
    with pytest.raises(ValueError):
        split_shares(2**96, [], 0)
    with pytest.raises(ValueError):
        split_shares(-1, [], 0)


@given(st.integers(0, 2**96 - 1), st.lists(st.integers(0, 10_000), max_size=8), st.integers(0, 8))
def test_shares_sum_to_fee(fee, raw, n_verifiers):
    weights = raw[:-1] + [BPS - sum(raw[:-1])] if raw and sum(raw[:-1]) <= BPS else []
    shares = split_shares(fee, weights, n_verifiers)
    assert shares.total == fee
    assert shares.treasury >= fee * TREASURY_BPS // BPS


def test_job_fee_pricing():
    price = Price(per_prompt_token=2, per_output_token=5, per_job=100)
    assert job_fee(10, 4, price) == 100 + 20 + 20
    assert job_fee(10, 4, price, max_fee=50) == 50
    assert job_fee(0, 0) == 0
    with pytest.raises(ValueError):
        job_fee(-1, 0)
    with pytest.raises(ValueError):
        Price(per_prompt_token=-1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 100])
def test_merkle_proofs_verify(n):
    ids = [os.urandom(16) for _ in range(n)]
    root = merkle_root(ids)
    for i in range(n):
        assert verify_proof(ids[i], merkle_proof(ids, i), root)
    assert not verify_proof(os.urandom(16), merkle_proof(ids, 0), root)
    if n == 1:
        assert root == leaf(ids[0])


@given(st.lists(st.builds(lambda: None), min_size=1, max_size=40).map(len))
def test_codec_round_trip(n):
    jobs = [
        SettleJob(
            job_id=os.urandom(16),
            client=A[i % 3],
            fee=i * 1000,
            max_fee=i * 1000 + 5,
            node=A[3 + i % 2],
            developer=A[5],
            verifiers=tuple(A[6 : 6 + i % 9]),
            contributors=tuple(
                (A[i % 19], 10_000 // (i % 5 + 1) + (10_000 % (i % 5 + 1) if k == 0 else 0)) for k in range(i % 5 + 1)
            ),
        )
        for i in range(n)
    ]
    parties, words = encode_batch(jobs)
    assert len(parties) == len(set(parties))
    assert decode_batch(parties, words) == [(replace(j, contributors=()), bool(j.contributors)) for j in jobs]


def test_settle_job_validates():
    with pytest.raises(ValueError, match="job id"):
        SettleJob(job_id=b"short", client=A[0], fee=1, max_fee=1, node=A[1], developer=A[2])
    with pytest.raises(ValueError, match="zero address"):
        SettleJob(job_id=os.urandom(16), client="0x" + "00" * 20, fee=1, max_fee=1, node=A[1], developer=A[2])
    with pytest.raises(ValueError, match="sum to 10000"):
        SettleJob(
            job_id=os.urandom(16), client=A[0], fee=1, max_fee=1, node=A[1], developer=A[2], contributors=((A[3], 1),)
        )
    job = SettleJob(job_id=os.urandom(16).hex(), client=A[0].lower(), fee=1, max_fee=1, node=A[1], developer=A[2])
    assert len(job.job_id) == 16
