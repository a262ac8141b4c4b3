"""Verifier handlers: results.<node_id> → cheap checks (+ audit) → signed verdict on verdicts.<job_id>."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from loranet import codec, confidential, topology
from loranet import protocol as p
from loranet.attribution import AttributionIndex, claim
from loranet.client import registry_values
from loranet.codec import DecodeError
from loranet.errors import LoranetError, Refused, RemoteError
from loranet.model.content import ContentHashMismatch
from loranet.runtime import Delivery, Pull, Runtime
from loranet.signing import Identity, SignatureInvalid, sign

from . import domain
from .engine import AuditEngine
from .settings import VerifierSettings

ATTRIBUTION_INDEXES_KEPT = 32  # adapters' attribution indexes held in memory


def load_identity(settings: VerifierSettings) -> Identity:
    """The verifier's Ed25519 identity from its key file, created (mode 0600) on first start."""
    return Identity.load_or_create(settings.key_file or Path(settings.state_dir) / f"{settings.verifier_id}.key")


class NotInCommittee(LoranetError):
    """A confidential result this verifier cannot open: handed back (nak) for a committee member; after
    max_deliver the runtime dead-letters it with this reason."""


class NodeKeys:
    """Registered node keys: the live heartbeat in KV `nodes`, else the last one seen (bounded cache)."""

    def __init__(self, rt: Runtime, capacity: int, fresh_s: float = 1.0) -> None:
        self.rt = rt
        self.capacity = capacity
        self.fresh_s = fresh_s
        # node_id -> (key, address, read at, dtype)
        self._seen: OrderedDict[str, tuple[bytes, str, float, str]] = OrderedDict()

    def remember(self, hb: p.NodeHeartbeat) -> None:
        key = domain.heartbeat_key(hb, hb.node_id)
        self._seen[hb.node_id] = (key, hb.payout_address, time.monotonic(), hb.dtype)
        self._seen.move_to_end(hb.node_id)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def address(self, node_id: str) -> str | None:
        cached = self._seen.get(node_id)
        return cached[1] if cached is not None else None

    def dtype(self, node_id: str) -> str:
        cached = self._seen.get(node_id)
        return cached[3] if cached is not None else ""

    async def lookup(self, node_id: str) -> tuple[bytes | None, str | None]:
        cached = self._seen.get(node_id)
        if cached is not None and time.monotonic() - cached[2] < self.fresh_s:
            return cached[0], cached[1]
        kv = await self.rt.js.key_value(p.NODES_BUCKET)
        try:
            entry = await kv.get(node_id)
            self.remember(codec.decode(p.NodeHeartbeat, entry.value or b""))
        except KeyNotFoundError:
            pass  # expired or never registered: fall back to what was seen
        except (DecodeError, domain.ResultForged) as exc:
            self.rt.log.warning("heartbeat.invalid", node_id=node_id, error=str(exc)[:300])
        cached = self._seen.get(node_id)
        return (cached[0], cached[1]) if cached is not None else (None, None)


class SchedulerKeys:
    """Announced scheduler keys (KV `schedulers`, key = the public key in hex), remembered once seen."""

    def __init__(self, rt: Runtime, retry_s: float = 1.0) -> None:
        self.rt = rt
        self.retry_s = retry_s
        self._known: set[bytes] = set()
        self._missed: dict[bytes, float] = {}

    def remember(self, key: bytes) -> None:
        """Trust a scheduler key seen announced elsewhere (an in-process verifier)."""
        self._known.add(key)

    async def known(self, key: bytes) -> bool:
        if key in self._known:
            return True
        if time.monotonic() - self._missed.get(key, -self.retry_s) < self.retry_s:
            return False
        try:
            kv = await self.rt.js.key_value(p.SCHEDULERS_BUCKET)
            entry = await kv.get(key.hex())
            announced = codec.decode(p.SchedulerAnnouncement, entry.value or b"")
            announced.verify()
            if announced.scheduler_key == key:
                self._known.add(key)
                return True
        except (BucketNotFoundError, KeyNotFoundError, DecodeError, SignatureInvalid) as exc:
            self.rt.log.info("scheduler_key.unknown", key=key.hex()[:16], why=type(exc).__name__)
        if len(self._missed) > 1024:
            self._missed.clear()
        self._missed[key] = time.monotonic()
        return False


