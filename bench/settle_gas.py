"""Gas per settled job with many recipients: the balances tree against credit writes and naive pushes.

One in-process chain (py-evm), one run, side by side:

  tree, batch N     Settlement.settle_batch with N jobs in one transaction,
                    data contributors paid through the balances tree (one
                    root written per batch; each contributor claims later,
                    any number of batches at once: claim gas shown apart)
  credit, batch N   the same contract and jobs with every party credited
                    directly (one storage write per distinct party per batch:
                    the design before the tree)
                    (direct: the job id is first written at settlement;
                     reserved: its max fee was reserved at admission by
                     Settlement.reserve, whose gas is shown separately; the
                     network reserves every job by default)
  naive push        one transaction per job that pushes an ERC-20 transfer to
                    each recipient (bench/contracts/NaivePush.vy)
  transfers         one ERC-20 transfer transaction per recipient

Every job pays 16 recipients: node, developer, one verifier, 12 data
contributors (as its answer's attribution names them: 12 of its adapter's 24,
random weights), treasury. The population is fixed: 16 clients, 8 nodes,
16 adapters (each with its developer and 24 contributors of its own: 384), 4
verifiers. Steady state: warm-up batches first give every recipient a
non-zero credit and every contributor a position in the tree, as between two
withdrawals.

settled_jobs_per_s is measured through the service, as it runs on the
devnet: a real nats-server, the chain process (loranet_ops.chain_node)
and `python -m services.settlement` as processes of their own. Signed verdicts
(same population, adapters with 3 contributors served by a stand-in datastore
endpoint) are published on verdicts.<job_id>; the rate is jobs over the time
from the first publish to the last settlement.receipts.<job_id>, after a
warm-up epoch, for each epoch size given (`--epoch-sizes`).

    python bench/settle_gas.py            # table
    python bench/settle_gas.py --quick    # fewer samples, under a minute
    python bench/settle_gas.py --json     # one JSON object
    python bench/settle_gas.py --service-only --jobs 4096   # just the service rate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loranet import codec, topology  # noqa: E402
from loranet import protocol as p
from loranet.signing import Identity, sign  # noqa: E402
from loranet_ops.servers import NatsServer, free_port  # noqa: E402
from services.settlement.devchain import DevChain  # noqa: E402
from services.settlement.packing import Reservation, SettleJob  # noqa: E402
from services.settlement.transport import wait_for_rpc  # noqa: E402

OPEN = 10**18
N_CLIENTS, N_NODES, N_ADAPTERS, N_VERIFIERS = 16, 8, 16, 4
CONTRIBUTORS_PER_ADAPTER, CONTRIBUTORS_PER_JOB = 24, 12
RECIPIENTS_PER_JOB = 4 + CONTRIBUTORS_PER_JOB  # node, developer, verifier, treasury


class Population:
    def __init__(self, chain: DevChain, seed: int = 7, per_adapter: int = CONTRIBUTORS_PER_ADAPTER) -> None:
        self.rng = random.Random(seed)
        self.chain = chain
        self.clients = [chain.new_account(open_tokens=10**6 * OPEN) for _ in range(N_CLIENTS)]
        for client in self.clients:
            chain.deposit(client.key, 5 * 10**5 * OPEN)
        fresh = lambda n: [chain.new_account(eth=0).address for _ in range(n)]  # noqa: E731
        self.nodes, self.verifiers = fresh(N_NODES), fresh(N_VERIFIERS)
        self.adapters = [(fresh(1)[0], tuple(fresh(per_adapter))) for _ in range(N_ADAPTERS)]

    def job(self) -> SettleJob:
        developer, contributors = self.rng.choice(self.adapters)
        credited = self.rng.sample(contributors, CONTRIBUTORS_PER_JOB)
        cuts = sorted(self.rng.sample(range(1, 10_000), CONTRIBUTORS_PER_JOB - 1))
        weights = [b - a for a, b in zip([0, *cuts], [*cuts, 10_000])]
        fee = self.rng.randrange(10**15, 10**18)
        return SettleJob(
            job_id=os.urandom(16),
            client=self.rng.choice(self.clients).address,
            fee=fee,
            max_fee=2 * OPEN,
            node=self.rng.choice(self.nodes),
            developer=developer,
            verifiers=(self.rng.choice(self.verifiers),),
            contributors=tuple(zip(credited, weights)),
        )

    def recipients(self, job: SettleJob) -> list[tuple[str, int]]:
        return list(job.payouts(self.chain.treasury()).items())


def measure_batches(chain: DevChain, pop: Population, sizes: list[int]) -> dict:
    out: dict = {}
    for tree in (False, True):  # every recipient's credit slot non-zero, every contributor in the tree
        for _ in range(4):  # in parts: first writes of every slot at once pass the transaction gas limit
            chain.settle_batch(chain.last_seq() + 1, [pop.job() for _ in range(64)], pool_contributors=tree)
    for n in sizes:
        for tree, prefix in ((True, ""), (False, "credit_design_")):
            jobs = [pop.job() for _ in range(n)]
            t0 = time.perf_counter()
            receipt = chain.settle_batch(chain.last_seq() + 1, jobs, pool_contributors=tree)
            elapsed = time.perf_counter() - t0
            out[f"{prefix}gas_per_job_batch{n}"] = receipt.gas_used / n
            if n == max(sizes) and tree:
                out["chain_jobs_per_s"] = n / elapsed
            jobs = [pop.job() for _ in range(n)]
            reserve = chain.reserve([Reservation(j.job_id, j.client, j.max_fee) for j in jobs])
            receipt = chain.settle_batch(chain.last_seq() + 1, jobs, pool_contributors=tree)
            out[f"{prefix}gas_per_job_reserved_batch{n}"] = receipt.gas_used / n
            out[f"reserve_gas_per_job_batch{n}"] = reserve.gas_used / n
    return out


def measure_population(chain: DevChain, per_adapter: int) -> dict:
    """Steady-state gas per job of a 256-job reserved batch, both designs, when each adapter has
    `per_adapter` contributors (12 credited per job): the tree's cost grows with the distinct contributors
    a batch pays, the credit design's with its distinct parties."""
    pop = Population(chain, seed=per_adapter, per_adapter=per_adapter)
    for tree in (False, True):
        for _ in range(4):
            chain.settle_batch(chain.last_seq() + 1, [pop.job() for _ in range(64)], pool_contributors=tree)
    out: dict = {}
    for tree, name in ((True, "tree"), (False, "credit")):
        jobs = [pop.job() for _ in range(256)]
        chain.reserve([Reservation(j.job_id, j.client, j.max_fee) for j in jobs])
        receipt = chain.settle_batch(chain.last_seq() + 1, jobs, pool_contributors=tree)
        distinct = len({a for j in jobs for a, _ in j.contributors})
        out[f"{name}_gas_per_job_reserved_batch256_contributors{distinct}"] = receipt.gas_used / 256
    return out


