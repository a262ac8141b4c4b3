# pragma version ~=0.4.3
# pragma optimize gas
"""
@title loranet registry: node stakes, adapters, contributors
@notice Nodes stake OPEN (at least `min_stake` to be active) and bind their
        Ed25519 key and payout address. Unstaking goes through a cooldown
        during which the stake can still be slashed. A staked node declares
        its hardware, memory, region and price (`declare`): the network's map,
        which schedulers check heartbeats against. Adapters map to their
        developer; contributors get compact uint32 ids.
"""

interface IERC20:
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable

struct NodeSpec:
    device: String[64]
    memory_mb: uint64
    region: String[32]
    price: uint256  # OPEN wei per million tokens the node asks
    dtype: String[16]  # the precision its weights are served in (float32, bfloat16, float16, ...)

struct Node:
    ed25519_key: bytes32
    payout: address
    stake: uint256
    unbonding: uint256
    unbonding_until: uint256

event Staked:
    node: indexed(address)
    ed25519_key: bytes32
    payout: address
    amount: uint256
    stake: uint256

event NodeDeclared:
    node: indexed(address)
    device: String[64]
    memory_mb: uint64
    region: String[32]
    price: uint256
    dtype: String[16]

event VerifierRegistered:
    verifier: indexed(address)
    enabled: bool

event UnstakeRequested:
    node: indexed(address)
    amount: uint256
    unbonding_until: uint256

event StakeWithdrawn:
    node: indexed(address)
    amount: uint256

event Slashed:
    node: indexed(address)
    amount: uint256
    evidence_hash: indexed(bytes32)
    slasher: address

event PayoutChanged:
    node: indexed(address)
    payout: address

event AdapterRegistered:
    adapter_id: indexed(bytes32)
    developer: indexed(address)

event ContributorRegistered:
    contributor_id: indexed(uint32)
    contributor: indexed(address)

event DatanetVersioned:
    datanet: indexed(bytes32)
    version: indexed(uint64)
    merkle_root: bytes32

event RoleChanged:
    role: indexed(String[16])
    account: indexed(address)
    enabled: bool

event ParameterChanged:
    parameter: indexed(String[16])
    value: uint256

event TreasuryChanged:
    treasury: indexed(address)

event OwnershipTransferred:
    previous: indexed(address)
    owner: indexed(address)

token: public(immutable(IERC20))
owner: public(address)
treasury: public(address)
min_stake: public(uint256)
cooldown: public(uint256)

is_slasher: public(HashMap[address, bool])
is_registrar: public(HashMap[address, bool])

nodes: public(HashMap[address, Node])
specs: public(HashMap[address, NodeSpec])
# Stakers that verify (their bound Ed25519 key signs verdicts); a verifier's stake is slashable as a node's.
is_verifier: public(HashMap[address, bool])
node_of_key: public(HashMap[bytes32, address])
evidence_used: public(HashMap[bytes32, bool])

adapter_developer: public(HashMap[bytes32, address])
contributor_address: public(HashMap[uint32, address])
contributor_id: public(HashMap[address, uint32])
contributor_count: public(uint32)
# keccak256(datanet name) -> version -> Merkle root of its contribution ids (write-once)
datanet_root: public(HashMap[bytes32, HashMap[uint64, bytes32]])


@deploy
def __init__(open_token: address, treasury: address, min_stake: uint256, cooldown: uint256):
    assert open_token != empty(address), "registry: zero token"
    assert treasury != empty(address), "registry: zero treasury"
    token = IERC20(open_token)
    self.owner = msg.sender
    self.treasury = treasury
    self.min_stake = min_stake
    self.cooldown = cooldown
    log OwnershipTransferred(previous=empty(address), owner=msg.sender)


# --- owner -----------------------------------------------------------------

@internal
def _only_owner():
    assert msg.sender == self.owner, "registry: not owner"


@external
def set_slasher(account: address, enabled: bool):
    self._only_owner()
    self.is_slasher[account] = enabled
    log RoleChanged(role="slasher", account=account, enabled=enabled)


@external
def set_registrar(account: address, enabled: bool):
    self._only_owner()
    self.is_registrar[account] = enabled
    log RoleChanged(role="registrar", account=account, enabled=enabled)


@external
def set_treasury(treasury: address):
    self._only_owner()
    assert treasury != empty(address), "registry: zero treasury"
    self.treasury = treasury
    log TreasuryChanged(treasury=treasury)


