# pragma version ~=0.4.3
# pragma optimize gas
"""
@title loranet settlement: escrow, batched per-job fee split, pull payouts
@notice Clients deposit OPEN into escrow. Once per epoch the settler calls
        `settle_batch(seq, parties, jobs)`: `parties` lists every address the
        batch touches once, and each job is a few packed words that refer to
        parties by their 16-bit index in that list. The fee split is computed
        here, in basis points, identically to loranet.split.split_fee; credits
        are summed per party in memory and written once per party, and
        recipients pull them with `withdraw()`.

        Job encoding (see services/settlement/packing.py):
          w0 = job_id:128 | fee:96 | client:16 | node:16
          w1 = max_fee:96 | developer:16 | n_verifiers:8 | n_contributors:8
               | verifier[0..7]:16 each (first in the high bits)
          then ceil(n_contributors / 8) words of 8 entries
               (contributor:16 | weight_bps:16), first in the high bits.
"""

interface IERC20:
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable

interface IERC20Permit:
    def permit(owner: address, spender: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32): nonpayable

event Deposited:
    client: indexed(address)
    payer: indexed(address)
    amount: uint256

event EscrowWithdrawn:
    client: indexed(address)
    amount: uint256

event Reserved:
    client: indexed(address)
    jobs: uint256
    amount: uint256

event BatchSettled:
    seq: indexed(uint64)
    merkle_root: bytes32
    jobs: uint256
    total_fees: uint256

event JobRefunded:
    job_id: indexed(bytes16)
    client: indexed(address)
    released: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256

event RoleChanged:
    role: indexed(String[16])
    account: indexed(address)
    enabled: bool

event TreasuryChanged:
    treasury: indexed(address)

event OwnershipTransferred:
    previous: indexed(address)
    owner: indexed(address)

# The split, in basis points; must equal libs/loranet/split.py.
BPS: constant(uint256) = 10000
NODE_BPS: constant(uint256) = 5000
DEVELOPER_BPS: constant(uint256) = 2000
CONTRIBUTORS_BPS: constant(uint256) = 2000
VERIFIERS_BPS: constant(uint256) = 500

# Vyper reserves memory for the largest calldata arguments, and memory costs
# grow quadratically, so these limits are sized for one epoch's batch.
MAX_JOBS: constant(uint256) = 256
MAX_PARTIES: constant(uint256) = 512
MAX_WORDS: constant(uint256) = 1024
MERKLE_DEPTH: constant(uint256) = 9
MAX_VERIFIERS: constant(uint256) = 8
MAX_CONTRIBUTORS: constant(uint256) = 64

MASK16: constant(uint256) = 65535
MASK32: constant(uint256) = 4294967295
MASK96: constant(uint256) = 79228162514264337593543950335
MASK128: constant(uint256) = 340282366920938463463374607431768211455

# Job states. A reservation is stored as client << 96 | max_fee, which is
# always above REFUNDED because a client address is never zero.
SETTLED: constant(uint256) = 1
REFUNDED: constant(uint256) = 2

token: public(immutable(address))
owner: public(address)
treasury: public(address)
is_settler: public(HashMap[address, bool])
last_seq: public(uint64)

credit: public(HashMap[address, uint256])
# reserved:128 | balance:128 per client; balance includes the reserved part.
_escrow: HashMap[address, uint256]
_job_state: HashMap[uint256, uint256]


@deploy
def __init__(open_token: address, treasury: address, settler: address):
    assert open_token != empty(address), "settlement: zero token"
    assert treasury != empty(address), "settlement: zero treasury"
    token = open_token
    self.owner = msg.sender
    self.treasury = treasury
    if settler != empty(address):
        self.is_settler[settler] = True
        log RoleChanged(role="settler", account=settler, enabled=True)
    log OwnershipTransferred(previous=empty(address), owner=msg.sender)


# --- owner -----------------------------------------------------------------

@internal
def _only_owner():
    assert msg.sender == self.owner, "settlement: not owner"


@external
def set_settler(account: address, enabled: bool):
    self._only_owner()
    self.is_settler[account] = enabled
    log RoleChanged(role="settler", account=account, enabled=enabled)


@external
def set_treasury(treasury: address):
    self._only_owner()
    assert treasury != empty(address), "settlement: zero treasury"
    self.treasury = treasury
    log TreasuryChanged(treasury=treasury)


@external
def transfer_ownership(new_owner: address):
    self._only_owner()
    assert new_owner != empty(address), "settlement: zero owner"
    log OwnershipTransferred(previous=self.owner, owner=new_owner)
    self.owner = new_owner


# --- escrow ----------------------------------------------------------------

