# pragma version ~=0.4.3
# pragma optimize gas
"""
@title loranet settlement: escrow, batched per-job fee split, pull payouts
@notice Clients deposit OPEN into escrow. Once per epoch the settler calls
        `settle_batch(seq, parties, accounts, pooled, siblings, jobs)`:
        `parties` lists every client, node, developer and verifier the batch
        touches once, and each job is two packed words that refer to parties
        by their 16-bit index in that list. The fee split is computed here, in
        basis points, identically to loranet.split.split_fee, and summed per
        party in memory; each party's sum is added to `credit`, one write per
        party (few parties, paid every epoch). The data contributors' pools
        of the batch's jobs are summed into one pool, which the `pooled` words
        divide among `accounts` (each job's division by its answer's attribution is
        the settler's, recorded with the job; here the sum is checked: never
        above the pool, the rest to the treasury). They are paid through the
        balances tree (many contributors, each in few jobs): a sparse Merkle
        tree of depth
        BALANCES_DEPTH whose leaf at position `id` is
          keccak256(id:32 bytes | account:32 | cumulative:32)
        (cumulative: everything ever owed to that position; an unused
        position is 0, and a parent of two zero children is 0). The batch
        gives each pooled party's position, previous cumulative and amount,
        plus the siblings the update needs; the contract checks them against the
        stored root and writes the new root: one word per batch, however many
        contributors it pays. A contributor (or anyone for them) proves its
        leaf against any recorded root with `claim()`, which credits what was
        not yet claimed; `withdraw()` pays credit out.
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
    balances_root: bytes32
    pooled: uint256

event Claimed:
    account: indexed(address)
    position: indexed(uint256)
    amount: uint256
    cumulative: uint256

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
MAX_WORDS: constant(uint256) = 512
MERKLE_DEPTH: constant(uint256) = 9
# The balances tree: 2**24 contributor positions; siblings one batch may give.
BALANCES_DEPTH: constant(uint256) = 24
MAX_SIBLINGS: constant(uint256) = 1024
MAX_VERIFIERS: constant(uint256) = 8

MASK16: constant(uint256) = 65535
MASK32: constant(uint256) = 4294967295
MASK96: constant(uint256) = 79228162514264337593543950335
MASK112: constant(uint256) = 5192296858534827628530496329220095
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
# The balances tree's root now, and after each batch that changed it (claims may name any).
balances_root: public(bytes32)
balances_at: public(HashMap[uint64, bytes32])
# position -> the cumulative amount already claimed from it
claimed: public(HashMap[uint256, uint256])
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
    accounts: DynArray[address, MAX_PARTIES],
    pooled: DynArray[uint256, MAX_PARTIES],
    siblings: DynArray[bytes32, MAX_SIBLINGS],
    jobs: DynArray[uint256, MAX_WORDS],
) -> bytes32:
    """
    @notice Settle one epoch's jobs. `seq` must be `last_seq + 1`. Reverts as a
            whole if any job was already settled or refunded, has fee above its
            max fee, or a client's escrow cannot cover its charges. `accounts`
            share the data pool: `pooled` has one word per account, position:24 << 232 | kind:8 << 224 |
            previous cumulative:112 << 112 | amount:112; kind 0: the leaf at
            that position moves by amount, kind 1: the same at an unused
            position (the tree's words in increasing position), kind 2: amount
            credited directly (no tree). `siblings`: the untouched subtrees'
            roots the tree update meets, in the order it meets them (below).
            Job words: w0 = job_id:128 | fee:96 | client:16 | node:16,
            w1 = max_fee:96 | developer:16 | n_verifiers:8 | data:8 |
            verifier[0..7]:16 each (data 1: the job's contributor pool joins
            the batch's; 0: it goes to the treasury).
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
    nv: uint256 = 0
    pool: uint256 = 0
    pooled_sum: uint256 = 0
    node: bytes32 = empty(bytes32)
    level: uint256 = 0
    m: uint256 = 0
    up: uint256 = 0
    at: uint256 = 0
    cum: uint256 = 0
    sib: bytes32 = empty(bytes32)
    left_old: bytes32 = empty(bytes32)
    right_old: bytes32 = empty(bytes32)
    left_new: bytes32 = empty(bytes32)
    right_new: bytes32 = empty(bytes32)
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

        # data contributors: the job's pool joins the batch's, which the pooled words divide
        if (w1 >> 128) & 255 != 0:
            pool = unsafe_add(pool, unsafe_div(unsafe_mul(fee, CONTRIBUTORS_BPS), BPS))
            paid = unsafe_add(paid, unsafe_div(unsafe_mul(fee, CONTRIBUTORS_BPS), BPS))

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

    merkle_root: bytes32 = self._fold(pending, n_jobs)

    # Write each direct party's sums once (clients: release their reservations, charge their fees).
    for i: uint256 in range(n_parties, bound=MAX_PARTIES):
        share = sums[unsafe_mul(i, 2)]
        if share != 0:
            self.credit[parties[i]] = unsafe_add(self.credit[parties[i]], share)
        entry = sums[unsafe_add(unsafe_mul(i, 2), 1)]
        if entry != 0:
            state = self._escrow[parties[i]]
            release = (state >> 128) - (entry >> 128)
            fee = entry & MASK128
            assert (state & MASK128) >= fee + release, "settlement: client escrow cannot cover its fees"
            self._escrow[parties[i]] = (release << 128) | unsafe_sub(state & MASK128, fee)

    # The pooled parties: their leaves before and after, then both roots at once, level by level.
    assert len(pooled) == len(accounts), "settlement: one pooled word per account"
    positions: DynArray[uint256, MAX_PARTIES] = []
    olds: DynArray[bytes32, MAX_PARTIES] = []
    news: DynArray[bytes32, MAX_PARTIES] = []
    for i: uint256 in range(len(pooled), bound=MAX_PARTIES):
        entry = pooled[i]
        share = entry & MASK112
        pooled_sum = unsafe_add(pooled_sum, share)
        packed = convert(accounts[i], uint256)
        m = (entry >> 224) & 255
        if m == 2:
            self.credit[convert(convert(packed, uint160), address)] += share
            continue
        level = entry >> 232
        assert len(positions) == 0 or level > positions[unsafe_sub(len(positions), 1)], "settlement: pooled parties out of position order"
        cum = (entry >> 112) & MASK112
        if m == 1:
            assert cum == 0, "settlement: a new position has no previous balance"
            olds.append(empty(bytes32))
        else:
            assert m == 0, "settlement: unknown pooled word kind"
            olds.append(keccak256(concat(convert(level, bytes32), convert(packed, bytes32), convert(cum, bytes32))))
        cum = unsafe_add(cum, share)
        assert cum <= MASK112, "settlement: cumulative balance overflow"
        news.append(keccak256(concat(convert(level, bytes32), convert(packed, bytes32), convert(cum, bytes32))))
        positions.append(level)
    # The pooled amounts stay within the batch's data pool; the rest goes to the treasury.
    assert pooled_sum <= pool, "settlement: pooled amounts above the batch's data pool"
    to_treasury = unsafe_add(to_treasury, unsafe_sub(pool, pooled_sum))
    if to_treasury != 0:
        self.credit[self.treasury] += to_treasury
    m = len(positions)
    new_root: bytes32 = self.balances_root
    if m != 0:
        cursor = 0
        for _d: uint256 in range(BALANCES_DEPTH):
            up = 0
            at = 0
            for _i: uint256 in range(MAX_PARTIES):
                if at >= m:
                    break
                level = positions[at]
                if level & 1 == 0 and unsafe_add(at, 1) < m and positions[unsafe_add(at, 1)] == unsafe_add(level, 1):
                    left_old = olds[at]
                    right_old = olds[unsafe_add(at, 1)]
                    left_new = news[at]
                    right_new = news[unsafe_add(at, 1)]
                    at = unsafe_add(at, 2)
                else:
                    sib = siblings[cursor]
                    cursor = unsafe_add(cursor, 1)
                    if level & 1 == 0:
                        left_old = olds[at]
                        right_old = sib
                        left_new = news[at]
                        right_new = sib
                    else:
                        left_old = sib
                        right_old = olds[at]
                        left_new = sib
                        right_new = news[at]
                    at = unsafe_add(at, 1)
                positions[up] = level >> 1
                if left_old == empty(bytes32) and right_old == empty(bytes32):
                    olds[up] = empty(bytes32)
                else:
                    olds[up] = keccak256(concat(left_old, right_old))
                news[up] = keccak256(concat(left_new, right_new))
                up = unsafe_add(up, 1)
            m = up
        assert cursor == len(siblings), "settlement: unused balance siblings"
        assert olds[0] == self.balances_root, "settlement: balance proofs do not match the balances root"
        new_root = news[0]
        self.balances_root = new_root
        self.balances_at[seq] = new_root
    else:
        assert len(siblings) == 0, "settlement: balance siblings without a tree update"

    log BatchSettled(
        seq=seq,
        merkle_root=merkle_root,
        jobs=n_jobs,
        total_fees=total,
        balances_root=new_root,
        pooled=len(pooled),
    )
    return merkle_root


@pure
@internal
def _fold(pending: bytes32[MERKLE_DEPTH + 1], n: uint256) -> bytes32:
    """The root of a tree of `n` leaves from its pending subtrees (one per set bit of n), merged from the
    smallest up: equal to pairing each level left to right and carrying an odd node up."""
    node: bytes32 = empty(bytes32)
    for d: uint256 in range(MERKLE_DEPTH + 1):
        if (n >> d) & 1 == 1:
            if node == empty(bytes32):
                node = pending[d]
            else:
                node = self._pair(pending[d], node)
    return node


@pure
@internal
def _pair(a: bytes32, b: bytes32) -> bytes32:
    if convert(a, uint256) < convert(b, uint256):
        return keccak256(concat(a, b))
    return keccak256(concat(b, a))


# --- everyone --------------------------------------------------------------

@external
def claim(account: address, position: uint256, cumulative: uint256, seq: uint64, proof: bytes32[BALANCES_DEPTH]) -> uint256:
    """
    @notice Credit `account` with what its balances-tree leaf (position,
            account, cumulative) holds beyond what was claimed from it, proved
            against the root recorded at batch `seq` (any batch: a cumulative
            only grows). Anyone may send it; only the account is paid.
    @return the amount credited
    """
    root: bytes32 = self.balances_at[seq]
    assert root != empty(bytes32), "settlement: no balances root at that batch"
    assert position < 1 << BALANCES_DEPTH, "settlement: balance position out of range"
    node: bytes32 = keccak256(concat(convert(position, bytes32), convert(account, bytes32), convert(cumulative, bytes32)))
    for level: uint256 in range(BALANCES_DEPTH):
        if (position >> level) & 1 == 0:
            node = keccak256(concat(node, proof[level]))
        else:
            node = keccak256(concat(proof[level], node))
    assert node == root, "settlement: claim does not match that batch's balances root"
    before: uint256 = self.claimed[position]
    assert cumulative > before, "settlement: nothing new to claim"
    self.claimed[position] = cumulative
    self.credit[account] += cumulative - before
    log Claimed(account=account, position=position, amount=cumulative - before, cumulative=cumulative)
    return cumulative - before


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
