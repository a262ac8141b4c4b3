"""Gas per settled job: loranet's batched settle_batch against two naive designs.

One in-process chain (py-evm), one run, side by side:

  batch N       Settlement.settle_batch with N jobs in one transaction
                (direct: the job id is first written at settlement;
                 reserved: its max fee was reserved at admission by
                 Settlement.reserve, whose gas is shown separately)
  naive push    one transaction per job that pushes 7 ERC-20 transfers
                (services/settlement/contracts/bench/NaivePush.vy)
  7 transfers   7 separate ERC-20 transfer transactions per job

Every job pays 7 recipients: node, developer, one verifier, three data
contributors, treasury. The population is fixed: 16 clients, 8 nodes,
16 adapters (each with its developer and 3 of 32 contributors), 4 verifiers.
Steady state: one warm-up batch first gives every recipient a non-zero
credit/balance, as between two withdrawals.

    python bench/settle_gas.py            # table
    python bench/settle_gas.py --quick    # fewer samples, under a minute
    python bench/settle_gas.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.settlement.chain import Chain  # noqa: E402
from services.settlement.packing import Reservation, SettleJob  # noqa: E402

OPEN = 10**18
N_CLIENTS, N_NODES, N_ADAPTERS, N_CONTRIBUTORS, N_VERIFIERS = 16, 8, 16, 32, 4


class Population:
    def __init__(self, chain: Chain, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.chain = chain
        self.clients = [chain.new_account(open_tokens=10**6 * OPEN) for _ in range(N_CLIENTS)]
        for client in self.clients:
            chain.deposit(client.key, 5 * 10**5 * OPEN)
        fresh = lambda n: [chain.new_account(eth=0).address for _ in range(n)]  # noqa: E731
        self.nodes, self.verifiers = fresh(N_NODES), fresh(N_VERIFIERS)
        developers, contributors = fresh(N_ADAPTERS), fresh(N_CONTRIBUTORS)
        self.adapters = [
            (developers[i], tuple(contributors[(3 * i + k) % N_CONTRIBUTORS] for k in range(3)))
            for i in range(N_ADAPTERS)
        ]

    def job(self) -> SettleJob:
        developer, contributors = self.rng.choice(self.adapters)
        fee = self.rng.randrange(10**15, 10**18)
        return SettleJob(
            job_id=os.urandom(16),
            client=self.rng.choice(self.clients).address,
            fee=fee,
            max_fee=2 * OPEN,
            node=self.rng.choice(self.nodes),
            developer=developer,
            verifiers=(self.rng.choice(self.verifiers),),
            contributors=tuple(zip(contributors, (3333, 3333, 3334))),
        )

    def recipients(self, job: SettleJob) -> list[tuple[str, int]]:
        return list(job.payouts(self.chain.treasury()).items())


def measure_batches(chain: Chain, pop: Population, sizes: list[int]) -> dict:
    out: dict = {}
    warm = [pop.job() for _ in range(64)]
    chain.settle_batch(chain.last_seq() + 1, warm)  # every recipient's credit slot now non-zero
    for n in sizes:
        jobs = [pop.job() for _ in range(n)]
        t0 = time.perf_counter()
        receipt = chain.settle_batch(chain.last_seq() + 1, jobs)
        elapsed = time.perf_counter() - t0
        out[f"gas_per_job_batch{n}"] = receipt.gas_used / n
        if n == max(sizes):
            out["chain_jobs_per_s"] = n / elapsed
        jobs = [pop.job() for _ in range(n)]
        reserve = chain.reserve([Reservation(j.job_id, j.client, j.max_fee) for j in jobs])
        receipt = chain.settle_batch(chain.last_seq() + 1, jobs)
        out[f"gas_per_job_reserved_batch{n}"] = receipt.gas_used / n
        out[f"reserve_gas_per_job_batch{n}"] = reserve.gas_used / n
    return out


def warm_token_balances(chain: Chain, pop: Population) -> None:
    """Give every recipient a non-zero OPEN balance, so pushes to them are steady-state writes."""
    everyone = set(pop.nodes) | set(pop.verifiers) | {chain.treasury()}
    for developer, contributors in pop.adapters:
        everyone |= {developer, *contributors}
    for address in sorted(everyone):
        chain.fund(address, 1)


def measure_naive(chain: Chain, pop: Population, n_jobs: int) -> float:
    naive = chain.deploy_contract("NaivePush", chain.token.address, chain.treasury(), key=chain.settler_key)
    for client in pop.clients:
        chain.approve(client.key, naive.address, 10**4 * OPEN)
        chain.transact(client.key, naive.functions.deposit(10**4 * OPEN))
    total = 0
    for _ in range(n_jobs):
        job = pop.job()
        call = naive.functions.settle_job(
            job.job_id, job.client, job.fee, job.max_fee, job.node, job.developer,
            list(job.verifiers), [a for a, _ in job.contributors], [w for _, w in job.contributors],
        )
        total += chain.transact(chain.settler_key, call, "naive settle_job")["gasUsed"]
    return total / n_jobs


def measure_transfers(chain: Chain, pop: Population, n_jobs: int) -> float:
    chain.fund(chain.settler, 10**5 * OPEN)
    total = 0
    for _ in range(n_jobs):
        for address, amount in pop.recipients(pop.job()):
            total += chain.transfer(chain.settler_key, address, amount).gas_used
    return total / n_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer baseline samples; under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    t0 = time.perf_counter()
    chain = Chain()
    pop = Population(chain)
    result: dict = {"chain": "in-process py-evm (eth-tester)", "recipients_per_job": 7}
    result.update(measure_batches(chain, pop, [1, 64, 256]))
    warm_token_balances(chain, pop)
    result["gas_per_job_naive_push"] = measure_naive(chain, pop, 8 if args.quick else 32)
    result["gas_per_job_erc20_transfers"] = measure_transfers(chain, pop, 4 if args.quick else 16)
    result["settled_jobs_per_s"] = None  # the settlement service's end-to-end rate: measured by its own bench
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)

    if args.json:
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))
        return
    naive = result["gas_per_job_naive_push"]
    transfers = result["gas_per_job_erc20_transfers"]
    print(f"gas per settled job, 7 recipients each ({result['chain']})")
    print(f"{'design':38} {'gas/job':>10} {'vs naive push':>14} {'vs 7 transfers':>15}")
    rows = [("7 ERC-20 transfer transactions", transfers), ("naive: 1 tx/job, 7 pushes", naive)]
    for n in (1, 64, 256):
        rows.append((f"settle_batch {n:3d} jobs (direct)", result[f"gas_per_job_batch{n}"]))
    for n in (1, 64, 256):
        rows.append((f"settle_batch {n:3d} jobs (reserved)", result[f"gas_per_job_reserved_batch{n}"]))
        rows.append((f"  + reserve {n:3d} jobs at admission", result[f"reserve_gas_per_job_batch{n}"]))
    for name, gas in rows:
        print(f"{name:38} {gas:10.0f} {naive / gas:13.2f}x {transfers / gas:14.2f}x")
    print(f"raw settle_batch throughput on this in-process chain: {result['chain_jobs_per_s']:.0f} jobs/s "
          f"(256-job batch); elapsed {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