class VerifierService:
    def __init__(self, rt: Runtime, settings: VerifierSettings, engine: AuditEngine, identity: Identity) -> None:
        self.rt = rt
        self.settings = settings
        self.engine = engine
        self.identity = identity
        self.verifier_id = settings.verifier_id
        self.address = settings.verifier_address or domain.devnet_address(settings.verifier_id)
        self.keys = NodeKeys(rt, settings.node_key_cache)
        self.schedulers = SchedulerKeys(rt)
        self.replay = domain.ReplayGuard(settings.replay_window)
        self.policy = domain.AuditPolicy(
            settings.audit_new_node_jobs, settings.audit_after_failure_jobs, settings.audit_clean_rate
        )
        self.records: dict[str, domain.NodeRecord] = {}
        self._adapter_locks: dict[str, asyncio.Lock] = {}
        self._manifests: dict[str, p.AdapterManifest] = {}  # adapter id → its manifest (immutable once stored)
        self._indexes: dict[str, AttributionIndex] = {}  # attribution index id → the index, oldest first
        self._inflight: set[tuple[str, int]] = (
            set()
        )  # runs (job id, attempt) being judged: a duplicate delivered meanwhile is skipped
        self._audited_for_committee: OrderedDict[tuple[str, int], None] = OrderedDict()

    def routes(self) -> Sequence[Pull]:
        return [
            Pull("results", p.VERIFIER_RESULTS, self.on_result, slots=self.settings.slots),
            Pull("audits", p.verifier_audits(self.verifier_id), self.on_audit, slots=self.settings.slots),
        ]

    async def ensure_adapter(self, adapter_id: str) -> None:
        if not adapter_id or self.engine.has_adapter(adapter_id):
            return
        lock = self._adapter_locks.setdefault(adapter_id, asyncio.Lock())
        async with lock:
            if self.engine.has_adapter(adapter_id):
                return
            blob = await self.rt.request(p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=adapter_id), timeout=30)
            await asyncio.to_thread(self.engine.install_adapter, adapter_id, blob.config, blob.weights)
            self.rt.log.info("adapter.loaded", adapter_id=adapter_id)

    async def judge(
        self, result: p.InferenceResult, subject: str, committee: str = ""
    ) -> tuple[list[p.Check], bool] | None:
        """Checks for one result and whether it was audited; None for a replay (already verdicted).
        `committee`: the result comes from settlement as a drawn member's audit (always audited, judged
        again even if this verifier verdicted the run before: its first verdict may have been a cheap one).

        Raises Refused for a result that cannot be judged (forged, unknown node, another model)."""
        key, _ = await self.keys.lookup(result.node_id)
        try:
            domain.authenticate(result, subject if not committee else p.results(result.node_id), key)
        except domain.ResultForged as exc:
            raise Refused(f"forged result: {exc}") from None
        if self.settings.require_assignment:
            known = result.assignment is not None and await self.schedulers.known(result.assignment.scheduler_key)
            domain.check_assignment(result, known)  # NotAssigned (a Refused): dead-lettered, no verdict
        run = domain.run_key(result)
        seen = run in self._audited_for_committee if committee else self.replay.seen_job(*run)
        if seen or run in self._inflight:
            self.rt.log.info(
                "result.replayed", job_id=result.job_id, node_id=result.node_id, subject=subject, attempt=result.attempt
            )
            return None
        self._inflight.add(run)  # released by on_result (or by the caller of judge) when done
        try:
            return await self._checks(result, committee)
        except BaseException:
            self._inflight.discard(run)
            raise

    async def _checks(self, result: p.InferenceResult, committee: str = "") -> tuple[list[p.Check], bool]:
        try:
            domain.served_model(result, self.engine.model_id)
        except domain.NotOurs as exc:
            raise Refused(str(exc)) from None
        # Confidential job: every check and the audit run on the plaintext view (never published).
        result, prompt, sealing = self.unseal(result)
        address = self.keys.address(result.node_id)
        checks = domain.cheap_checks(result, self.engine.model_id, self.engine.tokenizer, address, prompt)
        if sealing is not None:
            checks.append(sealing)
        other = self.replay.seq_reused(result)
        checks.append(
            domain.check(
                "node_seq", other is None, f"seq {result.node_seq}" + (f" already used by job {other}" if other else "")
            )
        )
        record = self.records.setdefault(result.node_id, domain.NodeRecord(result.node_id))
        record.dtype = self.keys.dtype(result.node_id)
        audit, why = domain.should_audit(record, result.job_id, self.policy, result.attempt)
        if committee:
            audit, why = True, committee
        cheap_ok = all(c.ok for c in checks)
        audited = False
        if audit and cheap_ok:
            try:
                await self.ensure_adapter(result.adapter_id)
            except RemoteError as exc:
                if exc.code != "not_found":
                    raise  # datastore trouble: retried by redelivery
                checks.append(domain.check("adapter_available", False, f"adapter {result.adapter_id}: {exc.message}"))
            except ContentHashMismatch as exc:
                raise RuntimeError(f"datastore served a corrupt adapter blob: {exc}") from None
            else:
                ids = [*result.prompt_tokens, *result.output_tokens]
                hidden, logits = await asyncio.to_thread(self.engine.prefill, ids, result.adapter_id)
                checks.extend(domain.audit_checks(result, hidden, logits))
                audited = True
                was = record.flagged
                if domain.observe_audit(record, result, hidden, logits) and not was:
                    self.rt.log.warning("node.flagged", node_id=result.node_id, why=record.flagged)
                    flag = domain.node_flag(record, result.node_key, self.verifier_id, self.identity, self.address)
                    # once per node and verifier: settlement slashes the node when enough verifiers agree
                    await self.rt.publish(
                        p.flags(result.node_id), flag, msg_id=f"flag:{result.node_key.hex()}:{self.verifier_id}"
                    )
        checks.append(
            domain.check(
                "audit_policy",
                True,
                f"audited={audited}: {why}" + ("" if cheap_ok or not audit else "; skipped, cheap checks failed"),
            )
        )
        return checks, audited

    def unseal(self, result: p.InferenceResult) -> tuple[p.InferenceResult, str | None, p.Check | None]:
        """(plaintext view, opened prompt, `sealing` check) of a confidential result; (result, None, None) otherwise."""
        job = result.request
        if not job.confidential:
            return result, None, None
        if self.identity.public not in confidential.committee(job, result.node_key):
            raise NotInCommittee(
                f"confidential job {result.job_id}: verifier {self.verifier_id} (key "
                f"{self.identity.key_id}) is not in the committee its client sealed it to"
            )
        try:
            prompt = confidential.open_prompt(job, self.identity)
        except confidential.ConfidentialError as exc:  # the client's doing, not the node's: no verdict
            raise Refused(
                f"confidential job {result.job_id}: the sealed prompt does not open for this verifier: {exc}"
            ) from None
        try:
            out = confidential.open_output(result, self.identity)
        except confidential.ConfidentialError as exc:
            return result, prompt, domain.check("sealing", False, f"sealed output: {exc}")
        view = confidential.view_of(result, out)  # token ids, text and the fingerprint chunks, opened
        problems = confidential.sealing_problems(result, out)
        members = len(confidential.committee(job, result.node_key))
        return (
            view,
            prompt,
            domain.check(
                "sealing", not problems, "; ".join(problems) or f"output sealed to the client and {members} verifiers"
            ),
        )

    def settle(self, result: p.InferenceResult, checks: list[p.Check], audited: bool, accepted: bool) -> None:
        """Bookkeeping after a verdict: node record, replay memory, in-flight release."""
        record = self.records.setdefault(result.node_id, domain.NodeRecord(result.node_id))
        domain.record_outcome(record, audited, accepted, checks, self.policy, time.time())
        self.replay.remember(result)
        self._inflight.discard(domain.run_key(result))

    async def on_result(self, result: p.InferenceResult, delivery: Delivery) -> None:
        judged = await self.judge(result, delivery.subject)
        if judged is None:
            return
        checks, audited = judged
        try:
            await self._publish(result, checks, audited)
        finally:
            self._inflight.discard(domain.run_key(result))

    async def on_audit(self, request: p.AuditRequest, delivery: Delivery) -> None:
        """Audit a result as a member of the committee settlement drew for its run."""
        if request.verifier_id != self.verifier_id or self.verifier_id not in request.committee:
            raise Refused(f"audit request for {request.verifier_id}, delivered to {self.verifier_id}")
        result = request.result
        if (request.job_id, request.attempt) != (result.job_id, result.attempt):
            raise Refused("audit request and its result name different runs")
        why = f"committee member ({request.needed} of {len(request.committee)}: {', '.join(request.committee)})"
        judged = await self.judge(result, delivery.subject, committee=why)
        if judged is None:
            return
        checks, audited = judged
        run = domain.run_key(result)
        try:
            await self._publish(result, checks, audited, committee=True)
            self._audited_for_committee[run] = None
            while len(self._audited_for_committee) > self.settings.replay_window:
                self._audited_for_committee.popitem(last=False)
        finally:
            self._inflight.discard(run)

    async def attribution_of(self, result: p.InferenceResult) -> p.Attribution | None:
        """Which training records the answer reproduces, when its adapter has an attribution index; None
        otherwise, or when the index cannot be had (the job then settles by the manifest's weights)."""
        adapter_id = result.request.adapter_id
        if not adapter_id or result.sealed_output is not None:  # a confidential answer stays sealed
            return None
        try:
            manifest = self._manifests.get(adapter_id)
            if manifest is None:
                manifest = await self.rt.request(p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=adapter_id), timeout=10)
                self._manifests[adapter_id] = manifest
            index_id = manifest.attribution_index
            if not index_id:
                return None
            index = self._indexes.get(index_id)
            if index is None:
                blob = await self.rt.request(
                    p.DATASTORE_ATTRIBUTION_GET, p.AttributionGet(index_id=index_id), timeout=30
                )
                index = await asyncio.to_thread(AttributionIndex.from_bytes, blob.data, index_id)
                self._indexes[index_id] = index
                while len(self._indexes) > ATTRIBUTION_INDEXES_KEPT:
                    self._indexes.pop(next(iter(self._indexes)))
            return await asyncio.to_thread(claim, index, index_id, list(result.output_tokens))
        except Exception as exc:  # no datastore, a bad index, a timeout: attribution never fails a verdict
            self.rt.log.warning("attribution.failed", job_id=result.job_id, adapter_id=adapter_id, error=str(exc)[:300])
            return None

    async def _publish(
        self, result: p.InferenceResult, checks: list[p.Check], audited: bool, committee: bool = False
    ) -> None:
        attribution = await self.attribution_of(result) if all(c.ok for c in checks) else None
        verdict = domain.build_verdict(
            result, checks, audited, self.verifier_id, self.identity, self.address, attribution=attribution
        )
        suffix = f":{result.attempt}" if result.attempt else ""  # a re-run is verdicted again by the same verifier
        suffix += ":committee" if committee else ""  # a member's audit after its own first (cheap) verdict
        await self.rt.publish(p.verdicts(result.job_id), verdict, msg_id=f"{result.job_id}:{self.verifier_id}{suffix}")
        await self.rt.emit(
            result.job_id,
            p.Stage.VERDICT,
            body=verdict,
            node_id=result.node_id,
            dedup=self.verifier_id + (":committee" if committee else ""),
            reason="" if verdict.accepted else "failed: " + ",".join(c.name for c in checks if not c.ok),
            attempt=result.attempt,
        )
        if not (committee and self.replay.seen_job(*domain.run_key(result))):  # else its first verdict counted it
            self.settle(result, checks, audited, verdict.accepted)

    async def restore_records(self) -> int:
        """Read back this verifier's node records from the stats bucket (key <verifier_id>.<node_id>), so a
        restart keeps each node's running statistics and flag (a cheater gains nothing by waiting for one).
        Returns how many were restored."""
        await topology.ensure_bucket(self.rt.js, self.settings.stats_bucket, self.settings.js_replicas)
        names = {f.name for f in dataclasses.fields(domain.NodeRecord)}
        restored = 0
        for value in await registry_values(self.rt.js, self.settings.stats_bucket, f"{self.verifier_id}.>"):
            try:
                raw = json.loads(value or b"{}")
                record = domain.NodeRecord(**{k: v for k, v in raw.items() if k in names})
            except (ValueError, TypeError) as exc:
                self.rt.log.warning("stats.unreadable", error=str(exc)[:200])
                continue
            self.records[record.node_id] = record
            restored += 1
        return restored

    async def stats_loop(self) -> None:
        """Publish each node's record (JSON) to the stats KV bucket, key <verifier_id>.<node_id>."""
        kv = await topology.ensure_bucket(self.rt.js, self.settings.stats_bucket, self.settings.js_replicas)
        written: dict[str, dict] = {}
        while True:
            for node_id, record in list(self.records.items()):
                fields = dataclasses.asdict(record)
                if written.get(node_id) == fields:
                    continue
                body = fields | {"verifier_id": self.verifier_id, "at": time.time()}
                try:
                    await kv.put(f"{self.verifier_id}.{node_id}", json.dumps(body, sort_keys=True).encode())
                    written[node_id] = fields
                except Exception as exc:
                    self.rt.log.warning("stats.failed", node_id=node_id, error=repr(exc))
            await asyncio.sleep(self.settings.stats_interval_s)

    def announcement(self) -> p.VerifierAnnouncement:
        model_id = getattr(self.engine, "model_id", None)
        return sign(
            p.VerifierAnnouncement(
                verifier_id=self.verifier_id,
                verifier_key=self.identity.public,
                verifier_address=self.address,
                model_ids=[model_id] if model_id else [],
                at=time.time(),
            ),
            self.identity,
        )

    async def announce_loop(self) -> None:
        """Keep this verifier's signed key in KV `verifiers` (key: its id), where clients find the committee."""
        kv = await topology.ensure_bucket(
            self.rt.js, p.VERIFIERS_BUCKET, self.settings.js_replicas, ttl=self.settings.announce_ttl_s
        )
        key = re.sub(r"[^A-Za-z0-9_-]", "_", self.verifier_id)
        while True:
            try:
                await kv.put(key, codec.encode(self.announcement()))
            except Exception as exc:
                self.rt.log.warning("announce.failed", error=repr(exc))
            await asyncio.sleep(self.settings.announce_interval_s)