@external
def set_min_stake(amount: uint256):
    self._only_owner()
    self.min_stake = amount
    log ParameterChanged(parameter="min_stake", value=amount)


@external
def set_cooldown(seconds: uint256):
    self._only_owner()
    self.cooldown = seconds
    log ParameterChanged(parameter="cooldown", value=seconds)


@external
def transfer_ownership(new_owner: address):
    self._only_owner()
    assert new_owner != empty(address), "registry: zero owner"
    log OwnershipTransferred(previous=self.owner, owner=new_owner)
    self.owner = new_owner


# --- nodes -----------------------------------------------------------------

@external
@nonreentrant
def stake(amount: uint256, ed25519_key: bytes32, payout: address):
    """
    @notice Add `amount` OPEN (approved beforehand) to the caller's stake. The
            first stake binds `ed25519_key` to the caller for good; later
            stakes must name the same key. `payout` updates the payout address.
    """
    assert amount > 0, "registry: zero stake"
    assert ed25519_key != empty(bytes32), "registry: zero ed25519 key"
    assert payout != empty(address), "registry: zero payout address"
    node: Node = self.nodes[msg.sender]
    if node.ed25519_key == empty(bytes32):
        assert self.node_of_key[ed25519_key] == empty(address), "registry: ed25519 key already bound"
        self.node_of_key[ed25519_key] = msg.sender
        node.ed25519_key = ed25519_key
    else:
        assert node.ed25519_key == ed25519_key, "registry: ed25519 key differs from the bound key"
    node.payout = payout
    node.stake += amount
    assert node.stake >= self.min_stake, "registry: stake below minimum"
    self.nodes[msg.sender] = node
    assert extcall token.transferFrom(msg.sender, self, amount), "registry: transferFrom failed"
    log Staked(node=msg.sender, ed25519_key=ed25519_key, payout=payout, amount=amount, stake=node.stake)


@external
def declare(device: String[64], memory_mb: uint64, region: String[32], price: uint256, dtype: String[16]):
    """
    @notice Declare (or update) the caller's hardware, memory, region, price
            and the precision it serves weights in; the caller must have
            bound its key by staking.
    """
    assert self.nodes[msg.sender].ed25519_key != empty(bytes32), "registry: not a node (stake first)"
    assert len(device) > 0, "registry: empty device"
    assert len(region) > 0, "registry: empty region"
    assert memory_mb > 0, "registry: zero memory"
    assert len(dtype) > 0, "registry: empty dtype"
    self.specs[msg.sender] = NodeSpec(device=device, memory_mb=memory_mb, region=region, price=price, dtype=dtype)
    log NodeDeclared(node=msg.sender, device=device, memory_mb=memory_mb, region=region, price=price, dtype=dtype)


@external
def register_verifier(enabled: bool):
    """
    @notice Register (or retire) the caller as a verifier: its bound Ed25519
            key's verdicts count while it is active (staked at least min_stake).
    """
    assert self.nodes[msg.sender].ed25519_key != empty(bytes32), "registry: not staked (stake first)"
    self.is_verifier[msg.sender] = enabled
    log VerifierRegistered(verifier=msg.sender, enabled=enabled)


@view
@external
def verifier_of_key(ed25519_key: bytes32) -> address:
    """@notice The active, registered verifier that bound this key, or the zero address."""
    staker: address = self.node_of_key[ed25519_key]
    if staker == empty(address) or not self.is_verifier[staker]:
        return empty(address)
    record: Node = self.nodes[staker]
    if record.stake == 0 or record.stake < self.min_stake:
        return empty(address)
    return staker


@external
def set_payout(payout: address):
    assert payout != empty(address), "registry: zero payout address"
    assert self.nodes[msg.sender].ed25519_key != empty(bytes32), "registry: not a node"
    self.nodes[msg.sender].payout = payout
    log PayoutChanged(node=msg.sender, payout=payout)


@external
def request_unstake(amount: uint256):
    """
    @notice Move `amount` of the caller's stake into unbonding; it can be
            withdrawn after the cooldown and stays slashable until then. A new
            request restarts the cooldown for everything unbonding.
    """
    assert amount > 0, "registry: zero amount"
    node: Node = self.nodes[msg.sender]
    assert node.stake >= amount, "registry: amount above stake"
    node.stake = unsafe_sub(node.stake, amount)
    node.unbonding += amount
    node.unbonding_until = block.timestamp + self.cooldown
    self.nodes[msg.sender] = node
    log UnstakeRequested(node=msg.sender, amount=amount, unbonding_until=node.unbonding_until)


