# pragma version ~=0.4.3
# pragma optimize gas
"""
@title OPEN, the loranet settlement token
@notice ERC-20 with a fixed supply minted once to the deployer (no mint
        afterwards) and EIP-2612 permit. Written for loranet; no library code.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

name: public(constant(String[4])) = "Open"
symbol: public(constant(String[4])) = "OPEN"
decimals: public(constant(uint8)) = 18
VERSION: constant(String[1]) = "1"

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
PERMIT_TYPEHASH: constant(bytes32) = keccak256(
    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)
# secp256k1n / 2: signatures with a higher s are malleable twins (EIP-2).
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
nonces: public(HashMap[address, uint256])

_cached_chain_id: uint256
_cached_domain_separator: bytes32


@deploy
def __init__(supply: uint256):
    self.totalSupply = supply
    self.balanceOf[msg.sender] = supply
    self._cached_chain_id = chain.id
    self._cached_domain_separator = self._domain_separator()
    log Transfer(sender=empty(address), receiver=msg.sender, value=supply)


@view
@internal
def _domain_separator() -> bytes32:
    return keccak256(
        abi_encode(
            EIP712_DOMAIN_TYPEHASH,
            keccak256(name),
            keccak256(VERSION),
            chain.id,
            self,
        )
    )


@view
@external
def DOMAIN_SEPARATOR() -> bytes32:
    # Recomputed after a chain fork changes the chain id.
    if chain.id == self._cached_chain_id:
        return self._cached_domain_separator
    return self._domain_separator()


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "erc20: transfer to the zero address"
    balance: uint256 = self.balanceOf[sender]
    assert balance >= amount, "erc20: insufficient balance"
    self.balanceOf[sender] = unsafe_sub(balance, amount)
    # Cannot overflow: the sum of balances is the fixed total supply.
    self.balanceOf[receiver] = unsafe_add(self.balanceOf[receiver], amount)
    log Transfer(sender=sender, receiver=receiver, value=amount)


@internal
def _approve(owner: address, spender: address, amount: uint256):
    assert spender != empty(address), "erc20: approve to the zero address"
    self.allowance[owner][spender] = amount
    log Approval(owner=owner, spender=spender, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    # An allowance of max_value(uint256) is unlimited and never decremented.
    if allowed != max_value(uint256):
        assert allowed >= amount, "erc20: insufficient allowance"
        self.allowance[sender][msg.sender] = unsafe_sub(allowed, amount)
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self._approve(msg.sender, spender, amount)
    return True


@external
def permit(
    owner: address,
    spender: address,
    amount: uint256,
    deadline: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @notice EIP-2612: set an allowance from an off-chain signature by `owner`.
    """
    assert owner != empty(address), "erc20: permit for the zero address"
    assert block.timestamp <= deadline, "erc20: permit expired"
    assert convert(s, uint256) <= HALF_N, "erc20: permit signature malleable"
    nonce: uint256 = self.nonces[owner]
    separator: bytes32 = self._cached_domain_separator
    if chain.id != self._cached_chain_id:
        separator = self._domain_separator()
    digest: bytes32 = keccak256(
        concat(
            b"\x19\x01",
            separator,
            keccak256(abi_encode(PERMIT_TYPEHASH, owner, spender, amount, nonce, deadline)),
        )
    )
    signer: address = ecrecover(digest, v, r, s)
    assert signer == owner, "erc20: permit signature invalid"
    self.nonces[owner] = unsafe_add(nonce, 1)
    self._approve(owner, spender, amount)
