"""The chain process's journal: kill -9 the chain node, start it again on the same journal, same chain.

Real processes throughout (`python -m loranet_ops.chain_node`), reached through
services/settlement/chain.py over JSON-RPC, as settlement reaches it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from loranet_ops.chain_node import JournalError, read_journal
from loranet_ops.servers import free_port
from services.settlement.devchain import DevChain
from services.settlement.packing import Reservation
from services.settlement.transport import wait_for_rpc

from .conftest import OPEN, make_job


class ChainProc:
    """One chain node process on a journal."""

    def __init__(self, journal: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            LORANET_CHAIN_PORT=str(self.port),
            LORANET_CHAIN_JOURNAL=str(journal),
            LORANET_CHAIN_DEPLOYMENT_FILE=str(journal.parent / "chain.json"),
        )
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loranet_ops.chain_node"], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait(self) -> ChainProc:
        wait_for_rpc(self.url, timeout_s=60)
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def procs():
    started: list[ChainProc] = []
    yield started
    for p in started:
        p.stop()


def _start(procs: list, journal: Path) -> ChainProc:
    proc = ChainProc(journal, journal.parent / "chain.log")
    procs.append(proc)
    return proc.wait()


def _latest(chain: DevChain) -> tuple[int, str, int]:
    block = chain.w3.eth.get_block("latest")
    return block["number"], bytes(block["hash"]).hex(), block["timestamp"]


def test_kill9_and_restart_keeps_the_chain(tmp_path, procs):
    journal = tmp_path / "chain.journal"
    node = _start(procs, journal)
    chain = DevChain.open(node.url)
    deployment = requests.post(
        node.url, json={"jsonrpc": "2.0", "id": 1, "method": "loranet_deployment"}, timeout=10
    ).json()["result"]
    client = chain.new_account(open_tokens=100 * OPEN)
    chain.deposit(client.key, 60 * OPEN)
    other = chain.new_account(open_tokens=5 * OPEN)
    chain.transfer(other.key, client.address, 2 * OPEN)
    parties = {
        n: chain.new_account(eth=0).address for n in ("node", "developer", "verifier", "verifier2", "c1", "c2", "c3")
    }
    settled = [make_job(client.address, parties, fee=(i + 1) * OPEN, max_fee=5 * OPEN) for i in range(3)]
    pending = make_job(client.address, parties, fee=3 * OPEN, max_fee=7 * OPEN)
    chain.reserve([Reservation(j.job_id, j.client, j.max_fee) for j in settled + [pending]])
    seq = chain.last_seq() + 1
    receipt = chain.settle_batch(seq, settled)
    staker = chain.new_account(open_tokens=2000 * OPEN)
    ed_key = os.urandom(32)
    chain.stake(staker.key, 1000 * OPEN, ed_key)
    chain.advance_time(3600)

    before = {
        "balances": [chain.balance_of(a) for a in (client.address, other.address, staker.address, chain.deployer)],
        "escrow": chain.escrow_of(client.address),
        "reserved": chain.reserved_of(client.address),
        "credit": chain.credit_of(parties["node"]),
        "stake": chain.node(staker.address),
        "states": chain.job_states([j.job_id for j in settled] + [pending.job_id]),
        "nonces": [
            chain.w3.eth.get_transaction_count(a)
            for a in (client.address, other.address, chain.deployer, chain.settler)
        ],
        "eth": chain.w3.eth.get_balance(client.address),
        "last_seq": chain.last_seq(),
        "latest": _latest(chain),
    }
    assert before["states"] == ["settled"] * 3 + ["reserved"] and before["reserved"] == 7 * OPEN

    node.kill9()
    again = _start(procs, journal)
    assert "chain.restored" in again.log.read_text()
    answer = requests.post(
        again.url, json={"jsonrpc": "2.0", "id": 1, "method": "loranet_deployment"}, timeout=10
    ).json()["result"]
    assert answer == deployment
    restored = DevChain.open(again.url)  # no addresses: attaches to the served deployment, deploys nothing
    assert restored.deployment == chain.deployment
    after = {
        "balances": [
            restored.balance_of(a) for a in (client.address, other.address, staker.address, restored.deployer)
        ],
        "escrow": restored.escrow_of(client.address),
        "reserved": restored.reserved_of(client.address),
        "credit": restored.credit_of(parties["node"]),
        "stake": restored.node(staker.address),
        "states": restored.job_states([j.job_id for j in settled] + [pending.job_id]),
        "nonces": [
            restored.w3.eth.get_transaction_count(a)
            for a in (client.address, other.address, restored.deployer, restored.settler)
        ],
        "eth": restored.w3.eth.get_balance(client.address),
        "last_seq": restored.last_seq(),
        "latest": _latest(restored),
    }
    assert after == before
    assert restored.find_batch(seq, settled).tx_hash == receipt.tx_hash  # logs and receipts too
    assert restored.node_of_key(ed_key) == staker.address

    # New transactions go on from there: the reservation made before the crash settles.
    second = restored.settle_batch(restored.last_seq() + 1, [pending])
    assert second.block_number == before["latest"][0] + 1
    assert restored.job_state(pending.job_id) == "settled" and restored.reserved_of(client.address) == 0
    assert restored.escrow_of(client.address) == before["escrow"] - 3 * OPEN
    restored.transfer(client.key, other.address, OPEN)
    assert restored.w3.eth.get_block("latest")["timestamp"] >= before["latest"][2]

    # And a second crash keeps those too (records appended after a restore chain on).
    again.kill9()
    third = DevChain.open(_start(procs, journal).url)
    assert third.job_state(pending.job_id) == "settled"
    assert third.balance_of(other.address) == before["balances"][1] + OPEN
    assert third.w3.eth.get_transaction_count(client.address) == before["nonces"][0] + 1


def _run_to_exit(journal: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LORANET_CHAIN_PORT=str(free_port()), LORANET_CHAIN_JOURNAL=str(journal))
    return subprocess.run(
        [sys.executable, "-m", "loranet_ops.chain_node"], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_tampered_journal_refuses_to_start(tmp_path, procs):
    journal = tmp_path / "chain.journal"
    node = _start(procs, journal)
    chain = DevChain.open(node.url)
    account = chain.new_account(open_tokens=10 * OPEN)
    chain.transfer(account.key, chain.deployer, OPEN)
    node.kill9()
    good = journal.read_bytes()
    assert read_journal(journal).records >= 3

    # One byte of the first record's payload (genesis, the deployment) changed.
    data = bytearray(good)
    data[len(good) // 3] ^= 0x01
    journal.write_bytes(bytes(data))
    done = _run_to_exit(journal)
    assert done.returncode != 0
    assert "fails its checksum" in done.stderr and "refusing to start" in done.stderr, done.stderr
    assert journal.read_bytes() == bytes(data)  # left as it was, for a person to look at

    # A record's length changed: a damaged header, not taken for a cut-short tail.
    data = bytearray(good)
    data[5] ^= 0x40
    journal.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="damaged header"):
        read_journal(journal)
    done = _run_to_exit(journal)
    assert done.returncode != 0 and "damaged header" in done.stderr, done.stderr


def test_an_unacknowledged_last_write_is_dropped(tmp_path, procs):
    journal = tmp_path / "chain.journal"
    node = _start(procs, journal)
    chain = DevChain.open(node.url)
    account = chain.new_account(open_tokens=10 * OPEN)
    latest = _latest(chain)
    size = journal.stat().st_size
    chain.transfer(account.key, chain.deployer, 4 * OPEN)  # its record is cut in half below
    grown = journal.stat().st_size
    assert grown > size
    node.kill9()
    with open(journal, "r+b") as f:  # a crash in the middle of the append: never acknowledged
        f.truncate(size + (grown - size) // 2)

    again = _start(procs, journal)
    assert '"dropped_bytes":' in again.log.read_text()
    assert journal.stat().st_size == size  # cut back to the last whole record
    restored = DevChain.open(again.url)
    assert _latest(restored) == latest
    assert restored.balance_of(account.address) == 10 * OPEN
    # The client resends with the same nonce (its transaction never made it) and it goes through.
    restored.transfer(account.key, restored.deployer, 4 * OPEN)
    assert restored.balance_of(account.address) == 6 * OPEN
    again.kill9()
    assert DevChain.open(_start(procs, journal).url).balance_of(account.address) == 6 * OPEN


def test_the_journal_keeps_the_configured_keys(tmp_path, procs):
    journal = tmp_path / "chain.journal"
    _start(procs, journal).kill9()
    env = dict(
        os.environ,
        LORANET_CHAIN_PORT=str(free_port()),
        LORANET_CHAIN_JOURNAL=str(journal),
        LORANET_TREASURY="0x" + "22" * 20,
    )
    done = subprocess.run(
        [sys.executable, "-m", "loranet_ops.chain_node"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "treasury" in done.stderr, done.stderr


def test_one_chain_node_per_journal(tmp_path, procs):
    journal = tmp_path / "chain.journal"
    _start(procs, journal)
    done = _run_to_exit(journal)
    assert done.returncode != 0 and "in use by another chain node" in done.stderr, done.stderr
