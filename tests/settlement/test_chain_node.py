"""The chain process: py-evm over HTTP JSON-RPC, contracts deployed once and found by a Chain with no addresses."""

from __future__ import annotations

import os

import pytest
import requests

from services.settlement.devchain import DevChain
from services.settlement.merkle import merkle_root
from services.settlement.transport import ChainError

from .conftest import OPEN, make_job


def test_chain_node_serves_the_chain_api(chain_node_url):
    chain = DevChain.open(chain_node_url)
    assert chain.transport.fixed_gas and not chain.in_process
    again = DevChain.open(chain_node_url)  # a restarted settlement attaches to the same contracts
    assert again.deployment == chain.deployment
    client = chain.new_account(open_tokens=100 * OPEN)
    chain.deposit_with_permit(client.key, 60 * OPEN)
    parties = {
        n: chain.new_account(eth=0).address for n in ("node", "developer", "verifier", "verifier2", "c1", "c2", "c3")
    }
    jobs = [make_job(client.address, parties, fee=(i + 1) * OPEN, max_fee=10 * OPEN) for i in range(4)]
    seq = chain.last_seq() + 1
    receipt = chain.settle_batch(seq, jobs)
    assert receipt.merkle_root == merkle_root([j.job_id for j in jobs])
    assert again.escrow_of(client.address) == 50 * OPEN
    assert again.job_states([j.job_id for j in jobs] + [os.urandom(16)]) == ["settled"] * 4 + ["unknown"]
    assert again.available_of_many([client.address, parties["node"]]) == [50 * OPEN, 0]
    # Recovery reads: the mined batch by its seq and Merkle root, a refund by its job id.
    assert again.find_batch(seq, jobs).tx_hash == receipt.tx_hash
    assert again.find_batch(seq, jobs[:2]) is None
    with pytest.raises(ChainError, match="already settled or refunded"):
        chain.settle_batch(chain.last_seq() + 1, jobs[:1])
    with pytest.raises(ChainError, match="sequence"):
        chain.settle_batch(chain.last_seq() + 2, [make_job(client.address, parties, fee=OPEN)])
    refunded = os.urandom(16)
    info = chain.refund([refunded])
    assert again.find_refund(refunded) == info and again.find_refund(os.urandom(16)) is None
    # anvil-style helpers: stake, time travel, unbond.
    node = chain.new_account(open_tokens=2000 * OPEN)
    chain.stake(node.key, 1000 * OPEN, os.urandom(32))
    chain.request_unstake(node.key, 1000 * OPEN)
    chain.advance_time(8 * 24 * 3600)
    chain.withdraw_stake(node.key)
    assert chain.balance_of(node.address) == 2000 * OPEN


def test_chain_node_answers_batches_and_bad_requests(chain_node_url):
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "no_such_method", "params": []},
    ]
    answers = requests.post(chain_node_url, json=batch, timeout=10).json()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"].startswith("0x") and answers[1]["result"].startswith("0x")
    assert "error" in answers[2]
    assert "error" in requests.post(chain_node_url, data=b"{not json", timeout=10).json()
    deployment = requests.post(
        chain_node_url, json={"jsonrpc": "2.0", "id": 4, "method": "loranet_deployment"}, timeout=10
    ).json()["result"]
    assert set(deployment) >= {"token", "registry", "settlement", "chain_id"}