def measure_claims(chain: DevChain, pop: Population, n: int) -> dict:
    """Gas of Settlement.claim: a contributor's first claim (its claimed and credit slots are new), and a
    later one after more batches (both slots non-zero): one claim covers every batch since the last."""
    contributors = [c for _, cs in pop.adapters for c in cs]
    first = [chain.claim(c)[1] for c in contributors[:n]]
    chain.settle_batch(chain.last_seq() + 1, [pop.job() for _ in range(256)])
    later = [chain.claim(c)[1] for c in contributors[:n]]
    return {
        "claim_gas_first": sum(t.gas_used for t in first if t) / max(1, sum(1 for t in first if t)),
        "claim_gas_later": sum(t.gas_used for t in later if t) / max(1, sum(1 for t in later if t)),
    }


def warm_token_balances(chain: DevChain, pop: Population) -> None:
    """Give every recipient a non-zero OPEN balance, so pushes to them are steady-state writes."""
    everyone = set(pop.nodes) | set(pop.verifiers) | {chain.treasury()}
    for developer, contributors in pop.adapters:
        everyone |= {developer, *contributors}
    for address in sorted(everyone):
        chain.fund(address, 1)


def measure_naive(chain: DevChain, pop: Population, n_jobs: int) -> float:
    naive = chain.deploy_contract(
        Path(__file__).resolve().parent / "contracts" / "NaivePush.vy",
        chain.token.address,
        chain.treasury(),
        key=chain.settler_key,
    )
    for client in pop.clients:
        chain.approve(client.key, naive.address, 10**4 * OPEN)
        chain.transact(client.key, naive.functions.deposit(10**4 * OPEN))
    total = 0
    for _ in range(n_jobs):
        job = pop.job()
        call = naive.functions.settle_job(
            job.job_id,
            job.client,
            job.fee,
            job.max_fee,
            job.node,
            job.developer,
            list(job.verifiers),
            [a for a, _ in job.contributors],
            [w for _, w in job.contributors],
        )
        total += chain.transact(chain.settler_key, call, "naive settle_job")["gasUsed"]
    return total / n_jobs


