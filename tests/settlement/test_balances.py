"""The data contributors' balances tree: Python's tree equals the contract's root, claims pay exactly what is
owed once, and forged updates or claims revert."""

from __future__ import annotations

import pytest

from services.settlement.balances import BalanceTree, contributor_amounts
from services.settlement.chain import Chain
from services.settlement.devchain import DevChain
from services.settlement.packing import encode_batch
from services.settlement.transport import ChainError

from .conftest import OPEN, make_job


def _next(chain: DevChain) -> int:
    return chain.last_seq() + 1


def test_python_tree_matches_the_contract_and_claims_pay_what_is_owed_once(chain: DevChain, client, parties):
    helper = chain.new_account()  # anyone may send a claim; only the account is paid
    jobs = [make_job(client.address, parties, fee=(k + 1) * OPEN) for k in range(3)]
    receipt = chain.settle_batch(_next(chain), jobs)
    assert (
        receipt.balances_root == chain.sync_balances().root == bytes(chain.settlement.functions.balances_root().call())
    )
    owed = contributor_amounts(jobs)
    assert {a: chain.claimable(a) for a in owed} == owed and all(owed.values())
    c1 = parties["c1"]
    assert chain.credit_of(c1) == 0  # nothing written per contributor at settlement
    amount, info = chain.claim(c1, key=helper.key)
    assert info is not None and amount == owed[c1] == chain.credit_of(c1)
    assert chain.claim(c1) == (0, None) and chain.claimable(c1) == 0
    # more batches: one claim takes everything since the last, from any recorded root
    later = [make_job(client.address, parties) for _ in range(2)]
    chain.settle_batch(_next(chain), later[:1])
    chain.settle_batch(_next(chain), later[1:])
    assert chain.claimable(c1) == contributor_amounts(later)[c1]
    leaf = chain.balances.of(c1)
    assert leaf is not None
    with pytest.raises(ChainError, match="balances root"):  # more than the tree holds
        chain.transact(
            helper.key,
            chain.settlement.functions.claim(
                c1, leaf.position, leaf.cumulative + 1, chain.balances.root_seq, chain.balances.proof(leaf.position)
            ),
        )
    direct = make_job(client.address, parties)  # a batch that credits contributors directly moves no root
    chain.settle_batch(_next(chain), [direct], pool_contributors=False)
    assert chain.claim(c1)[0] == contributor_amounts(later)[c1]  # proved against the last recorded root
    assert chain.credit_of(c1) == owed[c1] + contributor_amounts(later)[c1] + contributor_amounts([direct])[c1]
    # a fresh Chain object rebuilds the same tree from the calldata alone
    replayed = Chain(chain.transport, chain.deployment, deployer_key=chain.deployer_key).sync_balances()
    assert replayed.root == chain.balances.root and len(replayed) == len(chain.balances)


def _raw_settle(chain: DevChain, jobs, mutate) -> None:
    parties_list, words = encode_batch(jobs)
    owed = contributor_amounts(jobs)
    tree = chain.sync_balances()
    update = tree.update([(a, owed[a]) for a in tree.order(list(owed))])
    accounts, pooled, siblings = list(update.accounts), list(update.words), list(update.siblings)
    mutate(accounts, pooled, siblings)
    call = chain.settlement.functions.settle_batch(_next(chain), parties_list, accounts, pooled, siblings, words)
    chain.transact(chain.settler_key, call)


def test_forged_balance_updates_revert(chain: DevChain, client, parties):
    jobs = [make_job(client.address, parties)]
    chain.settle_batch(_next(chain), jobs)  # c1..c3 now hold positions
    before = chain.sync_balances().root

    def more_than_the_pool(accounts, pooled, siblings):
        pooled[0] += 1

    def previous_inflated(accounts, pooled, siblings):
        pooled[0] += 1 << 112

    def position_taken_as_new(accounts, pooled, siblings):
        pooled[0] = (pooled[0] & ~(0xFF << 224)) | (1 << 224) | 0
        pooled[0] &= ~(((1 << 112) - 1) << 112)

    def account_swapped(accounts, pooled, siblings):
        accounts[0], accounts[1] = accounts[1], accounts[0]

    def out_of_order(accounts, pooled, siblings):
        accounts.reverse()
        pooled.reverse()

    for mutate, reason in (
        (more_than_the_pool, "above the batch's data pool"),
        (previous_inflated, "do not match the balances root"),
        (position_taken_as_new, "do not match the balances root"),
        (account_swapped, "do not match the balances root"),
        (out_of_order, "out of position order"),
    ):
        with pytest.raises(ChainError, match=reason):
            _raw_settle(chain, [make_job(client.address, parties)], mutate)
    assert chain.sync_balances().root == before


def test_tree_update_and_replay_agree_off_chain():
    tree, replay = BalanceTree(), BalanceTree()
    accounts = [f"0x{k:040x}" for k in range(1, 40)]
    for seq, batch in enumerate((accounts[:7], accounts[3:30:2], accounts[::5], accounts[30:]), start=1):
        owed = [(a, 1000 * seq + i) for i, a in enumerate(tree.order(batch))]
        update = tree.update(owed)
        for t in (tree, replay):
            t.apply(seq, update.accounts, update.words)
        assert tree.root == replay.root == update.root
    leaf = tree.of(accounts[3])
    assert leaf is not None and leaf.cumulative == (1000 + 3) + (2000 + 0)
    with pytest.raises(ValueError, match="not what the tree holds"):
        replay.apply(9, update.accounts, update.words)  # the same words twice: stale previous balances
