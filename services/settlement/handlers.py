"""Settlement handlers: verdicts.<job_id> → epoch batch on chain → settlement.receipts.<job_id>."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence

from loranet import protocol as p, topology
from loranet.batching import WindowBatcher
from loranet.runtime import Delivery, Endpoint, Pull, Reject, RemoteError, Runtime, ServiceError
from loranet.split import Price

from . import domain
from .chain import BatchReceipt, Chain, ChainError
from .packing import SettleJob
from .settings import SettlementSettings


class Settlement:
    def __init__(self, rt: Runtime, settings: SettlementSettings, chain: Chain) -> None:
        self.rt = rt
        self.settings = settings
        self.chain = chain
        self.treasury = chain.treasury()
        self.price = Price(settings.price_per_prompt_token, settings.price_per_output_token, settings.price_per_job)
        self.epochs: WindowBatcher[str, SettleJob, BatchReceipt] = WindowBatcher(
            self._settle_epoch, settings.epoch_max_s, settings.epoch_max_jobs)
        self._quorums: OrderedDict[str, domain.Quorum] = OrderedDict()
        self._deciding: set[str] = set()  # jobs whose settle/refund is under way in this process

    def routes(self) -> Sequence[Pull | Endpoint]:
        routes: list[Pull | Endpoint] = [
            Pull("verdicts", topology.SETTLEMENT, p.Verdict, self.on_verdict,
                 slots=max(self.settings.epoch_max_jobs * 2, 8), max_bytes=p.MAX_BYTES[p.VERDICTS_ALL]),
            Endpoint("balance", p.SETTLEMENT_BALANCE, p.BalanceGet, self.balance),
        ]
        if self.settings.faucet:
            routes.append(Endpoint("faucet", p.SETTLEMENT_FAUCET, p.Faucet, self.faucet))
        return routes

    # -- request-reply -----------------------------------------------------

    async def balance(self, req: p.BalanceGet) -> p.Balance:
        def read() -> p.Balance:
            node = self.chain.node(req.address)
            return p.Balance(address=req.address, token=self.chain.balance_of(req.address),
                             escrow=self.chain.available_of(req.address), credit=self.chain.credit_of(req.address),
                             stake=node.stake)
        try:
            return await asyncio.to_thread(read)
        except ChainError as exc:
            raise ServiceError("unavailable", str(exc)) from None

    async def faucet(self, req: p.Faucet) -> p.Balance:
        if req.escrow > req.amount:
            raise ServiceError("invalid", "escrow cannot exceed amount", "escrow")

        def give() -> None:
            if req.amount - req.escrow:
                self.chain.fund(req.address, req.amount - req.escrow)
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
        except domain.BadVerdict as exc:
            raise Reject(f"verdict refused: {exc}") from None
        job_id = verdict.job_id
        if job_id in self._deciding:
            return  # a duplicate delivery while this job is being paid; if that fails, its own message is retried
        state = await asyncio.to_thread(self.chain.job_state, job_id)
        if state in ("settled", "refunded"):
            return  # already final on chain: a redelivery or a late verdict
        quorum = self._quorums.setdefault(job_id, domain.Quorum(self.settings.verdict_quorum))
        while len(self._quorums) > 100_000:
            self._quorums.popitem(last=False)
        decision = quorum.add(verdict)
        if decision is None:
            return
        self._deciding.add(job_id)
        try:
            if decision == "refund":
                await self._refund(verdict)
            else:
                await self._settle(list(quorum.accepting.values()))
            self._quorums.pop(job_id, None)
        finally:
            self._deciding.discard(job_id)

    async def _manifest(self, adapter_id: str) -> p.AdapterManifest | None:
        if not adapter_id:
            return None
        try:
            return await self.rt.request(p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=adapter_id), p.AdapterManifest)
        except RemoteError as exc:
            raise RuntimeError(f"adapter manifest for {adapter_id} unavailable: {exc}") from None

    async def _settle(self, verdicts: list[p.Verdict]) -> None:
        request = verdicts[0].result.request
        manifest = await self._manifest(request.adapter_id)
        job = domain.settle_job(verdicts, manifest, self.treasury, self.price)
        available = await asyncio.to_thread(self.chain.available_of, job.client)
        if available < job.fee:
            await self._refund(verdicts[0], reason=f"client escrow {available} below fee {job.fee}")
            return
        try:
            receipt = await self.epochs.add("epoch", job)
        except ChainError as exc:
            await self._refund(verdicts[0], reason=f"settlement transaction refused: {exc}"[:1000])
            return
        out = p.Receipt(job_id=request.job_id, status="settled", fee=job.fee, payouts=domain.payouts(job, self.treasury),
                        epoch=receipt.seq, tx_hash=receipt.tx_hash.lower(), block=receipt.block_number,
                        settled_at=time.time())
        await self.rt.publish(p.receipts(request.job_id), out, msg_id=f"{request.job_id}:receipt")
        await self.rt.emit(request.job_id, "settled", body=out)

    async def _settle_epoch(self, key: str, jobs: list[SettleJob]) -> list[BatchReceipt | Exception]:
        def send(batch: list[SettleJob]) -> BatchReceipt:
            return self.chain.settle_batch(self.chain.last_seq() + 1, batch)
        try:
            receipt = await asyncio.to_thread(send, jobs)
        except ChainError as exc:
            if len(jobs) == 1:
                return [exc]
            # One job can revert the whole batch (say, a client's escrow ran out):
            # settle the rest one by one and refuse only the jobs that fail alone.
            self.rt.log.warning("epoch.reverted", jobs=len(jobs), error=str(exc)[:300])
            out: list[BatchReceipt | Exception] = []
            for job in jobs:
                try:
                    out.append(await asyncio.to_thread(send, [job]))
                except ChainError as single:
                    out.append(single)
            return out
        self.rt.log.info("epoch.settled", epoch=receipt.seq, jobs=len(jobs), gas=receipt.gas_used, tx=receipt.tx_hash)
        return [receipt] * len(jobs)

    async def _refund(self, verdict: p.Verdict, reason: str = "") -> None:
        job_id = verdict.job_id
        info = await asyncio.to_thread(self.chain.refund, [job_id])
        out = p.Receipt(job_id=job_id, status="refunded", fee=0, payouts=[], epoch=0, tx_hash=info.tx_hash.lower(),
                        block=info.block_number, settled_at=time.time())
        await self.rt.publish(p.receipts(job_id), out, msg_id=f"{job_id}:receipt")
        await self.rt.emit(job_id, "refunded", body=out,
                           reason=reason or "; ".join(c.name for c in verdict.checks if not c.ok)[:1000])
