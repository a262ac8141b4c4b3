"""The on-chain side of settlement: deploy or attach to the contracts and call them.

`Chain` is synchronous (web3's sync API) and holds a lock around every call,
so the settlement service can use it from `asyncio.to_thread`. It talks to

  * an in-process EVM (web3's EthereumTesterProvider over py-evm) when
    `rpc_url` is empty: the embedded default. That chain lives only inside the
    process that created it.
  * any JSON-RPC endpoint otherwise (anvil in compose, an L2 in production,
    or `python -m services.settlement.chain_node`, the devnet's chain process:
    py-evm served over HTTP, which also tells where its contracts are, so a
    Chain built on it with no addresses attaches to them).

Every transaction is signed locally with a private key and sent raw, so the
same code runs against both. A revert raises ChainError carrying the
contract's reason ("settlement: sequence must be last_seq + 1", ...).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

try:  # the in-process chain raises its own type for a reverted estimate
    from eth_tester.exceptions import TransactionFailed as _TesterRevert
except ImportError:  # pragma: no cover
    _TesterRevert = ContractLogicError
_REVERTS = (ContractLogicError, _TesterRevert)

from services.settlement.contracts import compile_contract
from services.settlement.merkle import merkle_root
from loranet.errors import LoranetError
from services.settlement.packing import (
    Reservation,
    SettleJob,
    encode_batch,
    encode_reservations,
    job_id_bytes,
)

# Development keys, derived from public strings: never hold value with them.
DEV_DEPLOYER_KEY = "0x" + keccak(b"loranet devnet deployer").hex()
DEV_SETTLER_KEY = "0x" + keccak(b"loranet devnet settler").hex()
DEV_TREASURY = to_checksum_address(keccak(b"loranet devnet treasury")[-20:])

TOTAL_SUPPLY = 10**9 * 10**18  # one billion OPEN, all to the deployer
DEFAULT_MIN_STAKE = 1_000 * 10**18
DEFAULT_COOLDOWN_S = 7 * 24 * 3600
_DEV_ETH = 10**21  # gas money for development accounts
_IN_PROCESS_GAS = 16_000_000  # per-transaction limit on the in-process chain (EIP-7825 caps at 2**24)

JOB_STATES = ("unknown", "reserved", "settled", "refunded")


class ChainError(LoranetError):
    """A transaction reverted or the chain could not be used; the message says which and why."""


@dataclass(frozen=True)
class Deployment:
    """Where the three contracts live."""

    token: str
    registry: str
    settlement: str
    chain_id: int


@dataclass(frozen=True)
class TxInfo:
    tx_hash: str
    block_number: int
    gas_used: int


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


@dataclass(frozen=True)
class NodeRecord:
    ed25519_key: bytes
    payout: str
    stake: int
    unbonding: int
    unbonding_until: int


@dataclass(frozen=True)
class DevAccount:
    key: str
    address: str


def _key_hex(key: str | bytes) -> str:
    if isinstance(key, bytes):
        return "0x" + key.hex()
    return key if key.startswith("0x") else "0x" + key


def address_of(key: str | bytes) -> str:
    """The checksummed address of a private key."""
    return Account.from_key(_key_hex(key)).address


class Chain:
    """OPEN token, Registry and Settlement on one chain, called through one object.

    `tester` (in process only) reuses an existing eth-tester chain (chain_node does).
    With no contract addresses given it deploys fresh contracts (deployer gets
    the whole supply, the settler key gets the settler role, the deployer's
    address the slasher and registrar roles); with all three it attaches.
    """

    def __init__(
        self,
        rpc_url: str = "",
        *,
        deployer_key: str | bytes = DEV_DEPLOYER_KEY,
        settler_key: str | bytes | None = None,
        treasury: str = DEV_TREASURY,
        token_address: str = "",
        registry_address: str = "",
        settlement_address: str = "",
        min_stake: int = DEFAULT_MIN_STAKE,
        cooldown_s: int = DEFAULT_COOLDOWN_S,
        supply: int = TOTAL_SUPPLY,
        timeout_s: float = 30.0,
        tester: Any = None,
    ) -> None:
        self._lock = threading.RLock()
        self.rpc_url = rpc_url
        self.timeout_s = timeout_s
        self.deployer_key = _key_hex(deployer_key)
        self.settler_key = _key_hex(settler_key) if settler_key else self.deployer_key
        self.deployer = address_of(self.deployer_key)
        self.settler = address_of(self.settler_key)
        self.in_process = not rpc_url
        # py-evm (in process or behind chain_node): a fixed gas limit instead of eth-tester's
        # estimate, which is a binary search over ~13 executions.
        self.fixed_gas = self.in_process
        if self.in_process:
            from eth_tester import EthereumTester, PyEVMBackend
            from web3 import EthereumTesterProvider

            self.tester = tester if tester is not None else EthereumTester(PyEVMBackend())
            self.w3 = Web3(EthereumTesterProvider(self.tester))
        else:
            self.tester = None
            self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
            if not self.w3.is_connected():
                raise ChainError(f"no JSON-RPC chain answers at {rpc_url!r}; start it (anvil) or fix the URL")
            self.fixed_gas = str(self.w3.client_version).startswith("EthereumTester")
            # The validation middleware asks eth_chainId twice per request; every transaction
            # here is signed locally with the chain id read once below.
            self.w3.middleware_onion.remove("validation")
        self.chain_id = self.w3.eth.chain_id
        self._nonces: dict[str, int] = {}
        for address in {self.deployer, self.settler}:
            if self.w3.eth.get_balance(address) < _DEV_ETH // 10:
                self.fund_eth(address, _DEV_ETH)

        addresses = (token_address, registry_address, settlement_address)
        if not any(addresses) and not self.in_process:
            served = self.served_deployment()
            if served is not None:
                addresses = (served.token, served.registry, served.settlement)
        if all(addresses):
            self._attach(*addresses)
        elif any(addresses):
            raise ChainError("give all three contract addresses (token, registry, settlement) or none to deploy")
        else:
            self._deploy(to_checksum_address(treasury), min_stake, cooldown_s, supply)

    @classmethod
    def from_settings(cls, settings: Any) -> Chain:
        """Build from a settings object; reads, when present: rpc_url (or chain_rpc_url),
        deployer_key, settler_key, treasury (or treasury_address), token_address,
        registry_address, settlement_address, min_stake, cooldown_s."""

        def get(*names: str, default: Any = None) -> Any:
            for name in names:
                value = getattr(settings, name, None)
                if value not in (None, ""):
                    return value
            return default

        kwargs: dict[str, Any] = {
            "deployer_key": get("deployer_key", default=DEV_DEPLOYER_KEY),
            "settler_key": get("settler_key"),
            "treasury": get("treasury", "treasury_address", default=DEV_TREASURY),
            "token_address": get("token_address", default=""),
            "registry_address": get("registry_address", default=""),
            "settlement_address": get("settlement_address", default=""),
            "min_stake": int(get("min_stake", default=DEFAULT_MIN_STAKE)),
            "cooldown_s": int(get("cooldown_s", "unbonding_s", default=DEFAULT_COOLDOWN_S)),
        }
        return cls(get("rpc_url", "chain_rpc_url", default=""), **kwargs)

    # ------------------------------------------------------------------ setup

    def _contract(self, name: str, address: str):
        return self.w3.eth.contract(address=to_checksum_address(address), abi=compile_contract(name).abi)

    def _attach(self, token: str, registry: str, settlement: str) -> None:
        for what, address in (("token", token), ("registry", registry), ("settlement", settlement)):
            if not self.w3.eth.get_code(to_checksum_address(address)):
                raise ChainError(f"no contract at the {what} address {address} on chain {self.chain_id}")
        self.token = self._contract("OpenToken", token)
        self.registry = self._contract("Registry", registry)
        self.settlement = self._contract("Settlement", settlement)

    def deploy_contract(self, name: str, *args: Any, key: str | bytes | None = None):
        """Deploy contract `name` (see services.settlement.contracts.CONTRACTS) and return it."""
        compiled = compile_contract(name)
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        receipt = self._send(key or self.deployer_key, factory.constructor(*args), f"deploy {name}")
        return self._contract(name, receipt["contractAddress"])

    def _deploy(self, treasury: str, min_stake: int, cooldown_s: int, supply: int) -> None:
        self.token = self.deploy_contract("OpenToken", supply)
        self.registry = self.deploy_contract("Registry", self.token.address, treasury, min_stake, cooldown_s)
        self.settlement = self.deploy_contract("Settlement", self.token.address, treasury, self.settler)
        self._send(self.deployer_key, self.registry.functions.set_slasher(self.deployer, True), "set_slasher")
        self._send(self.deployer_key, self.registry.functions.set_registrar(self.deployer, True), "set_registrar")

    def served_deployment(self) -> Deployment | None:
        """The contracts a chain_node deployed at its start (`loranet_deployment`), or None on other chains."""
        try:
            answer = self.w3.provider.make_request("loranet_deployment", [])
        except Exception:
            return None
        result = answer.get("result") if isinstance(answer, dict) else None
        if not result:
            return None
        chain_id = result["chain_id"]
        return Deployment(result["token"], result["registry"], result["settlement"],
                          int(chain_id, 0) if isinstance(chain_id, str) else int(chain_id))

    @property
    def deployment(self) -> Deployment:
        return Deployment(self.token.address, self.registry.address, self.settlement.address, self.chain_id)

    # ----------------------------------------------------------- transactions

    def _send(self, key: str | bytes, call: Any, what: str, dry_run: bool = True) -> dict:
        """Sign and send one contract call or deployment; wait for its receipt."""
        with self._lock:
            tx_hash = self.submit(key, call, what, dry_run)
            return self.wait(tx_hash, what, call if not dry_run else None, key)

    def submit(self, key: str | bytes, call: Any, what: str, dry_run: bool = True) -> bytes:
        """Sign and send one call; returns the transaction hash without waiting for it.

        With a fixed gas limit (py-evm) a dry run first gives the revert reason
        before anything is sent; `dry_run=False` skips it (the settler's hot
        path: the dry run costs as much as the transaction) and `wait` asks for
        the reason only if the transaction failed."""
        key = _key_hex(key)
        sender = address_of(key)
        with self._lock:
            nonce = self._nonces.get(sender)
            if nonce is None:
                nonce = self.w3.eth.get_transaction_count(sender, "pending")
            params = {"from": sender, "nonce": nonce, "chainId": self.chain_id}
            try:
                if self.fixed_gas:
                    tx = call.build_transaction({**params, "gas": _IN_PROCESS_GAS, **self._fixed_fees()})
                    if dry_run:
                        self.w3.eth.call({k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx})
                else:
                    tx = call.build_transaction(params)
                    # Headroom over the estimate: warm/cold access and refunds can differ at inclusion.
                    tx["gas"] = int(tx["gas"] * 1.25) + 20_000
            except _REVERTS as exc:
                raise ChainError(f"{what} reverted: {_reason(exc)}") from None
            signed = Account.sign_transaction(tx, key)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except _REVERTS as exc:
                self._nonces.pop(sender, None)
                raise ChainError(f"{what} reverted: {_reason(exc)}") from None
            except Exception:
                self._nonces.pop(sender, None)
                raise
            self._nonces[sender] = nonce + 1
            return bytes(tx_hash)

    def wait(self, tx_hash: bytes, what: str, call: Any = None, key: str | bytes | None = None) -> dict:
        """The receipt of a sent transaction; ChainError if it failed (with the reason when `call` is given)."""
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout_s)
        if receipt["status"] != 1:
            reason = ""
            if call is not None:
                try:  # replay at the latest state for the revert reason
                    call.call({"from": address_of(key or self.settler_key)})
                except _REVERTS as exc:
                    reason = f": {_reason(exc)}"
                except Exception:
                    pass
            raise ChainError(f"{what} reverted{reason} (failed in block {receipt['blockNumber']}, "
                             f"tx 0x{bytes(tx_hash).hex()})")
        return receipt

    def _fixed_fees(self) -> dict[str, int]:
        # Over JSON-RPC one block read instead of web3's eth_feeHistory + eth_maxPriorityFeePerGas.
        return {} if self.in_process else self._fees()

    def transact(self, key: str | bytes, call: Any, what: str = "transaction") -> dict:
        """Send any contract call (e.g. `chain.token.functions.transferFrom(...)`) signed by `key`;
        returns the receipt. Raises ChainError with the revert reason."""
        return self._send(key, call, what)

    def _info(self, receipt: dict) -> TxInfo:
        return TxInfo("0x" + bytes(receipt["transactionHash"]).hex(), receipt["blockNumber"], receipt["gasUsed"])

    def _call(self, fn: Any) -> Any:
        with self._lock:
            try:
                return fn.call({"from": self.settler})
            except _REVERTS as exc:
                raise ChainError(f"call reverted: {_reason(exc)}") from None

    # ------------------------------------------------------- accounts, faucet

    def fund_eth(self, address: str, wei: int) -> None:
        """Give `address` gas money: from the tester's funded account in process, else
        anvil_setBalance, else a transfer from the deployer."""
        address = to_checksum_address(address)
        with self._lock:
            if self.in_process:
                source = self.w3.eth.accounts[0]
                tx_hash = self.w3.eth.send_transaction({"from": source, "to": address, "value": wei})
                self.w3.eth.wait_for_transaction_receipt(tx_hash)
                return
            try:
                balance = self.w3.eth.get_balance(address)
                self.w3.provider.make_request("anvil_setBalance", [address, hex(balance + wei)])
                if self.w3.eth.get_balance(address) >= balance + wei:
                    return
            except Exception:  # not anvil: fall back to a plain transfer
                pass
            if address == self.deployer:
                raise ChainError(f"the deployer {address} has no ETH for gas on {self.rpc_url}; fund it")
            tx = {"to": address, "value": wei, "from": self.deployer, "chainId": self.chain_id,
                  "nonce": self.w3.eth.get_transaction_count(self.deployer, "pending"), "gas": 21_000}
            tx.update(self._fees())
            self._nonces.pop(self.deployer, None)
            signed = Account.sign_transaction(tx, self.deployer_key)
            self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))

    def _fees(self) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0)
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def new_account(self, eth: int = _DEV_ETH, open_tokens: int = 0) -> DevAccount:
        """A fresh key with gas money and, optionally, OPEN from the deployer."""
        account = Account.create()
        dev = DevAccount("0x" + bytes(account.key).hex(), account.address)
        if eth:
            self.fund_eth(dev.address, eth)
        if open_tokens:
            self.fund(dev.address, open_tokens)
        return dev

    def fund(self, address: str, amount: int) -> TxInfo:
        """Faucet: transfer `amount` OPEN wei from the deployer to `address`."""
        call = self.token.functions.transfer(to_checksum_address(address), amount)
        return self._info(self._send(self.deployer_key, call, "fund"))

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
        client_key = _key_hex(client_key)
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

    def settle_batch(self, seq: int, jobs: Sequence[SettleJob], key: str | bytes | None = None) -> BatchReceipt:
        """Settle one epoch's jobs as batch `seq` (must be last_seq() + 1) in one transaction."""
        with self._lock:
            tx_hash = self.send_settle_batch(seq, jobs, key)
            return self.settle_receipt(tx_hash, seq, jobs, key)

    def _settle_call(self, seq: int, jobs: Sequence[SettleJob]) -> Any:
        parties, words = encode_batch(jobs)
        return self.settlement.functions.settle_batch(seq, parties, words)

    def send_settle_batch(self, seq: int, jobs: Sequence[SettleJob], key: str | bytes | None = None) -> bytes:
        """Send batch `seq` without waiting (no dry run: a revert shows in `settle_receipt`)."""
        return self.submit(key or self.settler_key, self._settle_call(seq, jobs), f"settle_batch {seq}", dry_run=False)

    def settle_receipt(self, tx_hash: bytes, seq: int, jobs: Sequence[SettleJob],
                       key: str | bytes | None = None) -> BatchReceipt:
        """Wait for a sent batch; ChainError (with the reason) if it reverted."""
        receipt = self.wait(tx_hash, f"settle_batch {seq}", self._settle_call(seq, jobs), key or self.settler_key)
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
        )

    def find_batch(self, seq: int, jobs: Sequence[SettleJob]) -> BatchReceipt | None:
        """The mined batch `seq`, if it settled exactly `jobs` (same Merkle root); else None."""
        logs = self.settlement.events.BatchSettled().get_logs(argument_filters={"seq": seq}, from_block=0)
        for log in logs:
            if bytes(log["args"]["merkle_root"]) == self.expected_merkle_root(jobs):
                receipt = self.w3.eth.get_transaction_receipt(log["transactionHash"])
                return self._batch_receipt(self._info(receipt), log["args"], jobs)
        return None

    def find_refund(self, job_id: bytes | str) -> TxInfo | None:
        """The transaction that refunded `job_id`, if any."""
        logs = self.settlement.events.JobRefunded().get_logs(argument_filters={"job_id": job_id_bytes(job_id)},
                                                             from_block=0)
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
        self._send(key or self.deployer_key, self.registry.functions.register_contributor(address), "register_contributor")
        return self._call(self.registry.functions.contributor_id(address))

    def contributor_of(self, contributor_id: int) -> str:
        return self._call(self.registry.functions.contributor_address(contributor_id))

    def set_slasher(self, account: str, enabled: bool = True) -> TxInfo:
        call = self.registry.functions.set_slasher(to_checksum_address(account), enabled)
        return self._info(self._send(self.deployer_key, call, "set_slasher"))

    def set_settler(self, account: str, enabled: bool = True) -> TxInfo:
        call = self.settlement.functions.set_settler(to_checksum_address(account), enabled)
        return self._info(self._send(self.deployer_key, call, "set_settler"))

    # -------------------------------------------------------------------- time

    def now(self) -> int:
        """The latest block's timestamp."""
        return self.w3.eth.get_block("latest")["timestamp"]

    def advance_time(self, seconds: int) -> None:
        """Move chain time forward (development chains only) and mine a block."""
        with self._lock:
            if self.in_process:
                self.tester.time_travel(self.now() + seconds)
                self.tester.mine_blocks(1)
            else:
                self.w3.provider.make_request("evm_increaseTime", [seconds])
                self.w3.provider.make_request("evm_mine", [])


def _bytes32(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return value


def _reason(exc: Exception) -> str:
    message = str(getattr(exc, "message", None) or exc)
    return message.removeprefix("execution reverted: ")


def wait_for_rpc(rpc_url: str, timeout_s: float = 10.0) -> None:
    """Block until a JSON-RPC endpoint answers (for freshly started anvil)."""
    deadline = time.monotonic() + timeout_s
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 2}))
    while time.monotonic() < deadline:
        try:
            if w3.is_connected():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise ChainError(f"{rpc_url} did not answer within {timeout_s} s")