@internal
def _deposit(payer: address, client: address, amount: uint256):
    assert client != empty(address), "settlement: zero client"
    assert amount > 0, "settlement: zero deposit"
    packed: uint256 = self._escrow[client]
    balance: uint256 = (packed & MASK128) + amount
    assert balance <= MASK128, "settlement: escrow overflow"
    self._escrow[client] = (packed & ~MASK128) | balance
    assert extcall IERC20(token).transferFrom(payer, self, amount), "settlement: transferFrom failed"
    log Deposited(client=client, payer=payer, amount=amount)


@external
@nonreentrant
def deposit(amount: uint256):
    """@notice Move `amount` OPEN (approved beforehand) into the caller's escrow."""
    self._deposit(msg.sender, msg.sender, amount)


@external
@nonreentrant
def deposit_for(client: address, amount: uint256):
    """@notice Fund `client`'s escrow with the caller's OPEN."""
    self._deposit(msg.sender, client, amount)


@external
@nonreentrant
def deposit_with_permit(amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32):
    """@notice Approve by EIP-2612 signature and deposit, in one transaction."""
    extcall IERC20Permit(token).permit(msg.sender, self, amount, deadline, v, r, s)
    self._deposit(msg.sender, msg.sender, amount)


@external
@nonreentrant
def withdraw_escrow(amount: uint256):
    """@notice Take back escrow that no job has reserved."""
    packed: uint256 = self._escrow[msg.sender]
    balance: uint256 = packed & MASK128
    reserved: uint256 = packed >> 128
    assert amount > 0, "settlement: zero amount"
    assert balance - reserved >= amount, "settlement: amount above unreserved escrow"
    self._escrow[msg.sender] = packed - amount
    assert extcall IERC20(token).transfer(msg.sender, amount), "settlement: transfer failed"
    log EscrowWithdrawn(client=msg.sender, amount=amount)


@view
@external
def escrow_of(client: address) -> uint256:
    """@notice The client's escrow balance, reserved part included."""
    return self._escrow[client] & MASK128


@view
@external
def reserved_of(client: address) -> uint256:
    return self._escrow[client] >> 128


@view
@external
def available_of(client: address) -> uint256:
    packed: uint256 = self._escrow[client]
    return (packed & MASK128) - (packed >> 128)


@view
@external
def job_state(job_id: bytes16) -> uint256:
    """@notice 0 unknown, 1 reserved, 2 settled, 3 refunded."""
    state: uint256 = self._job_state[convert(job_id, uint256)]
    if state == 0:
        return 0
    if state == SETTLED:
        return 2
    if state == REFUNDED:
        return 3
    return 1


@view
@external
def job_states(job_ids: DynArray[bytes16, MAX_JOBS]) -> DynArray[uint256, MAX_JOBS]:
    """@notice job_state of many jobs in one call (the settler checks an epoch at once)."""
    out: DynArray[uint256, MAX_JOBS] = []
    state: uint256 = 0
    for job_id: bytes16 in job_ids:
        state = self._job_state[convert(job_id, uint256)]
        if state == 0:
            out.append(0)
        elif state == SETTLED:
            out.append(2)
        elif state == REFUNDED:
            out.append(3)
        else:
            out.append(1)
    return out


@view
@external
def available_of_many(clients: DynArray[address, MAX_PARTIES]) -> DynArray[uint256, MAX_PARTIES]:
    """@notice available_of of many clients in one call."""
    out: DynArray[uint256, MAX_PARTIES] = []
    packed: uint256 = 0
    for client: address in clients:
        packed = self._escrow[client]
        out.append((packed & MASK128) - (packed >> 128))
    return out


@view
@external
def reservation_of(job_id: bytes16) -> (address, uint256):
    state: uint256 = self._job_state[convert(job_id, uint256)]
    if state <= REFUNDED:
        return empty(address), 0
    return convert(convert(state >> 96, uint160), address), state & MASK96


# --- settler ---------------------------------------------------------------

@external
def reserve(clients: DynArray[address, MAX_PARTIES], jobs: DynArray[uint256, MAX_JOBS]):
    """
    @notice Lock each job's max fee in its client's escrow at admission.
            Each word is job_id:128 | max_fee:96 | client index:16 | 0:16.
    """
    assert self.is_settler[msg.sender], "settlement: not settler"
    totals: DynArray[uint256, MAX_PARTIES] = []
    for i: uint256 in range(len(clients), bound=MAX_PARTIES):
        totals.append(0)
    for word: uint256 in jobs:
        job_key: uint256 = word >> 128
        max_fee: uint256 = (word >> 32) & MASK96
        c: uint256 = (word >> 16) & MASK16
        client: address = clients[c]
        assert job_key != 0, "settlement: zero job id"
        assert self._job_state[job_key] == 0, "settlement: job already known"
        self._job_state[job_key] = (convert(client, uint256) << 96) | max_fee
        totals[c] = unsafe_add(totals[c], max_fee | (1 << 128))
    for i: uint256 in range(len(clients), bound=MAX_PARTIES):
        t: uint256 = totals[i]
        if t == 0:
            continue
        amount: uint256 = t & MASK128
        packed: uint256 = self._escrow[clients[i]]
        reserved: uint256 = (packed >> 128) + amount
        assert reserved <= packed & MASK128, "settlement: escrow below reserved max fees"
        self._escrow[clients[i]] = (reserved << 128) | (packed & MASK128)
        log Reserved(client=clients[i], jobs=t >> 128, amount=amount)


