"""python -m services.settlement.chain_node: the devnet's EVM as a process of its own.

The embedded chain (py-evm through eth-tester) used to live inside the
settlement process, so a crash of settlement took every balance with it. Here
it is served over HTTP JSON-RPC, like anvil or an L2, and settlement reaches it
by `LORANET_RPC_URL`: settlement can now crash and restart against the same
chain, which is what its crash-recovery needs.

At start the node deploys the OPEN token, Registry and Settlement once (the
devnet keys, services/settlement/chain.py) and tells where they live through
the `loranet_deployment` method and, if set, a JSON file
(`LORANET_CHAIN_DEPLOYMENT_FILE`); a `Chain` built on this URL with no
addresses attaches to them. The chain's state lives in this process's memory:
restarting the chain node starts a new chain (production chains persist).

Besides the eth-tester methods it answers `anvil_setBalance` (top up from a
funded test account), `evm_increaseTime` and `evm_mine`, so development
helpers work the same on it as on anvil. JSON-RPC batches are served too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from eth_abi import encode as abi_encode
from hexbytes import HexBytes

from loranet.observability import EventLog

from .settings import ChainNodeSettings

_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)


def _json(value: Any) -> Any:
    """eth-tester's Python values as JSON-RPC wants them: quantities and bytes as 0x-hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray, HexBytes)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return str(value)


class ChainNode:
    """One eth-tester chain and the JSON-RPC dispatch onto it."""

    def __init__(self, settings: ChainNodeSettings) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import Web3
        from web3.middleware import combine_middleware
        from web3.providers.eth_tester import EthereumTesterProvider
        from web3.providers.eth_tester.middleware import ethereum_tester_middleware

        from .chain import DEV_DEPLOYER_KEY, DEV_TREASURY, Chain

        self.tester = EthereumTester(PyEVMBackend())
        self.provider = EthereumTesterProvider(self.tester)
        self.w3 = Web3(self.provider)
        # The tester middleware turns JSON-RPC's hex params into eth-tester's Python values
        # (web3's other default, filling `from`, is left out: clients send complete requests).
        self._request = combine_middleware(middleware=(ethereum_tester_middleware,), w3=self.w3,
                                           provider_request_fn=self.provider.make_request)
        self.chain = Chain(deployer_key=settings.deployer_key or DEV_DEPLOYER_KEY, settler_key=settings.settler_key or None,
                           treasury=settings.treasury or DEV_TREASURY, tester=self.tester)
        d = self.chain.deployment
        self.deployment = {"token": d.token, "registry": d.registry, "settlement": d.settlement,
                           "chain_id": d.chain_id}
        self._funder = self.w3.eth.accounts[0]
        self._custom = {
            "loranet_deployment": lambda params: self.deployment,
            "anvil_setBalance": self._set_balance,
            "evm_increaseTime": self._increase_time,
            "evm_mine": self._mine,
        }

    # -- methods eth-tester lacks ---------------------------------------------

    def _set_balance(self, params: list) -> bool:
        address, wanted = self.w3.to_checksum_address(params[0]), int(params[1], 16)
        have = self.w3.eth.get_balance(address)
        if wanted > have:  # eth-tester cannot mint: the genesis accounts hold plenty
            tx = self.w3.eth.send_transaction({"from": self._funder, "to": address, "value": wanted - have})
            self.w3.eth.wait_for_transaction_receipt(tx)
        return True

    def _increase_time(self, params: list) -> int:
        seconds = int(params[0], 16) if isinstance(params[0], str) else int(params[0])
        self.tester.time_travel(self.w3.eth.get_block("latest")["timestamp"] + seconds)
        return seconds

    def _mine(self, params: list) -> str:
        self.tester.mine_blocks(1)
        return "0x0"

    # -- dispatch ----------------------------------------------------------

    def handle(self, call: Any) -> dict:
        """One JSON-RPC request object → its response object."""
        from eth_tester.exceptions import TransactionFailed

        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        rid, method, params = call.get("id"), call["method"], call.get("params") or []
        try:
            if method in self._custom:
                return {"jsonrpc": "2.0", "id": rid, "result": _json(self._custom[method](params))}
            response = self._request(method, params)
        except TransactionFailed as exc:
            reason = str(exc.args[0] if exc.args else exc).removeprefix("execution reverted: ")
            data = "0x" + (_ERROR_SELECTOR + abi_encode(["string"], [reason])).hex()
            return {"jsonrpc": "2.0", "id": rid,
                    "error": {"code": 3, "message": f"execution reverted: {reason}", "data": data}}
        except Exception as exc:  # a bad request must not take the chain down
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if "error" in response:
            out["error"] = response["error"]
        else:
            out["result"] = _json(response.get("result"))
        return out

    async def serve_http(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        if isinstance(body, list):
            return web.json_response([self.handle(call) for call in body])
        return web.json_response(self.handle(body))


def write_deployment(path: str, deployment: dict, rpc_url: str) -> None:
    """The addresses as JSON, written atomically (readers never see half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**deployment, "rpc_url": rpc_url}, indent=2))
    os.replace(tmp, target)


def main(settings: ChainNodeSettings | None = None) -> None:
    settings = settings or ChainNodeSettings.from_env()
    log = EventLog("chain", settings.instance or f"chain-{os.getpid()}", settings.log_level)
    node = ChainNode(settings)
    rpc_url = f"http://{settings.chain_host}:{settings.chain_port}"
    if settings.chain_deployment_file:
        write_deployment(settings.chain_deployment_file, node.deployment, rpc_url)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/", node.serve_http)

    async def started(_: web.Application) -> None:
        log.info("service.started", rpc_url=rpc_url, **node.deployment)

    app.on_startup.append(started)
    web.run_app(app, host=settings.chain_host, port=settings.chain_port, print=None, access_log=None)
    log.info("service.stopped")


if __name__ == "__main__":
    main()
