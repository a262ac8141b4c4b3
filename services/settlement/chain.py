"""Contract calls: the OPEN token, the Registry and Settlement, on one chain.

`Chain` attaches to a deployment (the three contracts' addresses) over a `Transport`
(transport.py: connect, sign, send, wait) and calls the contracts; it deploys nothing and
funds nobody. `Chain.from_settings` builds the settlement service's chain from its typed
settings. Deploying, faucets and time travel are devchain.py's, for the devnet and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address

from loranet import protocol as p
from services.settlement.balances import CREDIT, BalanceTree, contributor_amounts
from services.settlement.contracts import compile_contract
from services.settlement.merkle import merkle_root
from services.settlement.packing import (
    Reservation,
    SettleJob,
    encode_batch,
    encode_reservations,
    job_id_bytes,
)
from services.settlement.transport import ChainError, Transport, TxInfo, address_of, key_hex

if TYPE_CHECKING:
    from services.settlement.settings import SettlementSettings

JOB_STATES = ("unknown", "reserved", "settled", "refunded")


@dataclass(frozen=True)
class Deployment:
    """Where the three contracts live."""

    token: str
    registry: str
    settlement: str
    chain_id: int


@dataclass(frozen=True)
class BatchReceipt:
    """What one settle_batch transaction did; `payouts` is job_id hex -> {address: wei}."""

    tx_hash: str
    block_number: int
    gas_used: int
    seq: int
    merkle_root: bytes
    jobs: int
    total_fees: int
    payouts: dict[str, dict[str, int]] = field(repr=False)
    balances_root: bytes = bytes(32)  # the contributors' balances tree after this batch
    pooled: int = 0  # parties paid through it


@dataclass(frozen=True)
class NodeSpec:
    device: str
    memory_mb: int
    region: str
    price: int
    dtype: str = ""


@dataclass(frozen=True)
class NodeRecord:
    ed25519_key: bytes
    payout: str
    stake: int
    unbonding: int
    unbonding_until: int


class Chain:
    """The three contracts of one deployment, called through one object.

    `deployer_key` holds the admin roles (registrar, slasher; the devnet's faucet); `settler_key` settles
    epochs and refunds (defaults to the deployer's)."""

    def __init__(
        self,
        transport: Transport,
        deployment: Deployment,
        *,
        deployer_key: str | bytes,
        settler_key: str | bytes | None = None,
    ) -> None:
        self.transport = transport
        self.deployer_key = key_hex(deployer_key)
        self.settler_key = key_hex(settler_key) if settler_key else self.deployer_key
        self.deployer = address_of(self.deployer_key)
        self.settler = address_of(self.settler_key)
        self._attach(deployment.token, deployment.registry, deployment.settlement)
        self.balances = BalanceTree()  # replayed from the chain by sync_balances
        self._balances_block = 0

    @classmethod
    def from_settings(cls, settings: SettlementSettings) -> Chain:
        """The settlement service's chain: the configured contracts (LORANET_TOKEN_ADDRESS, ..._REGISTRY_...,
        ..._SETTLEMENT_ADDRESS), else those the devnet's chain node serves; with neither on the in-process
        chain (the embedded devnet), fresh contracts deployed with the devnet's keys (devchain)."""
        addresses = (settings.token_address, settings.registry_address, settings.settlement_address)
        if any(addresses) and not all(addresses):
            raise ChainError("give all three contract addresses (token, registry, settlement) or none")
        if all(addresses):
            transport = Transport(settings.rpc_url)
            deployer_key = settings.deployer_key
            if not deployer_key:  # the devnet's (compose's init deploys with it unless told otherwise)
                from services.settlement.devchain import DEV_DEPLOYER_KEY

                deployer_key = DEV_DEPLOYER_KEY
            return cls(
                transport,
                Deployment(*addresses, transport.chain_id),
                deployer_key=deployer_key,
                settler_key=settings.settler_key or None,
            )
        # No contracts configured: the embedded devnet (in process) or the devnet's chain node (it serves
        # its deployment); anywhere else DevChain.open would deploy, so refuse.
        from services.settlement.devchain import DEV_DEPLOYER_KEY, DEV_TREASURY, DevChain

        return DevChain.open(
            settings.rpc_url,
            deployer_key=settings.deployer_key or DEV_DEPLOYER_KEY,
            settler_key=settings.settler_key or None,
            treasury=settings.treasury or DEV_TREASURY,
            deploy=not settings.rpc_url,  # over JSON-RPC only a chain node's served contracts, never new ones
        )

    # ------------------------------------------------------------------ setup

    @property
    def w3(self) -> Any:
        return self.transport.w3

    @property
    def chain_id(self) -> int:
        return int(self.transport.chain_id)

    @property
    def in_process(self) -> bool:
        return self.transport.in_process

    def _contract(self, name: str, address: str) -> Any:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=compile_contract(name).abi)

    def _attach(self, token: str, registry: str, settlement: str) -> None:
        for what, address in (("token", token), ("registry", registry), ("settlement", settlement)):
            if not self.w3.eth.get_code(to_checksum_address(address)):
                raise ChainError(f"no contract at the {what} address {address} on chain {self.chain_id}")
        self.token = self._contract("OpenToken", token)
        self.registry = self._contract("Registry", registry)
        self.settlement = self._contract("Settlement", settlement)

    @property
    def deployment(self) -> Deployment:
        return Deployment(self.token.address, self.registry.address, self.settlement.address, self.chain_id)

    # ----------------------------------------------------------- transactions

    def _send(self, key: str | bytes, call: Any, what: str, dry_run: bool = True) -> dict:
        return self.transport.send(key, call, what, dry_run)

    def submit(self, key: str | bytes, call: Any, what: str, dry_run: bool = True) -> bytes:
        return self.transport.submit(key, call, what, dry_run)

    def wait(
        self,
        tx_hash: bytes,
        what: str,
        call: Any = None,
        key: str | bytes | None = None,
        replay: Callable[[], Any] | None = None,
    ) -> dict:
        return self.transport.wait(tx_hash, what, call, key or self.settler_key, replay)

    def _info(self, receipt: dict) -> TxInfo:
        return self.transport.info(receipt)

    def _call(self, fn: Any) -> Any:
        return self.transport.call(fn, self.settler)

    def transact(self, key: str | bytes, call: Any, what: str = "transaction") -> dict:
        """Send any contract call (e.g. `chain.token.functions.transferFrom(...)`) signed by `key`;
        returns the receipt. Raises ChainError with the revert reason."""
        return self._send(key, call, what)

    # ------------------------------------------------------------ contracts

    def transfer(self, key: str | bytes, to: str, amount: int) -> TxInfo:
        return self._info(self._send(key, self.token.functions.transfer(to_checksum_address(to), amount), "transfer"))

    def approve(self, key: str | bytes, spender: str, amount: int) -> TxInfo:
        call = self.token.functions.approve(to_checksum_address(spender), amount)
        return self._info(self._send(key, call, "approve"))

    def balance_of(self, address: str) -> int:
        """OPEN wei held by `address`."""
        return self._call(self.token.functions.balanceOf(to_checksum_address(address)))

    # ----------------------------------------------------------------- escrow

    def deposit(self, client_key: str | bytes, amount: int) -> TxInfo:
        """approve + deposit `amount` OPEN wei into the key's escrow."""
        self.approve(client_key, self.settlement.address, amount)
        return self._info(self._send(client_key, self.settlement.functions.deposit(amount), "deposit"))

    def deposit_with_permit(self, client_key: str | bytes, amount: int, deadline: int | None = None) -> TxInfo:
        """Deposit in one transaction, approving by an EIP-2612 permit signature."""
        client_key = key_hex(client_key)
        owner = address_of(client_key)
        if deadline is None:
            deadline = self.w3.eth.get_block("latest")["timestamp"] + 3600
        nonce = self._call(self.token.functions.nonces(owner))
        signed = Account.sign_typed_data(
            client_key,
            {"name": "Open", "version": "1", "chainId": self.chain_id, "verifyingContract": self.token.address},
            {
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            {"owner": owner, "spender": self.settlement.address, "value": amount, "nonce": nonce, "deadline": deadline},
        )
        call = self.settlement.functions.deposit_with_permit(
            amount, deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
        )
        return self._info(self._send(client_key, call, "deposit_with_permit"))

    def deposit_for(self, payer_key: str | bytes, client: str, amount: int) -> TxInfo:
        """Fund `client`'s escrow from the payer's OPEN (approve + deposit_for)."""
        self.approve(payer_key, self.settlement.address, amount)
        call = self.settlement.functions.deposit_for(to_checksum_address(client), amount)
        return self._info(self._send(payer_key, call, "deposit_for"))

    def withdraw_escrow(self, client_key: str | bytes, amount: int) -> TxInfo:
        """Take back unreserved escrow."""
        return self._info(self._send(client_key, self.settlement.functions.withdraw_escrow(amount), "withdraw_escrow"))

    def escrow_of(self, address: str) -> int:
        """A client's escrow, reserved part included."""
        return self._call(self.settlement.functions.escrow_of(to_checksum_address(address)))

    def reserved_of(self, address: str) -> int:
        return self._call(self.settlement.functions.reserved_of(to_checksum_address(address)))

    def available_of(self, address: str) -> int:
        """Escrow not reserved by any job: what admission can still reserve or a client withdraw."""
        return self._call(self.settlement.functions.available_of(to_checksum_address(address)))

    # ------------------------------------------------------------- settlement

    def credit_of(self, address: str) -> int:
        """OPEN wei credited to `address` and not yet withdrawn."""
        return self._call(self.settlement.functions.credit(to_checksum_address(address)))

    def withdraw(self, key: str | bytes) -> int:
        """Pull the key's whole credit to its address; returns the amount."""
        amount = self.credit_of(address_of(key))
        self._send(key, self.settlement.functions.withdraw(), "withdraw")
        return amount

    def last_seq(self) -> int:
        """The sequence number of the last settled batch (0 before the first)."""
        return self._call(self.settlement.functions.last_seq())

    def treasury(self) -> str:
        return self._call(self.settlement.functions.treasury())

    @property
    def treasury_address(self) -> str:
        """The treasury, read once (only the owner can change it)."""
        cached = getattr(self, "_treasury", None)
        if cached is None:
            cached = self._treasury = self.treasury()
        return cached

    def job_state(self, job_id: bytes | str) -> str:
        """'unknown', 'reserved', 'settled' or 'refunded'."""
        return JOB_STATES[self._call(self.settlement.functions.job_state(job_id_bytes(job_id)))]

    def reserve(self, reservations: Sequence[Reservation], key: str | bytes | None = None) -> TxInfo:
        """Lock each job's max fee in its client's escrow (at admission)."""
        clients, words = encode_reservations(reservations)
        call = self.settlement.functions.reserve(clients, words)
        return self._info(self._send(key or self.settler_key, call, "reserve"))

    def refund(self, job_ids: Iterable[bytes | str], key: str | bytes | None = None) -> TxInfo:
        """Close rejected jobs: release their reservations, charge nothing, never settle them."""
        ids = [job_id_bytes(j) for j in job_ids]
        if not ids:
            raise ValueError("nothing to refund")
        return self._info(self._send(key or self.settler_key, self.settlement.functions.refund(ids), "refund"))

    def settle_batch(
        self, seq: int, jobs: Sequence[SettleJob], key: str | bytes | None = None, pool_contributors: bool = True
    ) -> BatchReceipt:
        """Settle one epoch's jobs as batch `seq` (must be last_seq() + 1) in one transaction. Data
        contributors are paid through the balances tree (`claim`) unless `pool_contributors` is False (every
        party credited directly: the design before the balances tree, kept for comparison)."""
        with self.transport.lock:
            tx_hash = self.send_settle_batch(seq, jobs, key, pool_contributors)
            return self.settle_receipt(tx_hash, seq, jobs, key, pool_contributors)

    def _settle_call(self, seq: int, jobs: Sequence[SettleJob], pool_contributors: bool = True) -> Any:
        parties, words = encode_batch(jobs)
        owed = contributor_amounts(jobs)
        if pool_contributors:
            tree = self.sync_balances()
            update = tree.update([(a, owed[a]) for a in tree.order(list(owed))])
            accounts, pooled, siblings = list(update.accounts), list(update.words), list(update.siblings)
        else:
            accounts, pooled, siblings = list(owed), [(CREDIT << 224) | x for x in owed.values()], []
        return self.settlement.functions.settle_batch(seq, parties, accounts, pooled, siblings, words)

    def send_settle_batch(
        self, seq: int, jobs: Sequence[SettleJob], key: str | bytes | None = None, pool_contributors: bool = True
    ) -> bytes:
        """Send batch `seq` without waiting (no dry run: a revert shows in `settle_receipt`)."""
        call = self._settle_call(seq, jobs, pool_contributors)
        return self.submit(key or self.settler_key, call, f"settle_batch {seq}", dry_run=False)

    def settle_receipt(
        self,
        tx_hash: bytes,
        seq: int,
        jobs: Sequence[SettleJob],
        key: str | bytes | None = None,
        pool_contributors: bool = True,
    ) -> BatchReceipt:
        """Wait for a sent batch; ChainError (with the reason) if it reverted. The call is rebuilt (the
        balances tree replayed, its update computed) only to replay a revert for its reason."""
        receipt = self.wait(
            tx_hash,
            f"settle_batch {seq}",
            key=key or self.settler_key,
            replay=lambda: self._settle_call(seq, jobs, pool_contributors),
        )
        events = self.settlement.events.BatchSettled().process_receipt(receipt)
        if len(events) != 1:
            raise ChainError(f"settle_batch {seq}: expected one BatchSettled event, got {len(events)}")
        return self._batch_receipt(self._info(receipt), events[0]["args"], jobs)

    def _batch_receipt(self, info: TxInfo, args: Any, jobs: Sequence[SettleJob]) -> BatchReceipt:
        treasury = self.treasury_address
        return BatchReceipt(
            tx_hash=info.tx_hash,
            block_number=info.block_number,
            gas_used=info.gas_used,
            seq=args["seq"],
            merkle_root=bytes(args["merkle_root"]),
            jobs=args["jobs"],
            total_fees=args["total_fees"],
            payouts={job.job_id.hex(): job.payouts(treasury) for job in jobs},
            balances_root=bytes(args["balances_root"]),
            pooled=args["pooled"],
        )

    def find_batch(self, seq: int, jobs: Sequence[SettleJob]) -> BatchReceipt | None:
        """The mined batch `seq`, if it settled exactly `jobs` (same Merkle root); else None."""
        logs = self.settlement.events.BatchSettled().get_logs(argument_filters={"seq": seq}, from_block=0)
        for log in logs:
            if bytes(log["args"]["merkle_root"]) == self.expected_merkle_root(jobs):
                receipt = self.w3.eth.get_transaction_receipt(log["transactionHash"])
                return self._batch_receipt(self._info(receipt), log["args"], jobs)
        return None

    def recent_batches(self, limit: int, window_blocks: int = 50_000) -> list[p.EpochSummary]:
        """The last `limit` settled batches (epochs) in the last `window_blocks` blocks, newest first."""
        latest = self.w3.eth.block_number
        logs = self.settlement.events.BatchSettled().get_logs(from_block=max(0, latest - window_blocks))
        out = []
        for log in sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"]), reverse=True)[:limit]:
            block = self.w3.eth.get_block(log["blockNumber"])
            out.append(
                p.EpochSummary(
                    seq=log["args"]["seq"],
                    tx_hash="0x" + bytes(log["transactionHash"]).hex().removeprefix("0x"),
                    block=log["blockNumber"],
                    jobs=log["args"]["jobs"],
                    total_fees=log["args"]["total_fees"],
                    merkle_root="0x" + bytes(log["args"]["merkle_root"]).hex(),
                    at=int(block["timestamp"]),
                )
            )
        return out

    # ---------------------------------------------------------------- balances

    def sync_balances(self) -> BalanceTree:
        """The balances tree as of the last mined batch: batches not yet applied are replayed from their
        calldata (the chain is the record; nothing is stored off chain). Checks the root after each."""
        tree = self.balances
        logs = self.settlement.events.BatchSettled().get_logs(from_block=self._balances_block)
        for log in sorted(logs, key=lambda x: x["args"]["seq"]):
            args = log["args"]
            if args["seq"] <= tree.seq or not args["pooled"]:
                continue
            tx = self.w3.eth.get_transaction(log["transactionHash"])
            _, call = self.settlement.decode_function_input(tx["input"])
            tree.apply(args["seq"], call["accounts"], call["pooled"])
            if tree.root != bytes(args["balances_root"]):
                raise ChainError(f"batch {args['seq']}: its calldata does not rebuild its balances root")
            self._balances_block = log["blockNumber"]
        return tree

    def claimed(self, position: int) -> int:
        """The cumulative amount already claimed from a balances-tree position."""
        return self._call(self.settlement.functions.claimed(position))

    def claim(self, account: str, key: str | bytes | None = None) -> tuple[int, TxInfo | None]:
        """Credit `account` with its unclaimed balance (Settlement.claim, sent by `key`, the settler's by
        default: anyone may, only the account is paid). (amount, transaction); (0, None) with nothing new."""
        tree = self.sync_balances()
        leaf = tree.of(account)
        if leaf is None or leaf.cumulative <= self.claimed(leaf.position):
            return 0, None
        call = self.settlement.functions.claim(
            leaf.account, leaf.position, leaf.cumulative, tree.root_seq, tree.proof(leaf.position)
        )
        receipt = self._send(key or self.settler_key, call, "claim")
        amount = sum(e["args"]["amount"] for e in self.settlement.events.Claimed().process_receipt(receipt))
        return amount, self._info(receipt)

    def earned(self, address: str) -> int:
        """Everything owed to `address` and not yet withdrawn: its credit and its unclaimed balance."""
        return self.credit_of(address) + self.claimable(address)

    def claimable(self, account: str) -> int:
        """OPEN wei owed to `account` in the balances tree and not yet claimed."""
        leaf = self.sync_balances().of(account)
        return 0 if leaf is None else max(0, leaf.cumulative - self.claimed(leaf.position))

    def find_refund(self, job_id: bytes | str) -> TxInfo | None:
        """The transaction that refunded `job_id`, if any."""
        logs = self.settlement.events.JobRefunded().get_logs(
            argument_filters={"job_id": job_id_bytes(job_id)}, from_block=0
        )
        if not logs:
            return None
        return self._info(self.w3.eth.get_transaction_receipt(logs[0]["transactionHash"]))

    def job_states(self, job_ids: Sequence[bytes | str]) -> list[str]:
        """job_state of each job, in one call (at most packing.MAX_JOBS)."""
        states = self._call(self.settlement.functions.job_states([job_id_bytes(j) for j in job_ids]))
        return [JOB_STATES[s] for s in states]

    def available_of_many(self, clients: Sequence[str]) -> list[int]:
        """available_of of each client, in one call."""
        return list(self._call(self.settlement.functions.available_of_many([to_checksum_address(c) for c in clients])))

    @staticmethod
    def expected_merkle_root(jobs: Sequence[SettleJob]) -> bytes:
        return merkle_root([j.job_id for j in jobs])

    # ---------------------------------------------------------------- registry

    def stake(self, key: str | bytes, amount: int, ed25519_key: bytes, payout: str | None = None) -> TxInfo:
        """approve + stake `amount` OPEN; binds the Ed25519 key (32 bytes) on first stake."""
        if len(ed25519_key) != 32:
            raise ValueError(f"ed25519 public key must be 32 bytes, got {len(ed25519_key)}")
        payout = to_checksum_address(payout or address_of(key))
        self.approve(key, self.registry.address, amount)
        return self._info(self._send(key, self.registry.functions.stake(amount, ed25519_key, payout), "stake"))

    def request_unstake(self, key: str | bytes, amount: int) -> TxInfo:
        return self._info(self._send(key, self.registry.functions.request_unstake(amount), "request_unstake"))

    def withdraw_stake(self, key: str | bytes) -> TxInfo:
        """Withdraw unbonded stake once the cooldown is over."""
        return self._info(self._send(key, self.registry.functions.withdraw_stake(), "withdraw_stake"))

    def slash(self, node: str, amount: int, evidence_hash: bytes, key: str | bytes | None = None) -> TxInfo:
        """Slash up to `amount` of `node`'s stake to the treasury (slasher role; deployer by default)."""
        call = self.registry.functions.slash(to_checksum_address(node), amount, evidence_hash)
        return self._info(self._send(key or self.deployer_key, call, "slash"))

    def node(self, address: str) -> NodeRecord:
        key, payout, stake, unbonding, until = self._call(self.registry.functions.nodes(to_checksum_address(address)))
        return NodeRecord(bytes(key), payout, stake, unbonding, until)

    def declare(
        self, key: str | bytes, device: str, memory_mb: int, region: str, price: int, dtype: str = "float32"
    ) -> TxInfo:
        """Declare the staked node's hardware, memory (MiB), region, price (OPEN wei per million tokens) and
        the precision it serves weights in."""
        call = self.registry.functions.declare(device, memory_mb, region, price, dtype)
        return self._info(self._send(key, call, "declare"))

    def spec(self, address: str) -> NodeSpec | None:
        """What a node declared (None: nothing yet)."""
        device, memory_mb, region, price, dtype = self._call(
            self.registry.functions.specs(to_checksum_address(address))
        )
        return NodeSpec(device, memory_mb, region, price, dtype) if device else None

    def register_verifier(self, key: str | bytes, enabled: bool = True) -> TxInfo:
        """Register (or retire) the staker of `key` as a verifier."""
        return self._info(self._send(key, self.registry.functions.register_verifier(enabled), "register_verifier"))

    def verifier_of_key(self, ed25519_key: bytes) -> str | None:
        """The active registered verifier that bound this Ed25519 key (None: no such verifier)."""
        address = self._call(self.registry.functions.verifier_of_key(_bytes32(ed25519_key)))
        return None if int(address, 16) == 0 else address

    def node_of_key(self, ed25519_key: bytes) -> str | None:
        """The staker that bound this Ed25519 public key, or None."""
        address = self._call(self.registry.functions.node_of_key(_bytes32(ed25519_key)))
        return None if int(address, 16) == 0 else address

    def evidence_used(self, evidence_hash: bytes) -> bool:
        return self._call(self.registry.functions.evidence_used(_bytes32(evidence_hash)))

    def min_stake(self) -> int:
        return self._call(self.registry.functions.min_stake())

    def is_active(self, address: str) -> bool:
        return self._call(self.registry.functions.is_active(to_checksum_address(address)))

    def datanet_root(self, name: str, version: int) -> bytes:
        """The Merkle root recorded for datanet `name` at `version` (32 zero bytes: none recorded)."""
        return bytes(self._call(self.registry.functions.datanet_root(keccak(text=name), version)))

    def record_datanet_version(self, name: str, version: int, root: bytes, key: str | bytes | None = None) -> TxInfo:
        """Record a datanet version's root (write-once; needs the registrar role)."""
        call = self.registry.functions.record_datanet_version(keccak(text=name), version, root)
        return self._info(self._send(key or self.deployer_key, call, "record_datanet_version"))

    def datanet_record_tx(self, name: str, version: int) -> TxInfo | None:
        """The transaction that recorded datanet `name` at `version`, if any."""
        logs = self.registry.events.DatanetVersioned().get_logs(
            argument_filters={"datanet": keccak(text=name), "version": version}, from_block=0
        )
        return self._info(self.w3.eth.get_transaction_receipt(logs[0]["transactionHash"])) if logs else None

    def register_adapter(self, adapter_id: bytes | str, developer: str, key: str | bytes | None = None) -> TxInfo:
        """Map a 32-byte adapter id (bytes or 64 hex characters) to its developer (registrar: deployer by default)."""
        call = self.registry.functions.register_adapter(_bytes32(adapter_id), to_checksum_address(developer))
        return self._info(self._send(key or self.deployer_key, call, "register_adapter"))

    def developer_of(self, adapter_id: bytes | str) -> str:
        return self._call(self.registry.functions.adapter_developer(_bytes32(adapter_id)))

    def register_contributor(self, address: str, key: str | bytes | None = None) -> int:
        """The contributor's compact id, registering it if new."""
        address = to_checksum_address(address)
        existing = self._call(self.registry.functions.contributor_id(address))
        if existing:
            return existing
        self._send(
            key or self.deployer_key, self.registry.functions.register_contributor(address), "register_contributor"
        )
        return self._call(self.registry.functions.contributor_id(address))

    def contributor_of(self, contributor_id: int) -> str:
        return self._call(self.registry.functions.contributor_address(contributor_id))

    def set_slasher(self, account: str, enabled: bool = True) -> TxInfo:
        call = self.registry.functions.set_slasher(to_checksum_address(account), enabled)
        return self._info(self._send(self.deployer_key, call, "set_slasher"))

    def set_settler(self, account: str, enabled: bool = True) -> TxInfo:
        call = self.settlement.functions.set_settler(to_checksum_address(account), enabled)
        return self._info(self._send(self.deployer_key, call, "set_settler"))

    def now(self) -> int:
        """The latest block's timestamp."""
        return self.w3.eth.get_block("latest")["timestamp"]


def served_deployment(transport: Transport) -> Deployment | None:
    """The contracts the devnet's chain node deployed at its start (`loranet_deployment`), or None on other chains."""

    try:
        answer = transport.w3.provider.make_request("loranet_deployment", [])
    except Exception:
        return None
    result = answer.get("result") if isinstance(answer, dict) else None
    if not result:
        return None
    chain_id = result["chain_id"]
    return Deployment(
        result["token"],
        result["registry"],
        result["settlement"],
        int(chain_id, 0) if isinstance(chain_id, str) else int(chain_id),
    )


def _bytes32(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return value
