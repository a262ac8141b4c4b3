"""The chain transport: a connection to one EVM chain, and signed transactions over it.

`Transport` is synchronous (web3's sync API) and holds a lock around every call, so
the settlement service can use it from `asyncio.to_thread`. It talks to

  * an in-process EVM (web3's EthereumTesterProvider over py-evm) when `rpc_url` is
    empty: the embedded default. That chain lives only inside the process that made it.
  * any JSON-RPC endpoint otherwise (anvil in compose, an L2 in production, or
    `python -m loranet_ops.chain_node`, the devnet's chain process: py-evm over HTTP).

Every transaction is signed locally with a private key and sent raw, so the same code
runs against both; nonces are kept per sender. A revert raises ChainError carrying the
contract's reason. Contract calls live in chain.py; dev-only helpers in devchain.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

from loranet.errors import LoranetError

try:  # the in-process chain raises its own type for a reverted estimate
    from eth_tester.exceptions import TransactionFailed as _TesterRevert
except ImportError:  # pragma: no cover
    _TesterRevert = ContractLogicError
REVERTS = (ContractLogicError, _TesterRevert)
IN_PROCESS_GAS = 16_000_000  # per-transaction limit on the in-process chain (EIP-7825 caps at 2**24)


class ChainError(LoranetError):
    """A transaction reverted or the chain could not be used; the message says which and why."""


@dataclass(frozen=True)
class TxInfo:
    tx_hash: str
    block_number: int
    gas_used: int


def key_hex(key: str | bytes) -> str:
    if isinstance(key, bytes):
        return "0x" + key.hex()
    return key if key.startswith("0x") else "0x" + key


def address_of(key: str | bytes) -> str:
    """The checksummed address of a private key."""
    return Account.from_key(key_hex(key)).address


class Transport:
    """One chain: connect, sign, send, wait, with nonces kept per sender."""

    def __init__(self, rpc_url: str = "", timeout_s: float = 30.0, tester: Any = None) -> None:
        """`tester` (in process only) reuses an existing eth-tester chain (the devnet's chain node does)."""
        self.lock = threading.RLock()
        self.rpc_url = rpc_url
        self.timeout_s = timeout_s
        self.in_process = not rpc_url
        # py-evm (in process or behind the chain node): a fixed gas limit instead of eth-tester's
        # estimate, which is a binary search over ~13 executions.
        self.fixed_gas = self.in_process
        if self.in_process:
            from eth_tester import EthereumTester, PyEVMBackend
            from web3 import EthereumTesterProvider

            self.tester = tester if tester is not None else EthereumTester(PyEVMBackend())
            self.w3: Any = Web3(EthereumTesterProvider(self.tester))
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

    def send(self, key: str | bytes, call: Any, what: str, dry_run: bool = True) -> dict:
        """Sign and send one contract call or deployment; wait for its receipt."""
        with self.lock:
            tx_hash = self.submit(key, call, what, dry_run)
            return self.wait(tx_hash, what, call if not dry_run else None, key)

    def submit(self, key: str | bytes, call: Any, what: str, dry_run: bool = True) -> bytes:
        """Sign and send one call; returns the transaction hash without waiting for it.

        With a fixed gas limit (py-evm) a dry run first gives the revert reason
        before anything is sent; `dry_run=False` skips it (the settler's hot
        path: the dry run costs as much as the transaction) and `wait` asks for
        the reason only if the transaction failed."""
        key = key_hex(key)
        sender = address_of(key)
        with self.lock:
            nonce = self._nonces.get(sender)
            if nonce is None:
                nonce = self.w3.eth.get_transaction_count(sender, "pending")
            params = {"from": sender, "nonce": nonce, "chainId": self.chain_id}
            try:
                if self.fixed_gas:
                    tx = call.build_transaction({**params, "gas": IN_PROCESS_GAS, **self._fixed_fees()})
                    if dry_run:
                        self.w3.eth.call({k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx})
                else:
                    tx = call.build_transaction(params)
                    # Headroom over the estimate: warm/cold access and refunds can differ at inclusion.
                    tx["gas"] = int(tx["gas"] * 1.25) + 20_000
            except REVERTS as exc:
                raise ChainError(f"{what} reverted: {revert_reason(exc)}") from None
            signed = Account.sign_transaction(tx, key)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except REVERTS as exc:
                self._nonces.pop(sender, None)
                raise ChainError(f"{what} reverted: {revert_reason(exc)}") from None
            except Exception:
                self._nonces.pop(sender, None)
                raise
            self._nonces[sender] = nonce + 1
            return bytes(tx_hash)

    def wait(
        self,
        tx_hash: bytes,
        what: str,
        call: Any = None,
        key: str | bytes | None = None,
        replay: Callable[[], Any] | None = None,
    ) -> dict:
        """The receipt of a sent transaction; ChainError if it failed (with the reason when `call` is given, or
        `replay` builds it: only then, for a call that is costly to build)."""
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout_s)
        if receipt["status"] != 1:
            reason = ""
            if call is None and replay is not None:
                try:
                    call = replay()
                except Exception:
                    call = None
            if call is not None:
                try:  # replay at the latest state for the revert reason
                    call.call({"from": address_of(key)} if key else {})
                except REVERTS as exc:
                    reason = f": {revert_reason(exc)}"
                except Exception:
                    pass
            raise ChainError(
                f"{what} reverted{reason} (failed in block {receipt['blockNumber']}, tx 0x{bytes(tx_hash).hex()})"
            )
        return receipt

    def _fixed_fees(self) -> dict[str, int]:
        # Over JSON-RPC one block read instead of web3's eth_feeHistory + eth_maxPriorityFeePerGas.
        return {} if self.in_process else self.fees()

    def fees(self) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0)
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def call(self, fn: Any, sender: str) -> Any:
        """A read-only contract call as `sender`; ChainError with the revert reason."""
        with self.lock:
            try:
                return fn.call({"from": sender})
            except REVERTS as exc:
                raise ChainError(f"call reverted: {revert_reason(exc)}") from None

    @staticmethod
    def info(receipt: dict) -> TxInfo:
        return TxInfo("0x" + bytes(receipt["transactionHash"]).hex(), receipt["blockNumber"], receipt["gasUsed"])

    def forget_nonce(self, sender: str) -> None:
        """Read `sender`'s next nonce from the chain again (after a transaction sent around this transport)."""
        self._nonces.pop(sender, None)


def revert_reason(exc: Exception) -> str:
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