@external
@nonreentrant
def withdraw_stake() -> uint256:
    """
    @notice Withdraw everything unbonding once the cooldown is over.
    """
    node: Node = self.nodes[msg.sender]
    amount: uint256 = node.unbonding
    assert amount > 0, "registry: nothing unbonding"
    assert block.timestamp >= node.unbonding_until, "registry: cooldown not over"
    self.nodes[msg.sender].unbonding = 0
    assert extcall token.transfer(msg.sender, amount), "registry: transfer failed"
    log StakeWithdrawn(node=msg.sender, amount=amount)
    return amount


@external
@nonreentrant
def slash(node: address, amount: uint256, evidence_hash: bytes32) -> uint256:
    """
    @notice Slash up to `amount` from `node` (stake first, then unbonding) to
            the treasury. Each piece of evidence can be used once.
    @return the amount actually slashed
    """
    assert self.is_slasher[msg.sender], "registry: not slasher"
    assert evidence_hash != empty(bytes32), "registry: zero evidence hash"
    assert not self.evidence_used[evidence_hash], "registry: evidence already used"
    record: Node = self.nodes[node]
    assert record.ed25519_key != empty(bytes32), "registry: not a node"
    self.evidence_used[evidence_hash] = True
    slashed: uint256 = min(amount, record.stake + record.unbonding)
    from_stake: uint256 = min(slashed, record.stake)
    record.stake = unsafe_sub(record.stake, from_stake)
    record.unbonding = unsafe_sub(record.unbonding, unsafe_sub(slashed, from_stake))
    self.nodes[node] = record
    if slashed > 0:
        assert extcall token.transfer(self.treasury, slashed), "registry: transfer failed"
    log Slashed(node=node, amount=slashed, evidence_hash=evidence_hash, slasher=msg.sender)
    return slashed


@view
@external
def is_active(node: address) -> bool:
    record: Node = self.nodes[node]
    return record.ed25519_key != empty(bytes32) and record.stake > 0 and record.stake >= self.min_stake


# --- adapters and contributors --------------------------------------------

@external
def register_adapter(adapter_id: bytes32, developer: address):
    """
    @notice Map `adapter_id` to `developer`. A new adapter can be registered by
            its developer or a registrar; a registered one can be handed over
            by its current developer or the owner.
    """
    assert adapter_id != empty(bytes32), "registry: zero adapter id"
    assert developer != empty(address), "registry: zero developer"
    current: address = self.adapter_developer[adapter_id]
    if current == empty(address):
        assert msg.sender == developer or self.is_registrar[msg.sender], "registry: not developer or registrar"
    else:
        assert msg.sender == current or msg.sender == self.owner, "registry: adapter registered to another developer"
    self.adapter_developer[adapter_id] = developer
    log AdapterRegistered(adapter_id=adapter_id, developer=developer)


@external
def register_contributor(contributor: address) -> uint32:
    """
    @notice Give `contributor` a compact id (1, 2, ...); idempotent.
    """
    assert contributor != empty(address), "registry: zero contributor"
    cid: uint32 = self.contributor_id[contributor]
    if cid != 0:
        return cid
    cid = self.contributor_count + 1
    self.contributor_count = cid
    self.contributor_id[contributor] = cid
    self.contributor_address[cid] = contributor
    log ContributorRegistered(contributor_id=cid, contributor=contributor)
    return cid


@external
def record_datanet_version(datanet: bytes32, version: uint64, merkle_root: bytes32):
    """
    @notice Record the Merkle root of a datanet version's contributions (a registrar). Write-once: a
            version, once recorded, never changes, so a payout can be checked against what was contributed.
    """
    assert self.is_registrar[msg.sender], "registry: not a registrar"
    assert merkle_root != empty(bytes32), "registry: zero root"
    assert self.datanet_root[datanet][version] == empty(bytes32), "registry: datanet version already recorded"
    self.datanet_root[datanet][version] = merkle_root
    log DatanetVersioned(datanet=datanet, version=version, merkle_root=merkle_root)
