"""Settlement logic with no I/O: verdict checks, quorum, fees and receipts."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from loranet import protocol as p
from loranet.errors import Refused
from loranet.signing import SignatureInvalid
from loranet.split import Price, job_fee, split_shares

from .packing import SettleJob


class VerdictRefused(Refused):
    """A verdict settlement must not act on (forged, inconsistent)."""


def check_verdict(verdict: p.Verdict) -> None:
    """The verdict and the result inside it are both signed by who they claim."""
    try:
        verdict.verify()
        verdict.result.verify()
    except SignatureInvalid as exc:
        raise VerdictRefused(str(exc)) from None
    if verdict.result.job_id != verdict.job_id or verdict.result.request.job_id != verdict.job_id:
        raise VerdictRefused("verdict, result and request name different jobs")
    if verdict.result.result_hash() != verdict.result_hash:
        raise VerdictRefused("result_hash does not match the result carried in the verdict")


def check_registered(signed: p.Verdict | p.NodeFlag, payout: str | None) -> None:
    """The verdict's (or flag's) key is an active registered verifier's (`payout`: its payout address,
    None: not registered) and it names that address."""
    what = "verdict" if isinstance(signed, p.Verdict) else "flag"
    if payout is None:
        raise VerdictRefused(
            f"verifier key {signed.verifier_key.hex()[:16]} is not an active verifier registered in the Registry"
        )
    if signed.verifier_address.lower() != payout.lower():
        raise VerdictRefused(f"{what} pays {signed.verifier_address}, the registered verifier's payout is {payout}")


def check_flag(flag: p.NodeFlag) -> None:
    """A node flag settlement may count: signed by its verifier, and a finding (figures past a threshold)."""
    try:
        flag.verify()
    except SignatureInvalid as exc:
        raise VerdictRefused(str(exc)) from None
    if not flag.reason or not flag.jobs:
        raise VerdictRefused("a flag names its reason and the audited jobs it rests on")


def flags_evidence(node_key: bytes, flags: list[p.NodeFlag]) -> bytes:
    """The 32-byte evidence id of slashing a node on its statistics: its key and the agreeing flags."""
    signatures = b"".join(sorted(f.signature for f in flags))
    return hashlib.sha256(b"loranet/node-flags/v1" + node_key + signatures).digest()


@dataclass(frozen=True)
class Candidate:
    """A verifier that may be drawn into a committee: announced, registered on chain, with its stake."""

    verifier_id: str
    key: bytes
    stake: int


class CommitteeUnavailable(Exception):
    """Too few eligible verifiers to draw a committee (the run waits, and is refunded at its deadline)."""


def draw_committee(candidates: list[Candidate], size: int, rng: random.Random) -> list[Candidate]:
    """`size` distinct verifiers drawn at random, each with probability in proportion to its stake
    (weighted sampling without replacement: the `size` largest u**(1/stake), u uniform in (0, 1))."""
    eligible = [c for c in candidates if c.stake > 0]
    if len(eligible) < size:
        raise CommitteeUnavailable(f"{len(eligible)} eligible verifiers (registered, staked, announced), {size} needed")
    biggest = max(c.stake for c in eligible)
    keyed = sorted(eligible, key=lambda c: (1.0 - rng.random()) ** (biggest / c.stake), reverse=True)
    return keyed[:size]


def counts(verdict: p.Verdict) -> bool:
    """Whether a verdict is evidence a committee counts: an audit, or a rejection (its failed checks)."""
    return verdict.audited or not verdict.accepted


@dataclass
class Quorum:
    """Verdicts gathered for one run of a job until `needed` verifiers agree.

    Without `members`, any `needed` distinct verifiers decide (the network's `verdict_quorum`). With
    them (a committee drawn for the run), only members' audits and rejections count, and the run is
    also decided, as a split, when every member has voted and neither side has `needed`.
    Acceptance counts per result (result_hash): verifiers accepting two different results for one job
    id do not add up to a quorum for either."""

    needed: int
    members: dict[str, bytes] | None = None  # verifier id → its key (None: no committee drawn)
    accepting: dict[str, p.Verdict] = field(default_factory=dict)
    rejecting: dict[str, p.Verdict] = field(default_factory=dict)
    agreed: list[p.Verdict] = field(default_factory=list)  # the accepting verdicts that made the quorum
    outside: dict[str, p.Verdict] = field(default_factory=dict)  # votes a committee does not count

    def member(self, verdict: p.Verdict) -> bool:
        return self.members is not None and self.members.get(verdict.verifier_id) == verdict.verifier_key

    def add(self, verdict: p.Verdict) -> str | None:
        """'settle', 'refund', 'split' or None (undecided) after counting `verdict`."""
        if self.members is not None and not (self.member(verdict) and counts(verdict)):
            self.outside[verdict.verifier_id] = verdict
            return self.decide()
        self.accepting.pop(verdict.verifier_id, None)
        self.rejecting.pop(verdict.verifier_id, None)
        (self.accepting if verdict.accepted else self.rejecting)[verdict.verifier_id] = verdict
        return self.decide()

    def decide(self) -> str | None:
        by_result: dict[str, list[p.Verdict]] = {}
        for v in self.accepting.values():
            by_result.setdefault(v.result_hash, []).append(v)
        for same in by_result.values():
            if len(same) >= self.needed:
                self.agreed = same
                return "settle"
        if len(self.rejecting) >= self.needed:
            return "refund"
        if self.members is not None and len(self.accepting) + len(self.rejecting) >= len(self.members):
            return "split"
        return None

    def votes(self) -> list[p.Verdict]:
        return [*self.accepting.values(), *self.rejecting.values(), *self.outside.values()]

    def seat(self, members: dict[str, bytes]) -> str | None:
        """Draw done: count the votes so far by the committee `members`; the decision, if they make one."""
        votes = self.votes()
        self.members, self.accepting, self.rejecting, self.outside = dict(members), {}, {}, {}
        for vote in votes:
            self.add(vote)
        return self.decide()

    def waiting_for(self) -> list[str]:
        """Members whose counted vote is still missing."""
        voted = {*self.accepting, *self.rejecting}
        return [m for m in (self.members or {}) if m not in voted]


def contradicting(votes: list[p.Verdict], outcome: str, result_hash: str) -> list[p.Verdict]:
    """The evidence-bearing verdicts (audits, rejections) that contradict a committee's outcome: an
    acceptance of a result the committee refused, or a rejection of the result it accepted."""
    if outcome == "settle":
        return [v for v in votes if not v.accepted and v.result_hash == result_hash]
    if outcome == "refund":
        return [v for v in votes if v.accepted and v.audited]
    return []


def verdict_evidence(verdict: p.Verdict) -> bytes:
    """The 32-byte evidence id of slashing a verifier for `verdict` (the Registry refuses it twice)."""
    return hashlib.sha256(b"loranet/verdict-evidence/v1" + verdict.signature).digest()


def fee_of(result: p.InferenceResult, price: Price) -> int:
    # token_counts: the clear counts of a confidential (sealed) result, checked by the verifiers
    return job_fee(*result.token_counts(), price, result.request.max_fee)


def data_shares(verdicts: list[p.Verdict], manifest: p.AdapterManifest) -> tuple[tuple[str, int], ...]:
    """Who the data share of this answer goes to: its attribution (the verifiers' signed claim over the
    adapter's own index) when it credits anyone, else the manifest's fallback weights."""
    for verdict in verdicts:
        att = verdict.attribution
        if (
            verdict.accepted
            and att is not None
            and att.contributors
            and manifest.attribution_index
            and att.index_id == manifest.attribution_index
        ):
            return tuple((c.address, c.bps) for c in att.contributors)
    return tuple((c.address, c.weight_bps) for c in manifest.contributors)


def settle_job(verdicts: list[p.Verdict], manifest: p.AdapterManifest | None, treasury: str, price: Price) -> SettleJob:
    """The on-chain job for accepted `verdicts` (all on one result)."""
    result = verdicts[0].result
    request = result.request
    contributors: tuple[tuple[str, int], ...]
    if manifest is None:  # base model only: developer and data shares go to the treasury
        developer, contributors = treasury, ()
    else:
        developer = manifest.owner_address
        contributors = data_shares(verdicts, manifest)
    return SettleJob(
        job_id=bytes.fromhex(request.job_id),
        client=request.client_address,
        fee=fee_of(result, price),
        max_fee=request.max_fee,
        node=result.node_address,
        developer=developer,
        verifiers=tuple(sorted({v.verifier_address for v in verdicts}))[:8],
        contributors=contributors,
    )


def payouts(job: SettleJob, treasury: str) -> list[p.Payout]:
    """Each party's amount for one job, labelled by role."""
    shares = split_shares(job.fee, [w for _, w in job.contributors], len(job.verifiers))
    out = [
        p.Payout(party="node", address=job.node, amount=shares.node),
        p.Payout(party="developer", address=job.developer, amount=shares.developer),
    ]
    out += [
        p.Payout(party="contributor", address=a, amount=x) for (a, _), x in zip(job.contributors, shares.contributors)
    ]
    out += [p.Payout(party="verifier", address=a, amount=x) for a, x in zip(job.verifiers, shares.verifiers)]
    out.append(p.Payout(party="treasury", address=treasury, amount=shares.treasury))
    return out


@dataclass(frozen=True)
class Decision:
    """One decided job on its way into an epoch: `settle` it, or refund it (settle is None) for `reason`."""

    job_id: str
    settle: SettleJob | None = None
    reason: str = ""
    # A rejected result's signer and the result's hash: what slashing needs (see Settlement._slash).
    node_key: bytes = b""
    evidence: bytes = b""


def slash_amount(stake: int, unbonding: int, slash_bps: int) -> int:
    """What one rejected result costs its node: slash_bps of everything it has bonded."""
    return (stake + unbonding) * slash_bps // 10_000


FINAL_STATES = ("settled", "refunded")


def plan_epoch(
    decisions: list[Decision], states: list[str], available: dict[str, int]
) -> tuple[list[SettleJob], list[tuple[str, str]], list[Decision]]:
    """Split an epoch by the chain's view of it: (jobs to settle, (job_id, reason) to refund,
    decisions already final on chain). `states` are the jobs' on-chain states in order;
    `available` each client's unreserved escrow. A job whose client cannot cover it after the
    epoch's earlier jobs is refunded instead of reverting the whole batch; a reserved job is
    covered by its own reservation."""
    settles: list[SettleJob] = []
    refunds: list[tuple[str, str]] = []
    final: list[Decision] = []
    left = dict(available)
    for decision, state in zip(decisions, states, strict=True):
        if state in FINAL_STATES:
            final.append(decision)
        elif decision.settle is None:
            refunds.append((decision.job_id, decision.reason))
        elif state == "reserved":
            settles.append(decision.settle)
        else:
            job = decision.settle
            have = left.get(job.client, 0)
            if have >= job.fee:
                left[job.client] = have - job.fee
                settles.append(job)
            else:
                refunds.append((decision.job_id, f"client escrow {have} below fee {job.fee}"))
    return settles, refunds, final
