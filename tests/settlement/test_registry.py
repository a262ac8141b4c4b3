"""Registry.vy: staking with a cooldown, slashing by role, adapters, contributors."""

from __future__ import annotations

import os

import pytest

from services.settlement.devchain import DevChain
from services.settlement.transport import ChainError

from .conftest import OPEN


def _node(chain: DevChain, stake: int = 200 * OPEN):
    node = chain.new_account(open_tokens=1000 * OPEN)
    key = os.urandom(32)
    chain.stake(node.key, stake, key)
    return node, key


def test_stake_binds_key_and_payout(chain: DevChain):
    node, key = _node(chain)
    record = chain.node(node.address)
    assert record.ed25519_key == key and record.payout == node.address and record.stake == 200 * OPEN
    assert chain.is_active(node.address)
    assert chain.registry.functions.node_of_key(key).call() == node.address
    assert chain.balance_of(node.address) == 800 * OPEN
    # a later stake must name the same key
    with pytest.raises(ChainError, match="differs from the bound key"):
        chain.stake(node.key, OPEN, os.urandom(32))
    # nobody else can take the key
    other = chain.new_account(open_tokens=500 * OPEN)
    with pytest.raises(ChainError, match="already bound"):
        chain.stake(other.key, 200 * OPEN, key)


def test_a_staked_node_declares_its_hardware_region_and_price(chain: DevChain):
    stranger = chain.new_account(open_tokens=10 * OPEN)
    with pytest.raises(ChainError, match="stake first"):
        chain.declare(stranger.key, "cpu", 1024, "eu-west", 1)
    node, _ = _node(chain)
    assert chain.spec(node.address) is None
    chain.declare(node.key, "cuda", 81_920, "us-east", 4 * 10**18, "bfloat16")
    spec = chain.spec(node.address)
    assert spec is not None and (spec.device, spec.memory_mb, spec.region, spec.price, spec.dtype) == (
        "cuda",
        81_920,
        "us-east",
        4 * 10**18,
        "bfloat16",
    )
    for bad, why in (
        (("", 1, "eu"), "empty device"),
        (("cpu", 0, "eu"), "zero memory"),
        (("cpu", 1, ""), "empty region"),
    ):
        with pytest.raises(ChainError, match=why):
            chain.declare(node.key, *bad, 0)
    with pytest.raises(ChainError, match="empty dtype"):
        chain.declare(node.key, "cpu", 1, "eu", 0, "")


def test_stake_below_minimum_refused(chain: DevChain):
    node = chain.new_account(open_tokens=1000 * OPEN)
    with pytest.raises(ChainError, match="below minimum"):
        chain.stake(node.key, 99 * OPEN, os.urandom(32))


def test_unstake_waits_for_cooldown(chain: DevChain):
    node, _ = _node(chain)
    chain.request_unstake(node.key, 150 * OPEN)
    record = chain.node(node.address)
    assert record.stake == 50 * OPEN and record.unbonding == 150 * OPEN
    assert not chain.is_active(node.address)  # below the minimum now
    with pytest.raises(ChainError, match="cooldown not over"):
        chain.withdraw_stake(node.key)
    chain.advance_time(3601)
    chain.withdraw_stake(node.key)
    assert chain.balance_of(node.address) == 950 * OPEN
    with pytest.raises(ChainError, match="nothing unbonding"):
        chain.withdraw_stake(node.key)
    with pytest.raises(ChainError, match="above stake"):
        chain.request_unstake(node.key, 51 * OPEN)


def test_slash_by_slasher_only_goes_to_treasury(chain: DevChain):
    node, _ = _node(chain)
    treasury = chain.registry.functions.treasury().call()
    before = chain.balance_of(treasury)
    stranger = chain.new_account()
    evidence = os.urandom(32)
    with pytest.raises(ChainError, match="not slasher"):
        chain.slash(node.address, 10 * OPEN, evidence, key=stranger.key)
    chain.slash(node.address, 30 * OPEN, evidence)
    assert chain.node(node.address).stake == 170 * OPEN
    assert chain.balance_of(treasury) == before + 30 * OPEN
    with pytest.raises(ChainError, match="evidence already used"):
        chain.slash(node.address, 30 * OPEN, evidence)
    # a slasher named by the owner can slash
    chain.set_slasher(stranger.address)
    chain.slash(node.address, 20 * OPEN, os.urandom(32), key=stranger.key)
    assert chain.node(node.address).stake == 150 * OPEN