def measure_transfers(chain: DevChain, pop: Population, n_jobs: int) -> float:
    chain.fund(chain.settler, 10**5 * OPEN)
    total = 0
    for _ in range(n_jobs):
        for address, amount in pop.recipients(pop.job()):
            total += chain.transfer(chain.settler_key, address, amount).gas_used
    return total / n_jobs


ROOT = Path(__file__).resolve().parents[1]
_NODE, _VERIFIER, _CLIENT = (Identity.from_seed(bytes([k]) * 32) for k in (1, 2, 3))


def _verdicts(pop: Population, n: int, adapter_ids: list[str]) -> list[bytes]:
    """n signed, accepting verdicts on jobs of the population's clients, encoded."""
    out = []
    for _ in range(n):
        k = pop.rng.randrange(len(adapter_ids))
        now = time.time()
        request = sign(
            p.JobRequest(
                job_id=p.new_job_id(),
                client_key=_CLIENT.public,
                client_address=pop.rng.choice(pop.clients).address,
                model_id="a" * 64,
                adapter_id=adapter_ids[k],
                prompt="hello",
                max_tokens=64,
                max_fee=2 * OPEN,
                created_at=now,
                expires_at=now + 600,
            ),
            _CLIENT,
        )
        result = sign(
            p.InferenceResult(
                job_id=request.job_id,
                node_id="node-0",
                node_key=_NODE.public,
                node_address=pop.rng.choice(pop.nodes),
                node_seq=1,
                request=request,
                request_hash=request.request_hash(),
                model_id=request.model_id,
                adapter_id=request.adapter_id,
                tokenizer_id="c" * 64,
                prompt_tokens=list(range(256, 288)),
                output_tokens=list(range(300, 364)),
                output_text="x" * 64,
                finish_reason="eos",
                fingerprint=p.Fingerprint(chunks=[b"\x01" * 40] * 3),
                started_at=now,
                finished_at=now,
            ),
            _NODE,
        )
        verdict = sign(
            p.Verdict(
                job_id=request.job_id,
                verifier_id="verifier-0",
                verifier_key=_VERIFIER.public,
                verifier_address=pop.rng.choice(pop.verifiers),
                result_hash=result.result_hash(),
                accepted=True,
                audited=True,
                checks=[p.Check(name="fingerprint", ok=True)],
                result=result,
                decided_at=now,
            ),
            _VERIFIER,
        )
        out.append(codec.encode(verdict))
    return out


