"""python -m loranet_ops.chain_node: the devnet's EVM as a process of its own.

The embedded chain (py-evm through eth-tester) used to live inside the
settlement process, so a crash of settlement took every balance with it. Here
it is served over HTTP JSON-RPC, like anvil or an L2, and settlement reaches it
by `LORANET_RPC_URL`: settlement can now crash and restart against the same
chain, which is what its crash-recovery needs.

At start the node deploys the OPEN token, Registry and Settlement once (the
devnet keys, services/settlement/chain.py) and tells where they live through
the `loranet_deployment` method and, if set, a JSON file
(`LORANET_CHAIN_DEPLOYMENT_FILE`); a `Chain` built on this URL with no
addresses attaches to them.

Durability (`LORANET_CHAIN_JOURNAL`, the devnet sets it under its state dir):
py-evm keeps the whole chain (blocks, receipts, state trie, canonical head) in
one key-value database. The node records every write to it and, before it
answers a request that changed anything, appends those writes as one record
to an append-only journal and fsyncs it: an acknowledged transaction is on
disk. At start an existing journal is read back into the database (no
transaction is re-executed, so blocks, hashes, timestamps and nonces are
bit-for-bit the ones served before) and the contracts recorded in it are
attached, not deployed again: `loranet_deployment` answers the same. Each
record carries a SHA-256 chained over all records before it and the head
block after it; a record that fails its check, or a head that does not match
the rebuilt chain, stops the node with a clear error rather than serve a
forked chain. A last record cut short (a crash mid-write, never answered) is
dropped and the file truncated to the last whole record. Without a journal
the chain lives in this process's memory only.

Besides the eth-tester methods it answers `anvil_setBalance` (top up from a
funded test account), `evm_increaseTime` and `evm_mine`, so development
helpers work the same on it as on anvil. JSON-RPC batches are served too.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web
from eth.db.backends.memory import MemoryDB
from eth_abi import encode as abi_encode
from hexbytes import HexBytes

from loranet.errors import LoranetError
from loranet.observability import EventLog
from loranet.settings import CommonSettings


class ChainNodeSettings(CommonSettings):
    """python -m loranet_ops.chain_node: the devnet's EVM process."""

    chain_host: str = "127.0.0.1"
    chain_port: int = 8545
    # Where to write the deployed contract addresses (JSON); "" = nowhere.
    chain_deployment_file: str = ""
    # The chain's durable state: an append-only journal of the chain database's writes, fsynced
    # before each state-changing request is answered and read back at start, so a restarted
    # chain node (kill -9 included) serves the same chain; "" = in memory only (lost on exit).
    chain_journal: str = ""
    deployer_key: str = ""
    settler_key: str = ""
    treasury: str = ""


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


# -- the journal -------------------------------------------------------------

# A record: magic, payload length, the first 4 bytes of SHA-256(length) (a damaged length is
# caught, not taken for a cut-short tail), SHA-256(previous digest + payload), then the payload
# (msgpack: "set" [[key, value]...], "del" [key...], "head" [number, hash, state_root, timestamp]
# of the canonical head after the writes, "meta" on the first record: deployment and keys).
_MAGIC = b"LNCJ"
_HEADER = struct.Struct(">4sI4s32s")
_FIRST_DIGEST = hashlib.sha256(b"loranet chain journal v1").digest()


class JournalError(LoranetError):
    """The chain journal is damaged or does not match the chain rebuilt from it."""


def _length_check(length: int) -> bytes:
    return hashlib.sha256(struct.pack(">I", length)).digest()[:4]


@dataclass
class JournalState:
    """What a journal holds: the database, the meta of its first record, the last head."""

    kv: dict[bytes, bytes] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    head: list[Any] = field(default_factory=list)  # [] = none recorded
    records: int = 0
    digest: bytes = _FIRST_DIGEST
    end: int = 0  # the offset after the last whole record
    dropped: int = 0  # bytes of a cut-short last record


