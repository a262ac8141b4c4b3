# pragma version ~=0.4.3
# pragma optimize gas
"""
@title Baseline for bench/settle_gas.py: one transaction per job, 7 pushes
@notice The design loranet does not use: each job is settled alone and every
        share is pushed to its recipient with an ERC-20 transfer. Same split
        rule as Settlement.vy; not for production.
"""

interface IERC20:
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable

event JobSettled:
    job_id: indexed(bytes16)
    client: indexed(address)
    fee: uint256

BPS: constant(uint256) = 10000

token: public(immutable(IERC20))
treasury: public(address)
settler: public(address)
escrow: public(HashMap[address, uint256])
settled: public(HashMap[bytes16, bool])


@deploy
def __init__(open_token: address, treasury: address):
    token = IERC20(open_token)
    self.treasury = treasury
    self.settler = msg.sender


@external
def deposit(amount: uint256):
    self.escrow[msg.sender] += amount
    assert extcall token.transferFrom(msg.sender, self, amount)


@internal
def _push(receiver: address, amount: uint256):
    if amount != 0:
        assert extcall token.transfer(receiver, amount)


@external
def settle_job(
    job_id: bytes16,
    client: address,
    fee: uint256,
    max_fee: uint256,
    node: address,
    developer: address,
    verifiers: DynArray[address, 8],
    contributors: DynArray[address, 64],
    weights: DynArray[uint256, 64],
):
    assert msg.sender == self.settler
    assert not self.settled[job_id]
    assert fee <= max_fee
    assert len(contributors) == len(weights)
    self.settled[job_id] = True
    self.escrow[client] -= fee
    paid: uint256 = fee * 5000 // BPS
    self._push(node, fee * 5000 // BPS)
    share: uint256 = fee * 2000 // BPS
    paid += share
    self._push(developer, share)
    if len(verifiers) > 0:
        share = fee * 500 // BPS // len(verifiers)
        for v: address in verifiers:
            self._push(v, share)
            paid += share
    if len(contributors) > 0:
        pool: uint256 = fee * 2000 // BPS
        total_weight: uint256 = 0
        for i: uint256 in range(len(contributors), bound=64):
            share = pool * weights[i] // BPS
            total_weight += weights[i]
            self._push(contributors[i], share)
            paid += share
        assert total_weight == BPS
    self._push(self.treasury, fee - paid)
    log JobSettled(job_id=job_id, client=client, fee=fee)