def test_unbonding_stake_stays_slashable(chain: DevChain):
    node, _ = _node(chain)
    chain.request_unstake(node.key, 200 * OPEN)
    # asks for more than there is: takes everything, stake first then unbonding
    receipt = chain.slash(node.address, 10**6 * OPEN, os.urandom(32))
    assert receipt.gas_used > 0
    record = chain.node(node.address)
    assert record.stake == 0 and record.unbonding == 0
    chain.advance_time(3601)
    with pytest.raises(ChainError, match="nothing unbonding"):
        chain.withdraw_stake(node.key)


def test_roles_are_set_by_owner_only(chain: DevChain):
    stranger = chain.new_account()
    with pytest.raises(ChainError, match="not owner"):
        chain.transact(stranger.key, chain.registry.functions.set_slasher(stranger.address, True))
    with pytest.raises(ChainError, match="not owner"):
        chain.transact(stranger.key, chain.registry.functions.set_min_stake(0))
    with pytest.raises(ChainError, match="not owner"):
        chain.transact(stranger.key, chain.settlement.functions.set_settler(stranger.address, True))


def test_adapters_map_to_developers(chain: DevChain):
    dev = chain.new_account()
    other = chain.new_account()
    adapter_id = os.urandom(32)
    # the developer registers its own adapter
    chain.register_adapter(adapter_id, dev.address, key=dev.key)
    assert chain.developer_of(adapter_id) == dev.address
    # somebody else cannot take it over
    with pytest.raises(ChainError, match="another developer"):
        chain.register_adapter(adapter_id, other.address, key=other.key)
    # nor register one in someone else's name without the registrar role
    with pytest.raises(ChainError, match="not developer or registrar"):
        chain.register_adapter(os.urandom(32), dev.address, key=other.key)
    # the registrar (deployer by default) can
    second = os.urandom(32).hex()
    chain.register_adapter(second, other.address)
    assert chain.developer_of(second) == other.address


def test_contributor_ids_are_compact_and_idempotent(chain: DevChain):
    a, b = chain.new_account(eth=0).address, chain.new_account(eth=0).address
    ia = chain.register_contributor(a)
    ib = chain.register_contributor(b)
    assert ib == ia + 1 and ia >= 1
    assert chain.register_contributor(a) == ia
    assert chain.contributor_of(ia) == a and chain.contributor_of(ib) == b


def test_a_datanet_versions_root_is_recorded_once_by_a_registrar(chain: DevChain):
    root, other = os.urandom(32), os.urandom(32)
    name = f"net-{os.urandom(4).hex()}"
    assert chain.datanet_root(name, 1) == bytes(32) and chain.datanet_record_tx(name, 1) is None
    stranger = chain.new_account()
    with pytest.raises(ChainError, match="not a registrar"):
        chain.record_datanet_version(name, 1, root, key=stranger.key)
    info = chain.record_datanet_version(name, 1, root)  # the deployer is a registrar
    assert chain.datanet_root(name, 1) == root and chain.datanet_record_tx(name, 1).tx_hash == info.tx_hash
    with pytest.raises(ChainError, match="already recorded"):  # versions never change
        chain.record_datanet_version(name, 1, other)
    with pytest.raises(ChainError, match="zero root"):
        chain.record_datanet_version(name, 2, bytes(32))
    assert chain.datanet_root(name, 1) == root


def test_only_a_staked_key_registers_as_a_verifier_and_counts_while_active(chain: DevChain):
    stranger = chain.new_account(open_tokens=10 * OPEN)
    with pytest.raises(ChainError, match="stake first"):
        chain.register_verifier(stranger.key)
    verifier, key = _node(chain)
    assert chain.verifier_of_key(key) is None  # staked, not registered
    chain.register_verifier(verifier.key)
    assert chain.verifier_of_key(key) == verifier.address
    chain.request_unstake(verifier.key, 200 * OPEN)  # below min_stake: its verdicts stop counting
    assert chain.verifier_of_key(key) is None