def read_journal(path: str | Path) -> JournalState:
    """Read a journal back; JournalError (naming the record and offset) if a record is damaged."""
    data = Path(path).read_bytes()
    state = JournalState()
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            break  # a header cut short: a write that never completed
        magic, length, check, recorded = _HEADER.unpack_from(data, offset)
        if magic != _MAGIC or check != _length_check(length):
            if not data[offset:].strip(b"\0"):
                break  # a zero-filled tail (a file system's view of an interrupted append)
            raise JournalError(
                f"chain journal {path}: record {state.records} at offset {offset} has a damaged "
                "header; refusing to start a chain that differs from the one served"
            )
        end = offset + _HEADER.size + length
        if end > len(data):
            break  # the payload cut short: a crash mid-write, never acknowledged
        payload = data[offset + _HEADER.size : end]
        digest = hashlib.sha256(state.digest + payload).digest()
        if digest != recorded:
            raise JournalError(
                f"chain journal {path}: record {state.records} at offset {offset} fails its "
                "checksum (damaged or edited); refusing to start a chain that differs from the "
                "one served. Move the file away to start a new chain."
            )
        record = msgpack.unpackb(payload, raw=False)
        for key, value in record.get("set", ()):
            state.kv[key] = value
        for key in record.get("del", ()):
            state.kv.pop(key, None)
        if record.get("meta"):
            state.meta.update(record["meta"])
        state.head = record.get("head")
        state.digest, state.end, state.records = digest, end, state.records + 1
        offset = end
    state.dropped = len(data) - state.end
    return state


class Journal:
    """The append side: one record per state-changing request, fsynced before it is answered.

    Opening it takes an exclusive lock on the file: a second chain node on the same journal
    (an orphaned one, say) is refused instead of interleaving its records."""

    def __init__(self, path: str | Path) -> None:
        import fcntl

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.digest = _FIRST_DIGEST
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise JournalError(f"chain journal {path} is in use by another chain node; stop it first") from None

    def start(self, state: JournalState | None) -> None:
        """Append after `state`'s last whole record (a cut-short tail is dropped), or from empty."""
        self.digest = state.digest if state else _FIRST_DIGEST
        os.ftruncate(self.fd, state.end if state else 0)
        os.fsync(self.fd)
        os.lseek(self.fd, 0, os.SEEK_END)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the file's name is durable too
        finally:
            os.close(dir_fd)

    def append(self, record: dict) -> None:
        payload = msgpack.packb(record, use_bin_type=True)
        digest = hashlib.sha256(self.digest + payload).digest()
        header = _HEADER.pack(_MAGIC, len(payload), _length_check(len(payload)), digest)
        data = header + payload
        if os.write(self.fd, data) != len(data):
            raise OSError(f"short write to {self.path}")
        os.fsync(self.fd)
        self.digest = digest

    def close(self) -> None:
        os.close(self.fd)