@external
def refund(job_ids: DynArray[bytes16, MAX_JOBS]):
    """
    @notice Close rejected jobs without charging anything: a reservation is
            released back to the client's available escrow, and the job id can
            never be settled afterwards.
    """
    assert self.is_settler[msg.sender], "settlement: not settler"
    for job_id: bytes16 in job_ids:
        job_key: uint256 = convert(job_id, uint256)
        assert job_key != 0, "settlement: zero job id"
        state: uint256 = self._job_state[job_key]
        assert state != SETTLED, "settlement: job already settled"
        assert state != REFUNDED, "settlement: job already refunded"
        self._job_state[job_key] = REFUNDED
        client: address = empty(address)
        released: uint256 = 0
        if state != 0:
            client = convert(convert(state >> 96, uint160), address)
            released = state & MASK96
            # reserved lives in the high half; it always covers this job.
            self._escrow[client] = self._escrow[client] - (released << 128)
        log JobRefunded(job_id=job_id, client=client, released=released)


@external
@nonreentrant
def settle_batch(
    seq: uint64,
    parties: DynArray[address, MAX_PARTIES],
    jobs: DynArray[uint256, MAX_WORDS],
) -> bytes32:
    """
    @notice Settle one epoch's jobs. `seq` must be `last_seq + 1`. Reverts as a
            whole if any job was already settled or refunded, has fee above its
            max fee, or a client's escrow cannot cover its charges.
    @return the Merkle root of the batch's job ids
    """
    assert self.is_settler[msg.sender], "settlement: not settler"
    assert seq == self.last_seq + 1, "settlement: sequence must be last_seq + 1"
    self.last_seq = seq

    # Scalars first: memory is paid up to the highest byte touched, so the
    # large arrays go last.
    n_words: uint256 = len(jobs)
    n_parties: uint256 = len(parties)
    cursor: uint256 = 0
    n_jobs: uint256 = 0
    total: uint256 = 0
    to_treasury: uint256 = 0
    w0: uint256 = 0
    w1: uint256 = 0
    fee: uint256 = 0
    paid: uint256 = 0
    share: uint256 = 0
    state: uint256 = 0
    release: uint256 = 0
    entry: uint256 = 0
    packed: uint256 = 0
    weights: uint256 = 0
    nv: uint256 = 0
    nc: uint256 = 0
    pool: uint256 = 0
    node: bytes32 = empty(bytes32)
    level: uint256 = 0
    # Merkle subtrees still waiting for a sibling, one per level (binary counter).
    pending: bytes32[MERKLE_DEPTH + 1] = empty(bytes32[MERKLE_DEPTH + 1])
    # Per party: credit, then client flow (release:128 | charge:128).
    sums: DynArray[uint256, 2 * MAX_PARTIES] = []
    for i: uint256 in range(n_parties, bound=MAX_PARTIES):
        sums.append(0)
        sums.append(0)

    for _: uint256 in range(MAX_JOBS):
        if cursor >= n_words:
            break
        assert unsafe_add(cursor, 1) < n_words, "settlement: truncated job words"
        w0 = jobs[cursor]
        w1 = jobs[unsafe_add(cursor, 1)]
        cursor = unsafe_add(cursor, 2)
        fee = (w0 >> 32) & MASK96
        assert fee <= w1 >> 160, "settlement: fee above max_fee"
        state = self._job_state[w0 >> 128]
        release = 0
        if state != 0:
            assert state > REFUNDED, "settlement: job already settled or refunded"
            assert state == (convert(parties[(w0 >> 16) & MASK16], uint256) << 96) | (w1 >> 160), "settlement: job differs from its reservation"
            release = w1 >> 160
        else:
            assert w0 >> 128 != 0, "settlement: zero job id"
        self._job_state[w0 >> 128] = SETTLED
        entry = unsafe_add(unsafe_mul((w0 >> 16) & MASK16, 2), 1)
        sums[entry] = unsafe_add(sums[entry], fee | (release << 128))

        # node and developer
        share = unsafe_div(unsafe_mul(fee, NODE_BPS), BPS)
        paid = share
        entry = unsafe_mul(w0 & MASK16, 2)
        sums[entry] = unsafe_add(sums[entry], share)
        share = unsafe_div(unsafe_mul(fee, DEVELOPER_BPS), BPS)
        paid = unsafe_add(paid, share)
        entry = unsafe_mul((w1 >> 144) & MASK16, 2)
        sums[entry] = unsafe_add(sums[entry], share)

        # verifiers: equal parts of their pool
        nv = (w1 >> 136) & 255
        if nv != 0:
            share = unsafe_div(unsafe_div(unsafe_mul(fee, VERIFIERS_BPS), BPS), nv)
            packed = w1 << 128
            for k: uint256 in range(nv, bound=MAX_VERIFIERS):
                entry = unsafe_mul(packed >> 240, 2)
                sums[entry] = unsafe_add(sums[entry], share)
                packed = packed << 16
            paid = unsafe_add(paid, unsafe_mul(share, nv))

        # contributors: their pool by attribution weights summing to BPS
        nc = (w1 >> 128) & 255
        if nc != 0:
            assert unsafe_add(cursor, unsafe_add(nc, 7) >> 3) <= n_words, "settlement: truncated job words"
            pool = unsafe_div(unsafe_mul(fee, CONTRIBUTORS_BPS), BPS)
            weights = 0
            # Each word is consumed from its high end, 32 bits per contributor.
            for k: uint256 in range(nc, bound=MAX_CONTRIBUTORS):
                if k & 7 == 0:
                    packed = jobs[cursor]
                    cursor = unsafe_add(cursor, 1)
                entry = (packed >> 224) & MASK16
                weights = unsafe_add(weights, entry)
                share = unsafe_div(unsafe_mul(pool, entry), BPS)
                paid = unsafe_add(paid, share)
                entry = unsafe_mul(packed >> 240, 2)
                sums[entry] = unsafe_add(sums[entry], share)
                packed = packed << 32
            assert weights == BPS, "settlement: contributor weights must sum to 10000"

        # paid <= fee: every share is a floor of a fraction of its pool.
        to_treasury = unsafe_add(to_treasury, unsafe_sub(fee, paid))
        total = unsafe_add(total, fee)
        node = keccak256(convert((w0 >> 128) << 128, bytes32))
        level = 0
        for _d: uint256 in range(MERKLE_DEPTH):
            if (n_jobs >> level) & 1 == 0:
                break
            # sorted pair hashing (inlined: an internal call costs more than the hash)
            if convert(pending[level], uint256) < convert(node, uint256):
                node = keccak256(concat(pending[level], node))
            else:
                node = keccak256(concat(node, pending[level]))
            level = unsafe_add(level, 1)
        pending[level] = node
        n_jobs = unsafe_add(n_jobs, 1)

    assert n_jobs != 0, "settlement: empty batch"
    assert cursor == n_words, "settlement: trailing or truncated job words"

    # Write each party's sums once.
    for i: uint256 in range(n_parties, bound=MAX_PARTIES):
        share = sums[unsafe_mul(i, 2)]
        if share != 0:
            self.credit[parties[i]] = unsafe_add(self.credit[parties[i]], share)
        entry = sums[unsafe_add(unsafe_mul(i, 2), 1)]
        if entry != 0:
            state = self._escrow[parties[i]]
            # release the client's reservations, then charge the fees
            release = (state >> 128) - (entry >> 128)
            fee = entry & MASK128
            assert (state & MASK128) >= fee + release, "settlement: client escrow cannot cover its fees"
            self._escrow[parties[i]] = (release << 128) | unsafe_sub(state & MASK128, fee)
    if to_treasury != 0:
        self.credit[self.treasury] += to_treasury

    # The Merkle root: pending subtrees merged from the smallest up, which
    # equals pairing each level left to right and carrying an odd node up.
    node = empty(bytes32)
    for d: uint256 in range(MERKLE_DEPTH + 1):
        if (n_jobs >> d) & 1 == 1:
            if node == empty(bytes32):
                node = pending[d]
            else:
                node = self._pair(pending[d], node)

    log BatchSettled(
        seq=seq,
        merkle_root=node,
        jobs=n_jobs,
        total_fees=total,
    )
    return node


@pure
@internal
def _pair(a: bytes32, b: bytes32) -> bytes32:
    if convert(a, uint256) < convert(b, uint256):
        return keccak256(concat(a, b))
    return keccak256(concat(b, a))


# --- everyone --------------------------------------------------------------

@external
@nonreentrant
def withdraw() -> uint256:
    """@notice Pay out the caller's accrued credit."""
    amount: uint256 = self.credit[msg.sender]
    assert amount > 0, "settlement: nothing to withdraw"
    self.credit[msg.sender] = 0
    assert extcall IERC20(token).transfer(msg.sender, amount), "settlement: transfer failed"
    log Withdrawn(account=msg.sender, amount=amount)
    return amount
