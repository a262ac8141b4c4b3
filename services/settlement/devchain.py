"""Dev-only chain helpers: deploy the contracts, fund accounts (the faucet), move time.

`DevChain.open(...)` connects (transport.py), gives the devnet's keys gas money, attaches
to the given or served contracts or deploys fresh ones, and returns a `Chain` with these
helpers. Production code never builds one: the settlement service gets a DevChain only on
the in-process chain of the embedded devnet (Chain.from_settings), and only a DevChain
serves settlement.faucet. The keys below derive from public strings: never hold value with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address

from services.settlement.chain import Chain, Deployment, served_deployment
from services.settlement.contracts import Compiled, compile_contract, compile_source
from services.settlement.transport import ChainError, Transport, TxInfo, address_of, key_hex

DEV_DEPLOYER_KEY = "0x" + keccak(b"loranet devnet deployer").hex()
DEV_SETTLER_KEY = "0x" + keccak(b"loranet devnet settler").hex()
DEV_TREASURY = to_checksum_address(keccak(b"loranet devnet treasury")[-20:])

TOTAL_SUPPLY = 10**9 * 10**18  # one billion OPEN, all to the deployer
DEFAULT_MIN_STAKE = 1_000 * 10**18
DEFAULT_COOLDOWN_S = 7 * 24 * 3600
DEV_ETH = 10**21  # gas money for development accounts


@dataclass(frozen=True)
class DevAccount:
    key: str
    address: str


class DevChain(Chain):
    """A Chain on a development chain, with the helpers only a devnet or a test may use."""

    @classmethod
    def open(
        cls,
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
        deploy: bool = True,
    ) -> DevChain:
        """Connect, fund the deployer and settler with gas, then attach to the three given contracts, or to
        those a chain node serves, or deploy fresh ones (the deployer gets the whole supply, the settler key
        the settler role, the deployer the slasher and registrar roles); `deploy=False` refuses instead."""
        transport = Transport(rpc_url, timeout_s, tester)
        deployer, settler = key_hex(deployer_key), key_hex(settler_key) if settler_key else key_hex(deployer_key)
        addresses = (token_address, registry_address, settlement_address)
        if any(addresses) and not all(addresses):
            raise ChainError("give all three contract addresses (token, registry, settlement) or none to deploy")
        deployment = (
            Deployment(*addresses, transport.chain_id)
            if all(addresses)
            else (None if transport.in_process else served_deployment(transport))
        )
        if deployment is None and not deploy:
            raise ChainError(
                f"no contracts known on {rpc_url}: deploy them (deploy/init.py) and set "
                "LORANET_TOKEN_ADDRESS, LORANET_REGISTRY_ADDRESS and LORANET_SETTLEMENT_ADDRESS"
            )
        for key in {deployer, settler}:
            if transport.w3.eth.get_balance(address_of(key)) < DEV_ETH // 10:
                _fund_eth(transport, address_of(key), DEV_ETH, deployer)
        if deployment is None:
            deployment = _deploy(
                transport, deployer, address_of(settler), to_checksum_address(treasury), min_stake, cooldown_s, supply
            )
        return cls(transport, deployment, deployer_key=deployer, settler_key=settler)

    @property
    def tester(self) -> Any:
        return self.transport.tester

    def deploy_contract(self, source: Path, *args: Any, key: str | bytes | None = None) -> Any:
        """Deploy the Vyper contract at `source` (a benchmark's or a test's own) and return it."""
        compiled = compile_source(source)
        address = _deploy_contract(self.transport, key_hex(key or self.deployer_key), compiled, *args)
        return self.w3.eth.contract(address=address, abi=compiled.abi)

    def fund_eth(self, address: str, wei: int) -> None:
        """Give `address` gas money: from the tester's funded account in process, else anvil_setBalance, else a
        transfer from the deployer."""
        _fund_eth(self.transport, address, wei, self.deployer_key)

    def new_account(self, eth: int = DEV_ETH, open_tokens: int = 0) -> DevAccount:
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

    def advance_time(self, seconds: int) -> None:
        """Move chain time forward (development chains only) and mine a block."""
        with self.transport.lock:
            if self.in_process:
                self.transport.tester.time_travel(self.now() + seconds)
                self.transport.tester.mine_blocks(1)
            else:
                self.w3.provider.make_request("evm_increaseTime", [seconds])
                self.w3.provider.make_request("evm_mine", [])


def _deploy_contract(transport: Transport, key: str, compiled: Compiled, *args: Any) -> str:
    """Deploy a compiled contract signed by `key`; its address."""
    factory = transport.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    return str(transport.send(key, factory.constructor(*args), f"deploy {compiled.name}")["contractAddress"])


def _deploy(
    transport: Transport, deployer_key: str, settler: str, treasury: str, min_stake: int, cooldown_s: int, supply: int
) -> Deployment:
    token = _deploy_contract(transport, deployer_key, compile_contract("OpenToken"), supply)
    registry = _deploy_contract(
        transport, deployer_key, compile_contract("Registry"), token, treasury, min_stake, cooldown_s
    )
    settlement = _deploy_contract(transport, deployer_key, compile_contract("Settlement"), token, treasury, settler)
    roles = transport.w3.eth.contract(address=registry, abi=compile_contract("Registry").abi).functions
    deployer = address_of(deployer_key)
    transport.send(deployer_key, roles.set_slasher(deployer, True), "set_slasher")
    transport.send(deployer_key, roles.set_registrar(deployer, True), "set_registrar")
    return Deployment(token, registry, settlement, transport.chain_id)


def _fund_eth(transport: Transport, address: str, wei: int, deployer_key: str) -> None:
    """Give `address` gas money: from the tester's funded account in process, else anvil_setBalance, else a
    transfer from the deployer."""
    address = to_checksum_address(address)
    with transport.lock:
        if transport.in_process:
            source = transport.w3.eth.accounts[0]
            tx_hash = transport.w3.eth.send_transaction({"from": source, "to": address, "value": wei})
            transport.w3.eth.wait_for_transaction_receipt(tx_hash)
            return
        try:
            balance = transport.w3.eth.get_balance(address)
            transport.w3.provider.make_request("anvil_setBalance", [address, hex(balance + wei)])
            if transport.w3.eth.get_balance(address) >= balance + wei:
                return
        except Exception:  # not anvil: fall back to a plain transfer
            pass
        if address == address_of(deployer_key):
            raise ChainError(f"the deployer {address} has no ETH for gas on {transport.rpc_url}; fund it")
        tx = {
            "to": address,
            "value": wei,
            "from": address_of(deployer_key),
            "chainId": transport.chain_id,
            "nonce": transport.w3.eth.get_transaction_count(address_of(deployer_key), "pending"),
            "gas": 21_000,
        }
        tx.update(transport.fees())
        transport.forget_nonce(address_of(deployer_key))
        signed = Account.sign_transaction(tx, deployer_key)
        transport.w3.eth.wait_for_transaction_receipt(transport.w3.eth.send_raw_transaction(signed.raw_transaction))