class _RecordingDB(MemoryDB):
    """py-evm's base key-value store, remembering what changed since the last journal record."""

    def __init__(self, kv_store: dict[bytes, bytes], dirty: bool = False) -> None:
        super().__init__(kv_store)
        self.dirty: dict[bytes, bytes | None] = dict(kv_store) if dirty else {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.kv_store[key] = value
        self.dirty[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.kv_store[key]
        self.dirty[key] = None


class ChainNode:
    """One eth-tester chain and the JSON-RPC dispatch onto it."""

    def __init__(self, settings: ChainNodeSettings) -> None:
        from eth.db.atomic import AtomicDB
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import Web3
        from web3.middleware import combine_middleware
        from web3.providers.eth_tester import EthereumTesterProvider
        from web3.providers.eth_tester.middleware import ethereum_tester_middleware

        from services.settlement.devchain import DEV_DEPLOYER_KEY, DEV_TREASURY, DevChain
        from services.settlement.transport import address_of

        deployer_key = settings.deployer_key or DEV_DEPLOYER_KEY
        treasury = settings.treasury or DEV_TREASURY
        keys = {
            "deployer": address_of(deployer_key),
            "settler": address_of(settings.settler_key or deployer_key),
            "treasury": treasury.lower(),
        }
        self.journal: Journal | None = None
        self._db: _RecordingDB | None = None
        self.restored: JournalState | None = None
        backend = PyEVMBackend()  # the default test accounts: the same keys on every start
        if settings.chain_journal:
            path = Path(settings.chain_journal)
            self.journal = Journal(path)
            saved = read_journal(path)
            if saved.records:
                self._db = _RecordingDB(saved.kv)
                backend.chain = type(backend.chain)(AtomicDB(self._db))
                self._check_head(backend.chain, saved, path)
                for name, value in keys.items():
                    if saved.meta.get(name) != value:
                        raise JournalError(
                            f"chain journal {path} holds a chain whose {name} is "
                            f"{saved.meta.get(name)}, not {value} as configured"
                        )
                self.restored = saved
            else:  # a new chain: genesis and the deployment make the first record
                saved = None  # type: ignore[assignment]  # a new chain: nothing restored
                base = backend.chain.chaindb.db
                self._db = _RecordingDB(base.wrapped_db.kv_store, dirty=True)
                base.wrapped_db = self._db
            self.journal.start(saved)
        self.tester = EthereumTester(backend)
        self.provider = EthereumTesterProvider(self.tester)
        self.w3: Any = Web3(self.provider)
        # The tester middleware turns JSON-RPC's hex params into eth-tester's Python values
        # (web3's other default, filling `from`, is left out: clients send complete requests).
        self._request = combine_middleware(
            middleware=(ethereum_tester_middleware,), w3=self.w3, provider_request_fn=self.provider.make_request
        )
        attach = {}
        if self.restored is not None:  # the contracts of the journal's chain, not new ones
            recorded = self.restored.meta["deployment"]
            attach = {
                "token_address": recorded["token"],
                "registry_address": recorded["registry"],
                "settlement_address": recorded["settlement"],
            }
        self.chain = DevChain.open(
            deployer_key=deployer_key,
            settler_key=settings.settler_key or None,
            treasury=treasury,
            tester=self.tester,
            **attach,
        )
        d = self.chain.deployment
        self.deployment = {"token": d.token, "registry": d.registry, "settlement": d.settlement, "chain_id": d.chain_id}
        self.flush({"deployment": self.deployment, **keys} if self.restored is None else None)
        self._funder = self.w3.eth.accounts[0]
        self._custom = {
            "loranet_deployment": lambda params: self.deployment,
            "anvil_setBalance": self._set_balance,
            "evm_increaseTime": self._increase_time,
            "evm_mine": self._mine,
        }

    # -- durability --------------------------------------------------------

    @staticmethod
    def _head(chain: Any) -> list:
        head = chain.get_canonical_head()
        return [head.block_number, bytes(head.hash), bytes(head.state_root), head.timestamp]

    def _check_head(self, chain: Any, saved: JournalState, path: Path) -> None:
        have = self._head(chain)
        if have != saved.head:
            raise JournalError(
                f"chain journal {path}: the rebuilt chain's head (block {have[0]}, 0x{have[1].hex()}) "
                f"is not the recorded one (block {saved.head[0]}, 0x{bytes(saved.head[1]).hex()}); "
                "refusing to start a forked chain"
            )
        if have[2] not in saved.kv:
            raise JournalError(
                f"chain journal {path}: the state root 0x{have[2].hex()} of block {have[0]} "
                "is missing; refusing to start"
            )

    def flush(self, meta: dict | None = None) -> None:
        """Append what the last requests wrote to the journal and fsync it (no-op without changes)."""
        if self.journal is None or self._db is None or not (self._db.dirty or meta):
            return
        dirty = self._db.dirty
        record: dict[str, Any] = {
            "set": [[k, v] for k, v in dirty.items() if v is not None],
            "del": [k for k, v in dirty.items() if v is None],
            "head": self._head(self.tester.backend.chain),
        }
        if meta:
            record["meta"] = meta
        self.journal.append(record)
        dirty.clear()

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
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": 3, "message": f"execution reverted: {reason}", "data": data},
            }
        except Exception as exc:  # a bad request must not take the chain down
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if "error" in response:
            out["error"] = response["error"]
        else:
            out["result"] = _json(response.get("result"))
        return out

    def answer(self, body: Any) -> Any:
        """A request or a batch → its response(s), written to the journal before they are returned."""
        out = [self.handle(call) for call in body] if isinstance(body, list) else self.handle(body)
        try:
            self.flush()
        except OSError as exc:
            # The chain in memory is ahead of the journal: answer nothing and start again from the
            # journal (the supervisor restarts the node), which drops the unacknowledged request.
            print(f"chain journal write failed ({exc}); exiting", flush=True)
            os._exit(75)
        return out

    async def serve_http(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            )
        return web.json_response(self.answer(body))


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
    try:
        node = ChainNode(settings)
    except JournalError as exc:
        log.error("chain.journal_refused", error=str(exc))
        raise SystemExit(f"chain node: {exc}") from None
    if node.restored is not None:
        r = node.restored
        log.info(
            "chain.restored",
            journal=settings.chain_journal,
            records=r.records,
            block=r.head[0],
            timestamp=r.head[3],
            dropped_bytes=r.dropped,
        )
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