def _even_weights(n: int) -> list[int]:
    return [10_000 // n + (1 if k < 10_000 % n else 0) for k in range(n)]


def _manifests(pop: Population) -> dict[str, bytes]:
    out = {}
    for i, (developer, contributors) in enumerate(pop.adapters):
        adapter_id = f"{i + 1:064x}"
        manifest = p.AdapterManifest(
            adapter_id=adapter_id,
            name=f"bench-{i}",
            base_model_id="a" * 64,
            owner_address=developer,
            contributors=[
                p.Contributor(contributor_id=f"c{k}", address=a, weight_bps=w)
                for k, (a, w) in enumerate(zip(contributors, _even_weights(len(contributors))))
            ],
            rank=8,
            target_modules=["q_proj"],
        )
        out[adapter_id] = codec.encode(manifest)
    return out


async def _through_service(
    nats_url: str, verdicts: list[bytes], manifests: dict[str, bytes], warmup: list[bytes]
) -> float:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await topology.ensure_topology(js)

    async def datastore(msg) -> None:  # stands in for the datastore's adapter lookup
        request = codec.decode(p.AdapterGet, msg.data)
        await msg.respond(manifests[request.adapter])

    await nc.subscribe(p.DATASTORE_ADAPTER_GET.pattern, cb=datastore)
    seen: set[str] = set()
    target = asyncio.Event()
    wanted = [0]

    async def on_receipt(msg) -> None:
        seen.add(msg.subject)
        if len(seen) >= wanted[0]:
            target.set()

    await nc.subscribe(p.RECEIPTS_ALL.pattern, cb=on_receipt)

    async def burst(batch: list[bytes]) -> float:
        target.clear()
        wanted[0] = len(seen) + len(batch)
        t0 = time.perf_counter()
        for start in range(0, len(batch), 256):
            await asyncio.gather(
                *(js.publish(p.verdicts(codec.decode(p.Verdict, v).job_id), v) for v in batch[start : start + 256])
            )
        await asyncio.wait_for(target.wait(), timeout=600)
        return time.perf_counter() - t0

    await burst(warmup)
    elapsed = await burst(verdicts)
    await nc.close()
    return len(verdicts) / elapsed


def measure_service(n_jobs: int, epoch_sizes: list[int], rounds: int = 1) -> dict:
    """settled_jobs_per_s per epoch size (best of `rounds`, sizes interleaved): nats-server + chain
    process + settlement process."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = NatsServer(free_port(), Path(tmp) / "nats")
        nats_server.start()
        procs: list[subprocess.Popen] = []
        try:
            port = free_port()
            rpc_url = f"http://127.0.0.1:{port}"
            env = dict(os.environ, LORANET_CHAIN_PORT=str(port))
            log = open(Path(tmp) / "chain.log", "wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "loranet_ops.chain_node"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_for_rpc(rpc_url, timeout_s=120)
            chain = DevChain.open(rpc_url)
            pop = Population(chain)
            manifests = _manifests(pop)
            adapter_ids = list(manifests)
            for size in [n for _ in range(rounds) for n in epoch_sizes]:
                env = dict(
                    os.environ,
                    LORANET_NATS_URL=nats_server.url,
                    LORANET_RPC_URL=rpc_url,
                    LORANET_EPOCH_MAX_JOBS=str(size),
                    LORANET_EPOCH_MAX_S="0.5",
                    LORANET_INSTANCE=f"settlement-bench-{size}",
                )
                log = open(Path(tmp) / f"settlement-{size}.log", "wb")
                settlement = subprocess.Popen(
                    [sys.executable, "-m", "services.settlement"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                procs.append(settlement)
                verdicts = _verdicts(pop, n_jobs, adapter_ids)
                warmup = _verdicts(pop, size, adapter_ids)
                rate = asyncio.run(_through_service(nats_server.url, verdicts, manifests, warmup))
                key = f"settled_jobs_per_s_epoch{size}"
                out[key] = max(out.get(key, 0.0), rate)
                settlement.send_signal(signal.SIGTERM)
                settlement.wait(30)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)
            nats_server.stop()
    out["settled_jobs_per_s"] = max(v for k, v in out.items() if k.startswith("settled_jobs_per_s_epoch"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer baseline samples; under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--jobs", type=int, default=0, help="jobs per service measurement (default 2048, quick 1024)")
    parser.add_argument("--epoch-sizes", default="64,256", help="epoch sizes for the service measurement")
    parser.add_argument("--service-only", action="store_true", help="only settled_jobs_per_s through the service")
    parser.add_argument(
        "--rounds", type=int, default=0, help="service rounds per epoch size, best kept (default 2, quick 1)"
    )
    args = parser.parse_args()
    n_jobs = args.jobs or (1024 if args.quick else 2048)
    sizes = [int(x) for x in args.epoch_sizes.split(",")]
    rounds = args.rounds or (1 if args.quick else 2)

    t0 = time.perf_counter()
    if args.service_only:
        result = {"service": "nats-server + chain_node + settlement processes", "jobs": n_jobs}
        result.update(measure_service(n_jobs, sizes, rounds))
        result["elapsed_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))
        return
    chain = DevChain.open()
    pop = Population(chain)
    result: dict = {"chain": "in-process py-evm (eth-tester)", "recipients_per_job": RECIPIENTS_PER_JOB}
    result.update(measure_batches(chain, pop, [1, 64, 256]))
    result.update(measure_claims(chain, pop, 8 if args.quick else 32))
    result.update(measure_population(chain, 12))  # half the contributors per batch
    warm_token_balances(chain, pop)
    result["gas_per_job_naive_push"] = measure_naive(chain, pop, 8 if args.quick else 32)
    result["gas_per_job_erc20_transfers"] = measure_transfers(chain, pop, 4 if args.quick else 16)
    result.update(measure_service(n_jobs, sizes, rounds))
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)

    if args.json:
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))
        return
    naive = result["gas_per_job_naive_push"]
    transfers = result["gas_per_job_erc20_transfers"]
    r = RECIPIENTS_PER_JOB
    print(f"gas per settled job, {r} recipients each ({result['chain']})")
    print(f"{'design':44} {'gas/job':>10} {'vs naive push':>14} {'vs transfers':>13} {'vs credit':>10}")
    rows = [(f"{r} ERC-20 transfer transactions", transfers, None), (f"naive: 1 tx/job, {r} pushes", naive, None)]
    for kind, suffix in (("direct", ""), ("reserved", "reserved_")):
        for n in (1, 64, 256):
            credit = result[f"credit_design_gas_per_job_{suffix}batch{n}"]
            rows.append((f"credit writes, settle_batch {n:3d} ({kind})", credit, None))
            rows.append(
                (f"balances tree, settle_batch {n:3d} ({kind})", result[f"gas_per_job_{suffix}batch{n}"], credit)
            )
    for n in (1, 64, 256):
        rows.append((f"  + reserve {n:3d} jobs at admission", result[f"reserve_gas_per_job_batch{n}"], None))
    for name, gas, credit in rows:
        vs_credit = f"{credit / gas:9.2f}x" if credit else ""
        print(f"{name:44} {gas:10.0f} {naive / gas:13.2f}x {transfers / gas:12.2f}x {vs_credit:>10}")
    for key in sorted(k for k in result if "_contributors" in k):
        print(f"{key}: {result[key]:.0f}")
    print(
        f"a contributor's claim (any number of batches at once): {result['claim_gas_first']:.0f} gas the first time, "
        f"{result['claim_gas_later']:.0f} after"
    )
    print(
        f"raw settle_batch throughput on this in-process chain: {result['chain_jobs_per_s']:.0f} jobs/s (256-job batch)"
    )
    service = ", ".join(f"{result[f'settled_jobs_per_s_epoch{n}']:.0f} jobs/s at {n}-job epochs" for n in sizes)
    print(
        f"through the service (verdicts on NATS -> receipts; nats-server, chain process, settlement "
        f"process; {n_jobs} jobs): {service}; elapsed {result['elapsed_s']} s"
    )


if __name__ == "__main__":
    main()
