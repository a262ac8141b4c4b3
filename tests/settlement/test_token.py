"""OpenToken.vy against the ERC-20 standard's behaviours, plus EIP-2612 permit."""

from __future__ import annotations

import pytest
from eth_account import Account

from services.settlement.devchain import DevChain
from services.settlement.transport import ChainError

from .conftest import OPEN

ZERO = "0x" + "00" * 20


def test_metadata_and_fixed_supply(chain: DevChain):
    t = chain.token.functions
    assert t.name().call() == "Open"
    assert t.symbol().call() == "OPEN"
    assert t.decimals().call() == 18
    assert t.totalSupply().call() == 10**9 * OPEN
    # no mint function exists after deployment
    assert not any(item.get("name", "").lower().startswith("mint") for item in chain.token.abi)


def test_transfer_moves_balance_and_logs(chain: DevChain):
    a = chain.new_account(open_tokens=50 * OPEN)
    b = chain.new_account(eth=0)
    receipt = chain.transact(a.key, chain.token.functions.transfer(b.address, 20 * OPEN))
    assert chain.balance_of(a.address) == 30 * OPEN
    assert chain.balance_of(b.address) == 20 * OPEN
    (event,) = chain.token.events.Transfer().process_receipt(receipt)
    assert (event.args.sender, event.args.receiver, event.args.value) == (a.address, b.address, 20 * OPEN)


def test_transfer_failures(chain: DevChain):
    a = chain.new_account(open_tokens=5 * OPEN)
    b = chain.new_account(eth=0)
    with pytest.raises(ChainError, match="insufficient balance"):
        chain.transfer(a.key, b.address, 5 * OPEN + 1)
    with pytest.raises(ChainError, match="zero address"):
        chain.transfer(a.key, ZERO, 1)
    assert chain.balance_of(a.address) == 5 * OPEN
    # a zero-value transfer is a valid transfer
    chain.transfer(a.key, b.address, 0)


def test_approve_and_transfer_from(chain: DevChain):
    owner = chain.new_account(open_tokens=100 * OPEN)
    spender = chain.new_account()
    target = chain.new_account(eth=0)
    receipt = chain.transact(owner.key, chain.token.functions.approve(spender.address, 30 * OPEN))
    (event,) = chain.token.events.Approval().process_receipt(receipt)
    assert (event.args.owner, event.args.spender, event.args.value) == (owner.address, spender.address, 30 * OPEN)
    assert chain.token.functions.allowance(owner.address, spender.address).call() == 30 * OPEN

    move = chain.token.functions.transferFrom(owner.address, target.address, 12 * OPEN)
    receipt = chain.transact(spender.key, move)
    assert chain.balance_of(target.address) == 12 * OPEN
    assert chain.token.functions.allowance(owner.address, spender.address).call() == 18 * OPEN
    (event,) = chain.token.events.Transfer().process_receipt(receipt)
    assert event.args.sender == owner.address

    with pytest.raises(ChainError, match="insufficient allowance"):
        chain.transact(spender.key, chain.token.functions.transferFrom(owner.address, target.address, 18 * OPEN + 1))
    with pytest.raises(ChainError, match="zero address"):
        chain.transact(spender.key, chain.token.functions.transferFrom(owner.address, ZERO, 1))
    with pytest.raises(ChainError, match="zero address"):
        chain.transact(owner.key, chain.token.functions.approve(ZERO, 1))


def test_transfer_from_needs_balance_even_with_allowance(chain: DevChain):
    owner = chain.new_account(open_tokens=1 * OPEN)
    spender = chain.new_account()
    chain.approve(owner.key, spender.address, 10 * OPEN)
    with pytest.raises(ChainError, match="insufficient balance"):
        chain.transact(spender.key, chain.token.functions.transferFrom(owner.address, spender.address, 2 * OPEN))


def test_unlimited_allowance_is_not_decremented(chain: DevChain):
    owner = chain.new_account(open_tokens=10 * OPEN)
    spender = chain.new_account()
    chain.approve(owner.key, spender.address, 2**256 - 1)
    chain.transact(spender.key, chain.token.functions.transferFrom(owner.address, spender.address, 3 * OPEN))
    assert chain.token.functions.allowance(owner.address, spender.address).call() == 2**256 - 1


def test_permit_sets_allowance_once(chain: DevChain):
    owner = chain.new_account(open_tokens=10 * OPEN)
    spender = chain.new_account()
    before = chain.escrow_of(owner.address)
    chain.deposit_with_permit(owner.key, 4 * OPEN)
    assert chain.escrow_of(owner.address) == before + 4 * OPEN
    assert chain.token.functions.nonces(owner.address).call() == 1

    # a signature from someone else than `owner` is refused
    stranger = Account.create()
    signed = _sign_permit(chain, stranger.key, owner.address, spender.address, OPEN, 1, chain.now() + 100)
    call = chain.token.functions.permit(
        owner.address,
        spender.address,
        OPEN,
        chain.now() + 100,
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    )
    with pytest.raises(ChainError, match="signature invalid"):
        chain.transact(spender.key, call)

    # an expired permit is refused
    deadline = chain.now() - 1
    signed = _sign_permit(chain, owner.key, owner.address, spender.address, OPEN, 1, deadline)
    call = chain.token.functions.permit(
        owner.address,
        spender.address,
        OPEN,
        deadline,
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    )
    with pytest.raises(ChainError, match="expired"):
        chain.transact(spender.key, call)

    # a valid one works once; replaying it fails (the nonce moved)
    deadline = chain.now() + 1000
    signed = _sign_permit(chain, owner.key, owner.address, spender.address, OPEN, 1, deadline)
    call = chain.token.functions.permit(
        owner.address,
        spender.address,
        OPEN,
        deadline,
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    )
    chain.transact(spender.key, call)
    assert chain.token.functions.allowance(owner.address, spender.address).call() == OPEN
    with pytest.raises(ChainError, match="signature invalid"):
        chain.transact(spender.key, call)


def _sign_permit(chain: DevChain, key, owner: str, spender: str, value: int, nonce: int, deadline: int):
    return Account.sign_typed_data(
        key,
        {"name": "Open", "version": "1", "chainId": chain.chain_id, "verifyingContract": chain.token.address},
        {
            "Permit": [
                {"name": n, "type": t}
                for n, t in (
                    ("owner", "address"),
                    ("spender", "address"),
                    ("value", "uint256"),
                    ("nonce", "uint256"),
                    ("deadline", "uint256"),
                )
            ]
        },
        {"owner": owner, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline},
    )
