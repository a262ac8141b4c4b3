"""Settlement.vy through DevChain: escrow, settle_batch guards, split, refunds, audit root."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loranet.split import split_fee
from services.settlement.devchain import DevChain
from services.settlement.merkle import merkle_root
from services.settlement.packing import Reservation, SettleJob, decode_batch, encode_batch
from services.settlement.transport import ChainError

from .conftest import OPEN, make_job


def _next(chain: DevChain) -> int:
    return chain.last_seq() + 1


def test_escrow_deposit_and_withdraw(chain: DevChain):
    c = chain.new_account(open_tokens=100 * OPEN)
    chain.deposit(c.key, 60 * OPEN)
    assert chain.escrow_of(c.address) == 60 * OPEN
    assert chain.balance_of(c.address) == 40 * OPEN
    chain.withdraw_escrow(c.key, 25 * OPEN)
    assert chain.escrow_of(c.address) == 35 * OPEN
    assert chain.balance_of(c.address) == 65 * OPEN
    with pytest.raises(ChainError, match="above unreserved escrow"):
        chain.withdraw_escrow(c.key, 35 * OPEN + 1)
    # someone else can fund a client's escrow
    payer = chain.new_account(open_tokens=10 * OPEN)
    chain.deposit_for(payer.key, c.address, 10 * OPEN)
    assert chain.escrow_of(c.address) == 45 * OPEN


def test_settle_pays_split_and_charges_client(chain: DevChain, client, parties):
    jobs = [make_job(client.address, parties, fee=10 * OPEN + 7), make_job(client.address, parties, fee=3 * OPEN + 1)]
    treasury = chain.treasury()
    credits_before = {a: chain.earned(a) for a in [*parties.values(), treasury]}
    receipt = chain.settle_batch(_next(chain), jobs)
    assert receipt.jobs == 2 and receipt.total_fees == 13 * OPEN + 8
    assert chain.escrow_of(client.address) == 1000 * OPEN - receipt.total_fees
    expected: dict[str, int] = {}
    for job in jobs:
        for address, amount in job.payouts(treasury).items():
            expected[address] = expected.get(address, 0) + amount
    for address, before in credits_before.items():
        assert chain.earned(address) - before == expected.get(address, 0)
    assert sum(expected.values()) == receipt.total_fees
    assert receipt.payouts[jobs[0].job_id.hex()] == jobs[0].payouts(treasury)
    assert chain.job_state(jobs[0].job_id) == "settled"


def test_merkle_root_event_matches_python(chain: DevChain, client, parties):
    for n in (1, 2, 3, 5, 8, 13):
        jobs = [make_job(client.address, parties, fee=OPEN) for _ in range(n)]
        receipt = chain.settle_batch(_next(chain), jobs)
        assert receipt.merkle_root == merkle_root([j.job_id for j in jobs]), n


def test_recent_batches_list_the_epochs_newest_first(chain: DevChain, client, parties):
    mined = [chain.settle_batch(_next(chain), [make_job(client.address, parties)]) for _ in range(3)]
    epochs = chain.recent_batches(2)
    assert [e.seq for e in epochs] == [mined[2].seq, mined[1].seq]
    assert epochs[0].tx_hash == mined[2].tx_hash and epochs[0].jobs == 1
    assert epochs[0].total_fees == mined[2].total_fees and epochs[0].merkle_root == "0x" + mined[2].merkle_root.hex()
    assert epochs[0].block == mined[2].block_number and epochs[0].at > 0


def test_sequence_guard(chain: DevChain, client, parties):
    seq = _next(chain)
    chain.settle_batch(seq, [make_job(client.address, parties)])
    with pytest.raises(ChainError, match="sequence"):
        chain.settle_batch(seq, [make_job(client.address, parties)])  # repeated
    with pytest.raises(ChainError, match="sequence"):
        chain.settle_batch(seq + 2, [make_job(client.address, parties)])  # skips one
    with pytest.raises(ChainError, match="sequence"):
        chain.settle_batch(seq - 1, [make_job(client.address, parties)])  # older
    assert chain.last_seq() == seq


def test_job_is_never_paid_twice(chain: DevChain, client, parties):
    job = make_job(client.address, parties)
    chain.settle_batch(_next(chain), [job])
    escrow = chain.escrow_of(client.address)
    with pytest.raises(ChainError, match="already settled"):
        chain.settle_batch(_next(chain), [make_job(client.address, parties), job])
    # twice in one batch
    twin = make_job(client.address, parties)
    with pytest.raises(ChainError, match="already settled"):
        chain.settle_batch(_next(chain), [twin, twin])
    assert chain.escrow_of(client.address) == escrow


def test_fee_above_max_fee_reverts(chain: DevChain, client, parties):
    job = make_job(client.address, parties, fee=OPEN)
    # SettleJob refuses it in Python; the contract refuses raw calldata too.
    with pytest.raises(ValueError, match="max_fee"):
        make_job(client.address, parties, fee=2 * OPEN, max_fee=OPEN)
    parties_list, words = encode_batch([job])
    words[0] += (OPEN + 1) << 32  # fee field now above max_fee
    call = chain.settlement.functions.settle_batch(_next(chain), parties_list, [], [], [], words)
    with pytest.raises(ChainError, match="fee above max_fee"):
        chain.transact(chain.settler_key, call)


def test_fee_above_escrow_reverts(chain: DevChain, parties):
    poor = chain.new_account(open_tokens=5 * OPEN)
    chain.deposit(poor.key, 5 * OPEN)
    jobs = [make_job(poor.address, parties, fee=3 * OPEN), make_job(poor.address, parties, fee=3 * OPEN)]
    with pytest.raises(ChainError, match="cannot cover"):
        chain.settle_batch(_next(chain), jobs)
    assert chain.escrow_of(poor.address) == 5 * OPEN
    chain.settle_batch(_next(chain), jobs[:1])
    assert chain.escrow_of(poor.address) == 2 * OPEN


def test_only_settler_settles(chain: DevChain, client, parties):
    stranger = chain.new_account()
    with pytest.raises(ChainError, match="not settler"):
        chain.settle_batch(_next(chain), [make_job(client.address, parties)], key=stranger.key)
    with pytest.raises(ChainError, match="not settler"):
        chain.refund([os.urandom(16)], key=stranger.key)
    with pytest.raises(ChainError, match="not settler"):
        chain.reserve([Reservation(os.urandom(16), client.address, OPEN)], key=stranger.key)


def test_truncated_job_words_revert(chain: DevChain, client, parties):
    parties_list, words = encode_batch([make_job(client.address, parties)])
    with pytest.raises(ChainError, match="truncated"):
        chain.transact(
            chain.settler_key,
            chain.settlement.functions.settle_batch(_next(chain), parties_list, [], [], [], words[:1]),
        )


def test_calldata_decodes_back_to_the_jobs(chain: DevChain, client, parties):
    jobs = [
        make_job(client.address, parties),
        make_job(client.address, parties, verifiers=(), contributors=()),
        make_job(
            client.address,
            parties,
            verifiers=(parties["verifier"], parties["verifier2"]),
            contributors=tuple((chain.new_account(eth=0).address, 625) for _ in range(16)),
        ),
    ]
    receipt = chain.settle_batch(_next(chain), jobs)
    tx = chain.w3.eth.get_transaction(receipt.tx_hash)
    _, args = chain.settlement.decode_function_input(tx["input"])
    assert decode_batch(args["parties"], args["jobs"]) == [
        (replace(j, contributors=()), bool(j.contributors)) for j in jobs
    ]


def test_settlement_holds_exactly_escrow_plus_credits(chain: DevChain, client, parties):
    # Every token the contract holds is owed to someone: conservation after a batch.
    job = make_job(client.address, parties, fee=7 * OPEN + 3)
    before = chain.balance_of(chain.settlement.address)
    chain.settle_batch(_next(chain), [job])
    assert chain.balance_of(chain.settlement.address) == before


# ---------------------------------------------------------------- property

_addresses = st.integers(min_value=1, max_value=2**160 - 1).map(lambda n: "0x" + n.to_bytes(20, "big").hex())


@st.composite
def _weights(draw) -> list[int]:
    n = draw(st.integers(min_value=0, max_value=10))
    if n == 0:
        return []
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 10_000]
    return [bounds[i + 1] - bounds[i] for i in range(n)]


@st.composite
def _batch(draw):
    pool = draw(st.lists(_addresses, min_size=3, max_size=12, unique=True))
    jobs = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        weights = draw(_weights())
        max_fee = draw(st.sampled_from([0, 1, 9_999, 10**6 + 3, 10**18 + 7, 2**96 - 1]) | st.integers(0, 2**96 - 1))
        # fees up to 10**22 (10k OPEN) keep the faucet able to top up the client's escrow
        fee = draw(st.integers(min_value=0, max_value=min(max_fee, 10**22)))
        jobs.append(
            dict(
                fee=fee,
                max_fee=max_fee,
                node=draw(st.sampled_from(pool)),
                developer=draw(st.sampled_from(pool)),
                verifiers=tuple(draw(st.lists(st.sampled_from(pool), max_size=4))),
                contributors=tuple((draw(st.sampled_from(pool)), w) for w in weights),
            )
        )
    return jobs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=_batch())
def test_credits_equal_fees_and_python_split(chain: DevChain, client, batch):
    jobs = [SettleJob(job_id=os.urandom(16), client=client.address, **spec) for spec in batch]
    treasury = chain.treasury()
    expected: dict[str, int] = {}
    for job in jobs:
        shares = split_fee(job.fee, list(job.contributors), list(job.verifiers), job.node, job.developer, treasury)
        assert sum(shares.values()) == job.fee
        for address, amount in shares.items():
            expected[address] = expected.get(address, 0) + amount
    total = sum(j.fee for j in jobs)
    if total > chain.escrow_of(client.address):
        chain.fund(client.address, total)
        chain.deposit(client.key, total)
    before = {a: chain.earned(a) for a in expected}
    escrow = chain.escrow_of(client.address)
    receipt = chain.settle_batch(_next(chain), jobs)
    gained = {a: chain.earned(a) - before[a] for a in expected}
    assert gained == expected
    assert sum(gained.values()) == total == receipt.total_fees
    assert escrow - chain.escrow_of(client.address) == total
