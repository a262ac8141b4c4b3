"""One in-process chain for the settlement tests; each test takes fresh accounts."""

from __future__ import annotations

import os

import pytest

from services.settlement.devchain import DevAccount, DevChain
from services.settlement.packing import SettleJob

OPEN = 10**18


@pytest.fixture(scope="session")
def chain() -> DevChain:
    # Short cooldown and a small minimum stake keep the staking tests readable.
    return DevChain.open(min_stake=100 * OPEN, cooldown_s=3600)


@pytest.fixture
def client(chain: DevChain) -> DevAccount:
    """A client with 1000 OPEN in escrow and 1000 more in its wallet."""
    account = chain.new_account(open_tokens=2000 * OPEN)
    chain.deposit(account.key, 1000 * OPEN)
    return account


@pytest.fixture
def parties(chain: DevChain) -> dict[str, str]:
    names = ["node", "developer", "verifier", "verifier2", "c1", "c2", "c3"]
    return {name: chain.new_account().address for name in names}


def make_job(
    client: str, p: dict[str, str], fee: int = 10 * OPEN, max_fee: int | None = None, **overrides
) -> SettleJob:
    fields = dict(
        job_id=os.urandom(16),
        client=client,
        fee=fee,
        max_fee=fee if max_fee is None else max_fee,
        node=p["node"],
        developer=p["developer"],
        verifiers=(p["verifier"],),
        contributors=((p["c1"], 5000), (p["c2"], 3000), (p["c3"], 2000)),
    )
    fields.update(overrides)
    return SettleJob(**fields)


@pytest.fixture(scope="session")
def chain_node_url(tmp_path_factory):
    """`python -m loranet_ops.chain_node` on a free port: the devnet's chain process."""
    import subprocess
    import sys

    from loranet_ops.servers import free_port
    from services.settlement.transport import wait_for_rpc

    port = free_port()
    log = tmp_path_factory.mktemp("chain") / "chain.log"
    env = dict(os.environ, LORANET_CHAIN_PORT=str(port))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loranet_ops.chain_node"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(url, timeout_s=60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
