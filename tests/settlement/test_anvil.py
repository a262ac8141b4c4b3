"""The same Chain against a real anvil node over JSON-RPC.

anvil comes from npm, no Rust toolchain needed:

    npm install --prefix ~/.cache/loranet/anvil @foundry-rs/anvil

It is looked up in $LORANET_ANVIL, then on PATH, then under
~/.cache/loranet/anvil; without it the test is skipped with that command.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.settlement.devchain import DevChain
from services.settlement.merkle import merkle_root
from services.settlement.transport import wait_for_rpc

from .conftest import OPEN, make_job

INSTALL = "npm install --prefix ~/.cache/loranet/anvil @foundry-rs/anvil"


def find_anvil() -> str | None:
    """Path of an anvil binary, or None."""
    candidates = [os.environ.get("LORANET_ANVIL"), shutil.which("anvil")]
    base = Path.home() / ".cache" / "loranet" / "anvil" / "node_modules"
    # The npm package ships the binary in a per-platform optional dependency.
    candidates += [str(p) for p in sorted(base.glob("@foundry-rs/anvil-*/bin/anvil"))]
    candidates.append(str(base / ".bin" / "anvil"))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    binary = find_anvil()
    if binary is None:
        pytest.skip(f"anvil not installed; install it with: {INSTALL}")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(url, timeout_s=20)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_settle_round_trip_on_anvil(anvil_url: str):
    chain = DevChain.open(anvil_url, min_stake=OPEN, cooldown_s=60)
    client = chain.new_account(open_tokens=100 * OPEN)
    chain.deposit_with_permit(client.key, 60 * OPEN)
    parties = {
        name: chain.new_account().address for name in ("node", "developer", "verifier", "verifier2", "c1", "c2", "c3")
    }
    jobs = [make_job(client.address, parties, fee=(i + 1) * OPEN, max_fee=10 * OPEN) for i in range(5)]
    receipt = chain.settle_batch(chain.last_seq() + 1, jobs)
    assert receipt.merkle_root == merkle_root([j.job_id for j in jobs])
    assert chain.escrow_of(client.address) == 60 * OPEN - 15 * OPEN
    assert chain.credit_of(parties["node"]) == 15 * OPEN // 2

    # attach a second Chain object to the same contracts, as a restarted service would
    d = chain.deployment
    again = DevChain.open(
        anvil_url, token_address=d.token, registry_address=d.registry, settlement_address=d.settlement
    )
    assert again.last_seq() == receipt.seq

    node = chain.new_account(open_tokens=10 * OPEN)
    chain.stake(node.key, 5 * OPEN, os.urandom(32))
    chain.request_unstake(node.key, 5 * OPEN)
    chain.advance_time(61)
    chain.withdraw_stake(node.key)
    assert chain.balance_of(node.address) == 10 * OPEN
