"""Settlement handlers: verdicts.<job_id> → epoch batch on chain → settlement.receipts.<job_id>.

Exactly once, across crashes. A verdict's handler only decides (settle or
refund) and waits for its epoch; the epoch (WindowBatcher: `epoch_max_jobs` or
`epoch_max_s`) reads every job's on-chain state and its clients' escrow in two
calls, then commits: refunds in one `refund` transaction, the verified jobs in
one `settle_batch`. Each commit is written to the journal (journal.py) before
anything is sent and cleared after its receipts are published; the verdicts
are acknowledged only after that. A crash anywhere leaves either unacked
verdicts (redelivered: jobs already final on chain are recognised by
`job_states` and get their existing receipt) or a journal record, which
`recover()` reconciles before any new verdict is taken: a batch mined under
its seq with its Merkle root gets its receipts published, one not mined is sent
again under the same seq (the contract's sequence guard lets only one of two
copies through), a refund already on chain is found by its JobRefunded log.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from nats.js.errors import NotFoundError

from loranet import codec, confidential, topology
from loranet import protocol as p
from loranet.batching import WindowBatcher
from loranet.client import fresh_announcements
from loranet.errors import Refused, RemoteError, ServiceError
from loranet.runtime import Delivery, Endpoint, Pull, Runtime
from loranet.split import Price

from . import domain
from .chain import BatchReceipt, Chain, ChainError, TxInfo
from .journal import Attempts, Journal, PendingCommit, Votes
from .packing import MAX_JOBS, BatchTooLarge, Reservation, SettleJob
from .settings import SettlementSettings

_RECENT = 100_000  # jobs remembered as decided (duplicates skipped without a chain read)
_MANIFEST_TTL_S = 300.0


class SettlementService:
    def __init__(self, rt: Runtime, settings: SettlementSettings, chain: Chain, journal: Journal | None = None) -> None:
        self.rt = rt
        self.settings = settings
        self.chain = chain
        self.journal = journal
        self.treasury = chain.treasury_address
        self.price = Price(settings.price_per_prompt_token, settings.price_per_output_token, settings.price_per_job)
        self.epochs: WindowBatcher[str, domain.Decision, p.Receipt | None] = WindowBatcher(
            self._settle_epoch, settings.epoch_max_s, settings.epoch_max_jobs
        )
        self._quorums: OrderedDict[str, domain.Quorum] = OrderedDict()
        # Committees (committee_size > 1): runs undecided (run key → the result), outcomes of decided runs
        # (run key → (outcome, result hash): a member voting against it later is slashed too), the draw's
        # randomness, and one lock for the quorums' bookkeeping (verdicts and the committee loop).
        self._open: dict[str, p.InferenceResult] = {}
        self._decided: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._rng = random.SystemRandom()
        self._votes_lock = asyncio.Lock()
        self._deciding: set[str] = set()  # jobs whose settle/refund is under way in this process
        self._final: OrderedDict[str, None] = OrderedDict()  # jobs this process saw to the end
        self._manifests: dict[str, tuple[float, p.AdapterManifest]] = {}
        # job id → its client's key, which names the subject of the job's events (jobs.events.<client_id>.*)
        self._clients: OrderedDict[str, bytes] = OrderedDict()
        self._fault_passes = 0
        # verifier key -> (checked at, the registered verifier's (payout address, bonded stake) or None)
        self._verifiers: dict[bytes, tuple[float, tuple[str, int] | None]] = {}
        self._attempts: OrderedDict[str, Attempts] = OrderedDict()  # jobs being re-run: attempt, failed nodes
        # Whether _attempts holds every record of the journal bucket (else a miss is read from it).
        self._attempts_complete = False
        self._reserving: dict[tuple[str, str, int], asyncio.Future[p.Reservation]] = {}  # asks under way
        self.reservations: WindowBatcher[str, Reservation, str | None] = WindowBatcher(
            self._reserve_batch, settings.reserve_window_s, MAX_JOBS
        )

    @property
    def committed(self) -> Journal:
        """The journal of commits (SettlementService.open gives the service one)."""
        if self.journal is None:
            raise RuntimeError("settlement has no journal: build it with SettlementService.open")
        return self.journal

    @classmethod
    async def open(cls, rt: Runtime, settings: SettlementSettings, chain: Chain) -> SettlementService:
        """The service with its journal, after reconciling whatever a previous run left pending."""
        kv = await topology.ensure_bucket(rt.js, settings.journal_bucket, settings.js_replicas)
        service = cls(rt, settings, chain, Journal(kv))
        await service.recover()
        # Jobs being re-run: known from here on without a read per verdict (one settler per key).
        try:
            service._attempts.update(await service.committed.all_attempts())
            service._attempts_complete = len(service._attempts) <= _RECENT
        except Exception as exc:  # e.g. no right to list the bucket: read each job's record when needed
            rt.log.warning("attempts.list_failed", error=repr(exc)[:300])
        if service.committees:  # runs left short of their committee's decision: the loop watches them
            for key, votes in (await service.committed.all_votes()).items():
                if votes.verdicts:
                    service._open[key] = codec.decode(p.Verdict, votes.verdicts[0]).result
        return service

    @property
    def committees(self) -> bool:
        return self.settings.committee_size > 1

    @property
    def journals_votes(self) -> bool:
        """Whether a run can wait for more than one verdict (its votes are then kept in the journal)."""
        return self.settings.verdict_quorum > 1 or self.committees

    def routes(self) -> Sequence[Pull | Endpoint]:
        routes: list[Pull | Endpoint] = [
            Pull("verdicts", p.SETTLEMENT_VERDICTS, self.on_verdict, slots=max(self.settings.epoch_max_jobs * 2, 8)),
            Pull("flags", p.SETTLEMENT_FLAGS, self.on_flag, slots=1),
            Endpoint("balance", p.SETTLEMENT_BALANCE, self.balance),
            Endpoint("stake", p.SETTLEMENT_STAKE, self.stake),
            Endpoint("epochs", p.SETTLEMENT_EPOCHS, self.epochs_on_chain),
            # read-then-write on the settler's key: one at a time (the others run concurrently)
            Endpoint("claim", p.SETTLEMENT_CLAIM, self.claim, concurrency=1),
            Endpoint("datanet-record", p.SETTLEMENT_DATANET_RECORD, self.record_datanet, concurrency=1),
        ]
        if self.settings.reservations:
            routes += [
                Endpoint("reserve", p.SETTLEMENT_RESERVE, self.reserve),
                Endpoint("release", p.SETTLEMENT_RELEASE, self.release),
            ]
        if self.settings.faucet:
            routes.append(Endpoint("faucet", p.SETTLEMENT_FAUCET, self.faucet, concurrency=1))
        return routes

    # -- request-reply -----------------------------------------------------

    async def balance(self, req: p.BalanceGet) -> p.Balance:
        def read() -> p.Balance:
            node = self.chain.node(req.address)
            return p.Balance(
                address=req.address,
                token=self.chain.balance_of(req.address),
                escrow=self.chain.available_of(req.address),
                credit=self.chain.credit_of(req.address),
                stake=node.stake,
                claimable=self.chain.claimable(req.address),
            )

        try:
            return await asyncio.to_thread(read)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None

    async def claim(self, req: p.ClaimBalance) -> p.Claimed:
        """Send Settlement.claim for a data contributor (its balance into its credit; only it is paid), so a
        contributor needs no gas money; one at a time on the settler's key."""

        def send() -> p.Claimed:
            amount, info = self.chain.claim(req.address)
            return p.Claimed(
                address=req.address,
                amount=amount,
                tx_hash=info.tx_hash if info else "",
                credit=self.chain.credit_of(req.address),
            )

        try:
            return await asyncio.to_thread(send)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None

    async def epochs_on_chain(self, req: p.EpochList) -> p.EpochListReply:
        try:
            batches = await asyncio.to_thread(self.chain.recent_batches, req.limit)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None
        return p.EpochListReply(epochs=batches)

    async def record_datanet(self, req: p.DatanetRecord) -> p.DatanetAnchor:
        """Record a datanet version's Merkle root on chain, once; the same root again returns the first record."""
        version = await self.rt.request(p.DATASTORE_DATANET_GET, p.DatanetGet(name=req.name, version=req.version))
        root = bytes.fromhex(version.merkle_root.removeprefix("0x"))

        def record() -> TxInfo:
            for _ in range(2):
                onchain = self.chain.datanet_root(req.name, req.version)
                if onchain == bytes(32):
                    try:
                        return self.chain.record_datanet_version(req.name, req.version, root)
                    except ChainError:
                        continue  # recorded meanwhile by another replica? read again
                if onchain != root:
                    raise ServiceError(
                        "conflict", f"{req.name}@{req.version} is recorded with root 0x{onchain.hex()}", "version"
                    )
                found = self.chain.datanet_record_tx(req.name, req.version)
                if found is not None:
                    return found
            raise ServiceError("unavailable", f"could not record {req.name}@{req.version}; try again", "version")

        try:
            info = await asyncio.to_thread(record)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None
        self.rt.log.info("datanet.recorded", datanet=req.name, version=req.version, tx=info.tx_hash)
        return p.DatanetAnchor(
            name=req.name,
            version=req.version,
            merkle_root=version.merkle_root,
            tx_hash=info.tx_hash,
            block=info.block_number,
        )

    async def stake(self, req: p.StakeGet) -> p.Stake:
        def read() -> p.Stake:
            address = req.address
            if req.ed25519_key:
                address = self.chain.node_of_key(bytes.fromhex(req.ed25519_key)) or p.ZERO_ADDRESS
            node = self.chain.node(address)
            spec = self.chain.spec(address)
            return p.Stake(
                address=address,
                stake=node.stake,
                unbonding=node.unbonding,
                unbonding_until=node.unbonding_until,
                active=self.chain.is_active(address),
                payout=node.payout,
                ed25519_key=node.ed25519_key.hex() if any(node.ed25519_key) else "",
                min_stake=self.chain.min_stake(),
                device=spec.device if spec else "",
                memory_mb=spec.memory_mb if spec else 0,
                region=spec.region if spec else "",
                price=spec.price if spec else 0,
                dtype=spec.dtype if spec else "",
                verifier=bool(any(node.ed25519_key) and self.chain.verifier_of_key(node.ed25519_key)),
            )

        try:
            return await asyncio.to_thread(read)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None

    async def reserve(self, req: p.Reserve) -> p.Reservation:
        """Lock the job's max fee at admission (batched into one `reserve` transaction per window).
        Idempotent: asking again for a job already reserved answers as the first time did, and asking
        again while the first ask is under way (a scheduler that timed out) waits for that one."""
        key = (req.job_id, req.client_address.lower(), req.max_fee)
        running = self._reserving.get(key)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._reserve(req))
        self._reserving[key] = task
        task.add_done_callback(lambda _: self._reserving.pop(key, None))
        return await asyncio.shield(task)

    async def _reserve(self, req: p.Reserve) -> p.Reservation:
        try:
            refused = await self.reservations.add(
                "reserve", Reservation(bytes.fromhex(req.job_id), req.client_address, req.max_fee)
            )
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None
        state, available = await asyncio.to_thread(
            lambda: (self.chain.job_state(req.job_id), self.chain.available_of(req.client_address))
        )
        if refused and state == "unknown":
            raise ServiceError("conflict", f"reservation refused: {refused}", "max_fee")
        if state == "unknown":
            raise ServiceError("unavailable", "reservation not on chain; try again")
        return p.Reservation.model_validate({"job_id": req.job_id, "state": state, "available": available})

    async def _reserve_batch(self, key: str, items: list[Reservation]) -> list[str | None]:
        """One reserve transaction; if it reverts, each reservation alone (None = done, else why not)."""
        states = await asyncio.to_thread(self.chain.job_states, [r.job_id for r in items])
        todo = [r for r, s in zip(items, states) if s == "unknown"]
        refused: dict[bytes, str] = {}
        if todo:
            try:
                await asyncio.to_thread(self.chain.reserve, todo)
            except ChainError:
                for r in todo:
                    try:
                        await asyncio.to_thread(self.chain.reserve, [r])
                    except ChainError as exc:
                        refused[r.job_id] = str(exc)[:500]
        return [refused.get(r.job_id) for r in items]

    async def release(self, req: p.Release) -> p.Receipt:
        """Refund a job that will not be verified (its reservation back to the client's escrow)."""
        if req.job_id in self._deciding:
            raise ServiceError("conflict", "the job is being settled or refunded now", "job_id")
        if len(req.client_key) == 32:
            self._remember_client(req.job_id, req.client_key)
        else:  # the refund's event needs the client: know it before anything goes on chain
            try:
                await self._client_key(req.job_id)
            except ValueError as exc:
                raise ServiceError("not_found", f"{exc}; pass the job's client_key", "client_key") from None
        self._deciding.add(req.job_id)
        try:
            receipt = await self.epochs.add("epoch", domain.Decision(req.job_id, None, req.reason or "released"))
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None
        finally:
            self._deciding.discard(req.job_id)
        if receipt is None:
            raise ServiceError("conflict", "the job is final on chain without a receipt here", "job_id")
        return receipt

    async def faucet(self, req: p.Faucet) -> p.Balance:
        from .devchain import DevChain  # the faucet is the devnet's: only a development chain has one

        if req.escrow > req.amount:
            raise ServiceError("invalid", "escrow cannot exceed amount", "escrow")
        chain = self.chain
        if not isinstance(chain, DevChain):
            raise ServiceError("forbidden", "this chain has no faucet (a devnet's only)")

        def give() -> None:
            if req.amount - req.escrow:
                chain.fund(req.address, req.amount - req.escrow)
            if req.escrow:
                self.chain.approve(self.chain.deployer_key, self.chain.settlement.address, req.escrow)
                self.chain.deposit_for(self.chain.deployer_key, req.address, req.escrow)

        try:
            await asyncio.to_thread(give)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None
        return await self.balance(p.BalanceGet(address=req.address))

    # -- verdicts ----------------------------------------------------------

    async def on_verdict(self, verdict: p.Verdict, delivery: Delivery) -> None:
        try:
            domain.check_verdict(verdict)
            if self.settings.registered_verifiers_only:
                domain.check_registered(verdict, await self._payout_of(verdict.verifier_key))
        except domain.VerdictRefused as exc:
            raise Refused(f"verdict refused: {exc}") from None
        job_id = verdict.job_id
        attempt = verdict.result.attempt
        self._remember_client(job_id, verdict.result.request.client_key)
        key = job_id if attempt == 0 else f"{job_id}.{attempt}"  # quorum per run of the job
        if job_id in self._final or job_id in self._deciding:
            # decided here already; if its commit fails, its own message is retried
            await self._late_vote(key, verdict)
            return
        runs = await self._attempts_of(job_id)
        if attempt != runs.attempt or verdict.result.node_id in runs.failed:
            if (
                delivery.deliveries > 1
                and not verdict.accepted
                and attempt + 1 == runs.attempt
                and runs.failed
                and verdict.result.node_id == runs.failed[-1]
            ):
                # A redelivery of the verdict that decided this re-run: a crash may have come between
                # recording the re-run and publishing it, so publish again (de-duplicated by msg id; the
                # scheduler also skips a re-run already dispatched).
                await self._publish_rerun(verdict, runs, "")
            else:
                self.rt.log.info(
                    "verdict.stale",
                    job_id=job_id,
                    attempt=attempt,
                    current=runs.attempt,
                    node_id=verdict.result.node_id,
                    verifier=verdict.verifier_id,
                )
            return
        async with self._votes_lock:
            if job_id in self._final or job_id in self._deciding:
                await self._late_vote(key, verdict)
                return
            quorum = await self._quorum(key)
            if self.committees and quorum.members is None:
                if (
                    not quorum.votes()
                    and not domain.counts(verdict)
                    and self._rng.random() >= self.settings.committee_sample_rate
                ):
                    quorum.needed = 1  # a cheap-checks acceptance outside the sample settles alone
                    decision = quorum.add(verdict)
                else:  # kept until the committee is drawn, which counts it if its verifier is a member
                    quorum.outside[verdict.verifier_id] = verdict
                    self._open[key] = verdict.result
                    decision = await self._seat_committee(key, quorum, verdict.result)
            else:
                decision = quorum.add(verdict)
            if decision is None:
                await self._keep_votes(key, quorum, verdict.result)
                return
            self._deciding.add(job_id)
        try:
            await self._decide(key, quorum, decision, verdict, runs)
        finally:
            self._deciding.discard(job_id)

    async def _quorum(self, key: str) -> domain.Quorum:
        """The run's quorum: in memory, else what the journal kept of it (votes and committee)."""
        quorum = self._quorums.get(key)
        if quorum is not None:
            return quorum
        quorum = domain.Quorum(self.settings.verdict_quorum)
        if self.journals_votes:
            kept = await self.committed.votes(key)
            for data in kept.verdicts:  # counted before a restart
                vote = codec.decode(p.Verdict, data)
                if self.committees and kept.members is None:
                    quorum.outside[vote.verifier_id] = vote
                else:
                    quorum.add(vote)
            if kept.members is not None:
                quorum.seat(kept.members)
        self._quorums[key] = quorum
        while len(self._quorums) > _RECENT:
            self._quorums.popitem(last=False)
        return quorum

    async def _keep_votes(self, key: str, quorum: domain.Quorum, result: p.InferenceResult) -> None:
        """An undecided run: its votes (acknowledged now) into the journal; members not heard yet asked."""
        if self.journals_votes:
            await self.committed.put_votes(key, Votes(tuple(codec.encode(v) for v in quorum.votes()), quorum.members))
        if quorum.members is not None:
            await self._ask(quorum, result)

    async def _seat_committee(self, key: str, quorum: domain.Quorum, result: p.InferenceResult) -> str | None:
        """Draw the run's committee (stake-weighted, at random) and count the votes so far by it; None
        while too few verifiers are eligible (the committee loop draws again, refunds at the deadline)."""
        try:
            members = await self._draw(result)
        except domain.CommitteeUnavailable as exc:
            self.rt.log.warning("committee.unavailable", run=key, why=str(exc))
            return None
        self.rt.log.info("committee.drawn", run=key, members=[c.verifier_id for c in members])
        return quorum.seat({c.verifier_id: c.key for c in members})

    async def _draw(self, result: p.InferenceResult) -> list[domain.Candidate]:
        job = result.request
        announced = await fresh_announcements(self.rt.js, p.VERIFIERS_BUCKET, p.VerifierAnnouncement, job.model_id)
        sealed_to = set(confidential.committee(job, result.node_key)) if job.confidential else None
        candidates: dict[bytes, domain.Candidate] = {}
        for a in announced:
            if sealed_to is not None and a.verifier_key not in sealed_to:
                continue  # cannot open the confidential result
            registered = await self._verifier(a.verifier_key)
            if registered is None or registered[0].lower() != a.verifier_address.lower():
                continue
            candidates.setdefault(a.verifier_key, domain.Candidate(a.verifier_id, a.verifier_key, registered[1]))
        return domain.draw_committee(list(candidates.values()), self.settings.committee_size, self._rng)

    async def _ask(self, quorum: domain.Quorum, result: p.InferenceResult) -> None:
        """Ask each member not heard from to audit the result (de-duplicated per member and run)."""
        committee = sorted(quorum.members or {})
        for member in quorum.waiting_for():
            request = p.AuditRequest(
                job_id=result.job_id,
                attempt=result.attempt,
                verifier_id=member,
                committee=committee,
                needed=quorum.needed,
                result=result,
                at=time.time(),
            )
            await self.rt.publish(
                p.audit_request(member), request, msg_id=f"{result.job_id}:{result.attempt}:audit:{member}"
            )

    async def committee_loop(self) -> None:
        """Runs waiting on a committee: draw it once enough verifiers are eligible; refund a run whose
        committee is not drawn, or has not decided, when its job expires (never settled on fewer)."""
        while True:
            await asyncio.sleep(self.settings.committee_retry_s)
            for key, result in list(self._open.items()):
                try:
                    await self._watch(key, result)
                except Exception as exc:  # the chain or NATS away: next round
                    self.rt.log.warning("committee.watch_failed", run=key, error=repr(exc)[:300])

    async def _watch(self, key: str, result: p.InferenceResult) -> None:
        job_id = result.job_id
        async with self._votes_lock:
            if job_id in self._final or job_id in self._deciding or key not in self._open:
                self._open.pop(key, None)
                return
            quorum = await self._quorum(key)
            decision = None
            if quorum.members is None:
                decision = await self._seat_committee(key, quorum, result)
                if decision is None and quorum.members is not None:
                    await self._keep_votes(key, quorum, result)
            if decision is None:
                if time.time() < result.request.expires_at:
                    return
                decision = "expired"
            self._deciding.add(job_id)
        try:
            votes = quorum.votes()
            if votes:
                await self._decide(key, quorum, decision, votes[0], await self._attempts_of(job_id))
        finally:
            self._deciding.discard(job_id)

    async def _late_vote(self, key: str, verdict: p.Verdict) -> None:
        """A vote on a run already decided: a member's audit or rejection against the decision is slashed."""
        decided = self._decided.get(key)
        if decided is None or not domain.counts(verdict):
            return
        outcome, result_hash = decided
        for vote in domain.contradicting([verdict], outcome, result_hash):
            await self._slash_verifier(vote, key, outcome)

    async def _decide(self, key: str, quorum: domain.Quorum, decision: str, verdict: p.Verdict, runs: Attempts) -> None:
        """Carry out a run's decision: settle it, re-run it, or refund it; slash the node of a rejected
        result and every verifier whose evidence contradicts its committee's decision."""
        job_id = verdict.job_id
        attempt = verdict.result.attempt
        if quorum.members is not None and decision in ("settle", "refund"):
            result_hash = quorum.agreed[0].result_hash if decision == "settle" else verdict.result_hash
            self._decided[key] = (decision, result_hash)
            while len(self._decided) > _RECENT:
                self._decided.popitem(last=False)
            for vote in domain.contradicting(quorum.votes(), decision, result_hash):
                await self._slash_verifier(vote, key, decision)
        if decision == "refund":
            rejecting = next(iter(quorum.rejecting.values()), verdict)
            reason = "; ".join(c.name for c in rejecting.checks if not c.ok)[:1000] or "rejected by the verifiers"
            if attempt < self.settings.max_reruns and await self._rerun(rejecting, runs, reason):
                await self._forget(key)
                return
            if attempt:
                reason = (
                    f"{reason} (attempt {attempt}; every attempt rejected, nodes "
                    f"{', '.join([*runs.failed, rejecting.result.node_id])})"
                )[:1000]
            item = domain.Decision(
                job_id, None, reason, node_key=rejecting.result.node_key, evidence=bytes.fromhex(rejecting.result_hash)
            )
        elif decision == "settle":
            item = domain.Decision(job_id, await self._settle_job(quorum.agreed))
        elif decision == "split":
            item = domain.Decision(
                job_id,
                None,
                f"the verifier committee split ({len(quorum.accepting)} accepted, {len(quorum.rejecting)} rejected, "
                f"{quorum.needed} needed)",
            )
        else:  # expired
            item = domain.Decision(
                job_id,
                None,
                "the job expired before a verifier committee decided it"
                + (
                    ""
                    if quorum.members is not None
                    else f" (fewer than {self.settings.committee_size} eligible verifiers)"
                ),
            )
        await self.epochs.add("epoch", item)
        await self._forget(key)
        self._final[job_id] = None
        while len(self._final) > _RECENT:
            self._final.popitem(last=False)

    async def _forget(self, key: str) -> None:
        self._quorums.pop(key, None)
        self._open.pop(key, None)
        if self.journals_votes:
            await self.committed.clear_votes(key)

    async def on_flag(self, flag: p.NodeFlag, delivery: Delivery) -> None:
        """A verifier flagged a node's statistics: kept; once `verdict_quorum` distinct registered verifiers
        flagged the same node key, the node is slashed statistics_slash_bps of its bond, once."""
        try:
            domain.check_flag(flag)
            domain.check_registered(flag, await self._payout_of(flag.verifier_key))
        except domain.VerdictRefused as exc:
            raise Refused(f"flag refused: {exc}") from None
        kept, slashed = await self.committed.node_flags(flag.node_key)
        flags = {f.verifier_key: f for f in (codec.decode(p.NodeFlag, d) for d in kept)}
        flags[flag.verifier_key] = flag
        self.rt.log.warning(
            "node.flag", node_id=flag.node_id, verifier=flag.verifier_id, flags=len(flags), why=flag.reason[:200]
        )
        encoded = [codec.encode(f) for f in flags.values()]
        if slashed or len(flags) < self.settings.verdict_quorum or not self.settings.statistics_slash_bps:
            await self.committed.put_node_flags(flag.node_key, encoded, slashed)
            return
        agreeing = sorted(flags.values(), key=lambda f: f.signature)[: self.settings.verdict_quorum]
        evidence = domain.flags_evidence(flag.node_key, agreeing)
        done = await self._take(
            "node", lambda: self.chain.node_of_key(flag.node_key), evidence, self.settings.statistics_slash_bps, ""
        )
        self.rt.log.warning(
            "node.slashed_on_statistics",
            node_id=flag.node_id,
            verifiers=[f.verifier_id for f in agreeing],
            evidence=evidence.hex(),
            outcome=done or "not staked",
        )
        # not marked slashed when nothing was taken (not staked, or the chain refused): the next flag tries again
        await self.committed.put_node_flags(flag.node_key, encoded, evidence if done else b"")

    # -- re-runs -------------------------------------------------------------

    async def _payout_of(self, key: bytes) -> str | None:
        """The payout address of the active registered verifier that bound `key` (None: none)."""
        registered = await self._verifier(key)
        return registered[0] if registered else None

    async def _verifier(self, key: bytes) -> tuple[str, int] | None:
        """(payout address, bonded stake) of the active registered verifier that bound `key` (None: none),
        cached for verifier_cache_s."""
        cached = self._verifiers.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.settings.verifier_cache_s:
            return cached[1]

        def read() -> tuple[str, int] | None:
            staker = self.chain.verifier_of_key(key)
            if not staker:
                return None
            record = self.chain.node(staker)
            return record.payout, record.stake

        try:
            found = await asyncio.to_thread(read)
        except ChainError:
            if cached is not None:
                return cached[1]  # the chain is away: what was known
            raise  # redelivered later
        if len(self._verifiers) > 4096:
            self._verifiers.clear()
        self._verifiers[key] = (time.monotonic(), found)
        return found

    async def _attempts_of(self, job_id: str) -> Attempts:
        runs = self._attempts.get(job_id)
        if runs is None:
            if self._attempts_complete or self.journal is None:
                return Attempts()
            runs = await self.committed.attempts(job_id)
            if runs.attempt:
                self._remember_attempts(job_id, runs)
        return runs

    def _remember_attempts(self, job_id: str, runs: Attempts) -> None:
        self._attempts[job_id] = runs
        self._attempts.move_to_end(job_id)
        while len(self._attempts) > _RECENT:
            self._attempts.popitem(last=False)
            self._attempts_complete = False  # forgotten ones are read back from the bucket

    async def _rerun(self, verdict: p.Verdict, runs: Attempts, reason: str) -> bool:
        """A finally rejected result whose job may still be run again: slash its node (no pay for it), record
        the next attempt, and hand the client's signed request to the scheduler for a node that has not
        failed it. The reservation stays held. False when the job is final on chain already."""
        job_id = verdict.job_id
        if await asyncio.to_thread(self.chain.job_state, job_id) in domain.FINAL_STATES:
            return False  # a late verdict of a job settled or refunded before: its receipt path answers
        slashed = ""
        if self.settings.slash_bps:
            slashed = await self._slash(
                domain.Decision(
                    job_id, None, reason, node_key=verdict.result.node_key, evidence=bytes.fromhex(verdict.result_hash)
                )
            )
        failed = tuple(dict.fromkeys([*runs.failed, verdict.result.node_id]))
        operators = tuple(dict.fromkeys([*runs.operators, verdict.result.node_address.lower()]))
        nxt = Attempts(attempt=verdict.result.attempt + 1, failed=failed, operators=operators)
        await self.committed.put_attempts(job_id, nxt)  # decided before anything is published
        self._remember_attempts(job_id, nxt)
        self._fault("before_rerun_publish")
        why = (
            f"attempt {verdict.result.attempt} on node {verdict.result.node_id} rejected ({reason})"
            + (f"; {slashed}" if slashed else "")
            + f"; re-run as attempt {nxt.attempt}"
        )
        await self._publish_rerun(verdict, nxt, why)
        return True

    async def _publish_rerun(self, verdict: p.Verdict, runs: Attempts, why: str) -> None:
        job_id = verdict.job_id
        why = (
            why
            or f"attempt {verdict.result.attempt} on node {verdict.result.node_id} rejected; re-run as attempt "
            f"{runs.attempt}"
        )
        rerun = p.RerunRequest(
            job_id=job_id,
            attempt=runs.attempt,
            request=verdict.result.request,
            exclude=list(runs.failed),
            reason=why[:1024],
            at=time.time(),
            exclude_operators=list(runs.operators),
        )
        # The event first: a scheduler that dispatches the re-run then finds `rerun` before its `dispatched`.
        await self.rt.emit(
            job_id, p.Stage.RERUN, body=rerun, node_id=verdict.result.node_id, reason=why, attempt=runs.attempt
        )
        await self.rt.publish(p.JOBS_RERUN.pattern, rerun, msg_id=f"{job_id}:rerun:{runs.attempt}")
        self.rt.log.warning("job.rerun", job_id=job_id, attempt=runs.attempt, exclude=list(runs.failed))

    async def _manifest(self, adapter_id: str) -> p.AdapterManifest | None:
        if not adapter_id:
            return None
        cached = self._manifests.get(adapter_id)
        if cached and time.monotonic() - cached[0] < _MANIFEST_TTL_S:
            return cached[1]
        try:
            manifest = await self.rt.request(p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=adapter_id))
        except RemoteError as exc:
            raise RuntimeError(f"adapter manifest for {adapter_id} unavailable: {exc}") from None
        self._manifests[adapter_id] = (time.monotonic(), manifest)
        return manifest

    async def _settle_job(self, verdicts: list[p.Verdict]) -> SettleJob:
        manifest = await self._manifest(verdicts[0].result.request.adapter_id)
        return domain.settle_job(verdicts, manifest, self.treasury, self.price)

    # -- epochs ------------------------------------------------------------

    async def _settle_epoch(
        self, key: str, decisions: list[domain.Decision]
    ) -> Sequence[p.Receipt | None | BaseException]:
        ids = [d.job_id for d in decisions]
        states = await asyncio.to_thread(self.chain.job_states, ids)
        clients = sorted({d.settle.client for d in decisions if d.settle is not None})
        available = (
            dict(zip(clients, await asyncio.to_thread(self.chain.available_of_many, clients))) if clients else {}
        )
        settles, refunds, final = domain.plan_epoch(decisions, states, available)
        if self.settings.slash_bps:
            slashed = {}
            for decision, state in zip(decisions, states):
                if decision.evidence and state not in domain.FINAL_STATES:
                    slashed[decision.job_id] = await self._slash(decision)
            refunds = [(j, f"{r}; {slashed[j]}" if slashed.get(j) else r) for j, r in refunds]
        out: dict[str, p.Receipt | None | Exception] = {}
        for decision, state in zip(decisions, states):
            if state in domain.FINAL_STATES:  # a redelivery after a crash, or a late verdict
                out[decision.job_id] = await self._existing_receipt(decision.job_id, state)
        if settles:
            out.update(await self._settle_or_split(settles))
        if refunds:
            out.update(await self._refund_or_split(refunds))
        return [out[i] for i in ids]

    async def _settle_or_split(self, jobs: list[SettleJob]) -> dict[str, p.Receipt | Exception]:
        try:
            return await self._commit_settles(jobs)
        except BatchTooLarge as exc:  # over a bound of the contract (parties, words, siblings): halves
            self.rt.log.info("epoch.split", jobs=len(jobs), why=str(exc)[:200])
            half = len(jobs) // 2
            return {**await self._settle_or_split(jobs[:half]), **await self._settle_or_split(jobs[half:])}
        except ChainError as exc:
            if len(jobs) == 1:
                reason = f"settlement transaction refused: {exc}"[:1000]
                return await self._refund_or_split([(jobs[0].job_id.hex(), reason)])
            # One job can still revert the whole batch (escrow withdrawn since the check):
            # settle the rest one by one and refund only the jobs that fail alone.
            self.rt.log.warning("epoch.reverted", jobs=len(jobs), error=str(exc)[:300])
            out: dict[str, p.Receipt | Exception] = {}
            for job in jobs:
                out.update(await self._settle_or_split([job]))
            return out

    async def _refund_or_split(self, refunds: list[tuple[str, str]]) -> dict[str, p.Receipt | Exception]:
        try:
            return await self._commit_refunds(refunds)
        except ChainError as exc:
            if len(refunds) == 1:
                return {refunds[0][0]: exc}  # the handler fails; its redelivery finds the job's state
            out: dict[str, p.Receipt | Exception] = {}
            for refund in refunds:
                out.update(await self._refund_or_split([refund]))
            return out

    async def _slash(self, decision: domain.Decision) -> str:
        """Slash the staked node that signed a rejected result, once per result (before its refund:
        a crash in between redoes it, and the Registry refuses the same evidence twice)."""
        return await self._take(
            "node",
            lambda: self.chain.node_of_key(decision.node_key),
            decision.evidence,
            self.settings.slash_bps,
            decision.job_id,
        )

    async def _slash_verifier(self, verdict: p.Verdict, run: str, outcome: str) -> str:
        """Slash the registered verifier whose audit or rejection contradicts its run's committee decision
        (evidence: its signed verdict, once)."""
        if not self.settings.verifier_slash_bps:
            return ""
        self.rt.log.warning(
            "verifier.contradicted", run=run, verifier=verdict.verifier_id, accepted=verdict.accepted, decided=outcome
        )
        return await self._take(
            "verifier",
            lambda: self.chain.verifier_of_key(verdict.verifier_key),
            domain.verdict_evidence(verdict),
            self.settings.verifier_slash_bps,
            verdict.job_id,
        )

    async def _take(
        self, role: str, staker_of: Callable[[], str | None], evidence: bytes, bps: int, job_id: str
    ) -> str:
        """Slash `bps` of the bonded stake of the staker `staker_of` names, for `evidence` (once)."""

        def slash() -> str:
            staker = staker_of()
            if not staker:
                return ""  # not staked: nothing to take
            if self.chain.evidence_used(evidence):
                return f"{role} {staker} slashed (evidence 0x{evidence.hex()})"
            record = self.chain.node(staker)
            amount = domain.slash_amount(record.stake, record.unbonding, bps)
            if amount == 0:
                return ""
            info = self.chain.slash(staker, amount, evidence)
            self.rt.log.warning(
                f"{role}.slashed",
                job_id=job_id,
                staker=staker,
                amount=str(amount),
                evidence=evidence.hex(),
                tx=info.tx_hash,
            )
            return f"{role} {staker} slashed {amount} wei (evidence 0x{evidence.hex()}, tx {info.tx_hash})"

        try:
            return await asyncio.to_thread(slash)
        except ChainError as exc:  # e.g. this settler lacks the slasher role: the refund still goes ahead
            self.rt.log.warning(f"{role}.slash_failed", job_id=job_id, error=str(exc)[:300])
            return ""

    def _fault(self, point: str) -> None:
        """Crash here if LORANET_FAULT_POINT names this point (crash-recovery tests only)."""
        if self.settings.fault_point == point:
            self._fault_passes += 1
            if self._fault_passes > self.settings.fault_after:
                self.rt.log.warning("fault.injected", point=point)
                os._exit(137)

    async def _commit_settles(self, jobs: list[SettleJob], seq: int = 0) -> dict[str, p.Receipt | Exception]:
        seq = seq or await asyncio.to_thread(self.chain.last_seq) + 1
        await self.committed.put(
            PendingCommit(seq=seq, settles=tuple(jobs), clients=self._clients_of([j.job_id.hex() for j in jobs]))
        )
        self._fault("before_send")
        try:
            tx_hash = await asyncio.to_thread(self.chain.send_settle_batch, seq, jobs)
            self._fault("after_send")
            batch = await asyncio.to_thread(self.chain.settle_receipt, tx_hash, seq, jobs)
        except (ChainError, BatchTooLarge):
            await self.committed.clear()  # reverted: nothing of this commit is on chain
            raise
        self._fault("after_receipt")
        self.rt.log.info("epoch.settled", epoch=batch.seq, jobs=len(jobs), gas=batch.gas_used, tx=batch.tx_hash)
        out: dict[str, p.Receipt | Exception] = dict(await self._publish_settled(batch, jobs))
        self._fault("after_publish")
        await self.committed.clear()
        return out

    async def _commit_refunds(self, refunds: list[tuple[str, str]]) -> dict[str, p.Receipt | Exception]:
        await self.committed.put(
            PendingCommit(refunds=tuple(refunds), clients=self._clients_of([job_id for job_id, _ in refunds]))
        )
        self._fault("before_send")
        try:
            info = await asyncio.to_thread(self.chain.refund, [job_id for job_id, _ in refunds])
        except ChainError:
            await self.committed.clear()
            raise
        self._fault("after_send")
        self._fault("after_receipt")
        out: dict[str, p.Receipt | Exception] = dict(
            await self._publish_refunded([(job_id, reason, info) for job_id, reason in refunds])
        )
        self._fault("after_publish")
        await self.committed.clear()
        return out

    # -- receipts ----------------------------------------------------------

    def _clients_of(self, job_ids: list[str]) -> dict[str, str]:
        """What the journal keeps so a restart can still name each receipt's events subject."""
        return {j: self._clients[j].hex() for j in job_ids if j in self._clients}

    def _remember_client(self, job_id: str, client_key: bytes) -> None:
        self._clients[job_id] = client_key
        self._clients.move_to_end(job_id)
        while len(self._clients) > _RECENT:
            self._clients.popitem(last=False)

    async def _client_key(self, job_id: str) -> bytes:
        """The job's client key: from its verdict or release, else from the subject of its last event."""
        key = self._clients.get(job_id)
        if key is not None:
            return key
        try:
            msg = await self.rt.js.get_last_msg("EVENTS", p.job_events_by_id(job_id))
        except NotFoundError:
            raise ValueError(f"job {job_id}: no event names its client, so its receipt has no events subject") from None
        key = bytes.fromhex(p.parse_job_events(msg.subject or "")[0])
        self._remember_client(job_id, key)
        return key

    async def _receipt_on_stream(self, job_id: str) -> p.Receipt | None:
        try:
            msg = await self.rt.js.get_last_msg("RECEIPTS", p.receipts(job_id))
        except NotFoundError:
            return None
        return codec.decode(p.Receipt, msg.data or b"")

    async def _publish(self, receipt: p.Receipt, reason: str = "", skip_existing: bool = False) -> p.Receipt:
        if skip_existing:
            existing = await self._receipt_on_stream(receipt.job_id)
            if existing is not None:
                return existing
        # The event first: a receipt on the stream then implies its event was recorded too.
        await self.rt.emit(
            receipt.job_id,
            p.Stage(receipt.status),
            body=receipt,
            reason=reason,
            client_key=await self._client_key(receipt.job_id),
        )
        await self.rt.publish(p.receipts(receipt.job_id), receipt, msg_id=f"{receipt.job_id}:receipt")
        return receipt

    async def _publish_settled(
        self, batch: BatchReceipt, jobs: Sequence[SettleJob], skip_existing: bool = False
    ) -> dict[str, p.Receipt]:
        now = time.time()
        receipts = [
            p.Receipt(
                job_id=job.job_id.hex(),
                status="settled",
                fee=job.fee,
                payouts=domain.payouts(job, self.treasury),
                epoch=batch.seq,
                tx_hash=batch.tx_hash.lower(),
                block=batch.block_number,
                settled_at=now,
            )
            for job in jobs
        ]
        published = await asyncio.gather(*(self._publish(r, skip_existing=skip_existing) for r in receipts))
        return {r.job_id: r for r in published}

    async def _publish_refunded(
        self, refunds: Sequence[tuple[str, str, TxInfo]], skip_existing: bool = False
    ) -> dict[str, p.Receipt]:
        now = time.time()
        receipts = [
            (
                p.Receipt(
                    job_id=job_id,
                    status="refunded",
                    fee=0,
                    payouts=[],
                    epoch=0,
                    tx_hash=info.tx_hash.lower(),
                    block=info.block_number,
                    settled_at=now,
                ),
                reason,
            )
            for job_id, reason, info in refunds
        ]
        published = await asyncio.gather(*(self._publish(r, reason, skip_existing) for r, reason in receipts))
        return {r.job_id: r for r in published}

    async def _existing_receipt(self, job_id: str, state: str) -> p.Receipt | None:
        """The receipt of a job already final on chain, published now if a crash lost it."""
        receipt = await self._receipt_on_stream(job_id)
        if receipt is not None:
            return receipt
        if state == "refunded":
            info = await asyncio.to_thread(self.chain.find_refund, job_id)
            if info is not None:
                published = await self._publish_refunded([(job_id, "refunded on chain before a restart", info)])
                return published[job_id]
        # Settled with no receipt: the journal covers our own batches, so another settler did it.
        self.rt.log.error("receipt.missing", job_id=job_id, state=state)
        return None

    # -- crash recovery ----------------------------------------------------

    async def recover(self) -> None:
        """Reconcile the journal's pending commit with the chain (at start, before any verdict)."""
        pending = await self.committed.get()
        if pending is None:
            return
        self.rt.log.warning(
            "journal.recovering", seq=pending.seq, settles=len(pending.settles), refunds=len(pending.refunds)
        )
        for job_id, client_id in pending.clients.items():
            self._remember_client(job_id, bytes.fromhex(client_id))
        if pending.settles:
            await self._recover_settles(pending)
        if pending.refunds:
            await self._recover_refunds(pending)
        await self.committed.clear()

    async def _recover_settles(self, pending: PendingCommit) -> None:
        jobs = list(pending.settles)
        last = await asyncio.to_thread(self.chain.last_seq)
        if last >= pending.seq:
            batch = await asyncio.to_thread(self.chain.find_batch, pending.seq, jobs)
            if batch is not None:  # mined: only its receipts are missing
                self.rt.log.info("journal.batch_mined", epoch=pending.seq, tx=batch.tx_hash)
                await self._publish_settled(batch, jobs, skip_existing=True)
                return
        states = await asyncio.to_thread(self.chain.job_states, [j.job_id for j in jobs])
        todo = [j for j, s in zip(jobs, states) if s not in domain.FINAL_STATES]
        if len(todo) != len(jobs):
            self.rt.log.error("journal.batch_partly_final", epoch=pending.seq, final=len(jobs) - len(todo))
        if not todo:
            return
        # Not mined: send the same batch again, under the same seq when it is still next.
        self.rt.log.info("journal.batch_resent", epoch=pending.seq, jobs=len(todo))
        try:
            await self._commit_settles(
                todo, seq=pending.seq if last + 1 == pending.seq and len(todo) == len(jobs) else 0
            )
        except ChainError as exc:
            # Left to the verdicts' redelivery, which decides these jobs afresh.
            self.rt.log.warning("journal.resend_refused", epoch=pending.seq, error=str(exc)[:300])

    async def _recover_refunds(self, pending: PendingCommit) -> None:
        states = await asyncio.to_thread(self.chain.job_states, [job_id for job_id, _ in pending.refunds])
        todo = [(j, r) for (j, r), s in zip(pending.refunds, states) if s not in domain.FINAL_STATES]
        done = []
        for (job_id, reason), state in zip(pending.refunds, states):
            if state == "refunded":
                info = await asyncio.to_thread(self.chain.find_refund, job_id)
                if info is not None:
                    done.append((job_id, reason, info))
        if done:
            await self._publish_refunded(done, skip_existing=True)
        if todo:
            try:
                await self._refund_or_split(todo)
            except ChainError as exc:
                self.rt.log.warning("journal.refund_refused", error=str(exc)[:300])
