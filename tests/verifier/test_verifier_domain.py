"""Pure verifier logic: audit policy, finish reasons, evidence, replay guard, verdict signing."""

from __future__ import annotations

import numpy as np
import pytest

from loranet import protocol as p
from loranet.model import EOS_ID, ByteTokenizer
from loranet.signing import Identity, sign, verify
from services.verifier import domain

BYTES = ByteTokenizer()


def test_audit_policy_new_node_then_rate_then_failure():
    policy = domain.AuditPolicy(new_node_jobs=3, after_failure_jobs=4, clean_rate=0.25)
    rec = domain.NodeRecord("n")
    ok = [domain.check("x", True)]
    for _ in range(3):
        assert domain.should_audit(rec, p.new_job_id(), policy)[0]
        domain.record_outcome(rec, True, True, ok, policy, 0.0)
    jobs = [p.new_job_id() for _ in range(2000)]
    chosen = [domain.should_audit(rec, j, policy)[0] for j in jobs]
    assert chosen == [domain.should_audit(rec, j, policy)[0] for j in jobs]  # reproducible from the job id
    assert 0.2 < sum(chosen) / len(chosen) < 0.3
    domain.record_outcome(rec, True, False, [domain.check("fingerprint", False)], policy, 1.0)
    assert rec.forced_audits_left == 4 and rec.extra == {"fingerprint": 1}
    for _ in range(4):
        assert domain.should_audit(rec, jobs[0], policy)[0]
        domain.record_outcome(rec, True, True, ok, policy, 2.0)
    assert rec.forced_audits_left == 0


def test_finish_reason_consistency(honest, client, base):
    r = honest.run(client.job(base[1], "", "Hello", 6))
    assert domain.finish_check(r, BYTES).ok
    if r.finish_reason == "length":
        toks = [*r.output_tokens[:-1], EOS_ID]
        bad = r.model_copy(update={"output_tokens": toks})  # EOS at the end but claims length
        assert not domain.finish_check(bad, BYTES).ok
        assert domain.finish_check(bad.model_copy(update={"finish_reason": "eos"}), BYTES).ok
        short = r.model_copy(update={"output_tokens": r.output_tokens[:-1]})
        assert not domain.finish_check(short, BYTES).ok  # "length" below max_tokens
        mid = r.model_copy(update={"output_tokens": [EOS_ID, *r.output_tokens[1:]], "finish_reason": "eos"})
        assert not domain.finish_check(mid, BYTES).ok  # tokens after EOS


def test_evidence_is_reported_absent_never_verified(honest, client, base):
    r = honest.run(client.job(base[1], "", "Hi", 4))
    c = domain.evidence_check(r)
    assert "tee: absent" in c.detail and "zk: absent" in c.detail
    r2 = r.model_copy(update={"evidence": [p.Evidence(kind="tee", data=b"quote")]})
    assert "tee: present, unverified" in domain.evidence_check(r2).detail


def test_authenticate_and_verdict(honest, client, base):
    r = honest.run(client.job(base[1], "", "Hi", 4))
    domain.authenticate(r, p.results(r.node_id), honest.identity.public)
    for subject, key in [
        (p.results("other"), honest.identity.public),
        (p.results(r.node_id), None),
        (p.results(r.node_id), Identity.generate().public),
    ]:
        with pytest.raises(domain.ResultForged):
            domain.authenticate(r, subject, key)
    with pytest.raises(domain.NotOurs):
        domain.served_model(r, "0" * 64)
    ident = Identity.generate()
    v = domain.build_verdict(r, [domain.check("a", True)], False, "verifier-x", ident, domain.devnet_address("v"))
    verify(v, ident.public)
    assert v.accepted and not v.audited and v.result_hash == r.result_hash()


def test_replay_guard_is_bounded(honest, client, base):
    guard = domain.ReplayGuard(4)
    rs = [honest.run(client.job(base[1], "", "Hi", 2)) for _ in range(6)]
    for r in rs:
        guard.remember(r)
    assert not guard.seen_job(rs[0].job_id) and guard.seen_job(rs[-1].job_id)
    reused = sign(rs[-1].model_copy(update={"job_id": p.new_job_id()}), honest.identity)
    assert guard.seq_reused(reused) == rs[-1].job_id


def _eos_case(honest, client, base, temperature: float, seed: int, d: float):
    """A result claiming EOS at step 2 and logits whose EOS row is `d` (in logit/T units) above the 258 other,
    equal logits: EOS's race margin is d + g_eos - max(g_other), p(eos) = 1 / (1 + 258 e^-d)."""
    import torch

    job = client.job(base[1], "", "Hi", 8, temperature=temperature, seed=seed)
    r = honest.run(client.job(base[1], "", "Hi", 2)).model_copy(
        update={"request": job, "output_tokens": [65, 66, EOS_ID], "finish_reason": "eos"}
    )
    logits = torch.zeros(len(r.prompt_tokens) + 3, 259, dtype=torch.float64)
    logits[len(r.prompt_tokens) - 1 + 2, EOS_ID] = d * (temperature or 1.0)
    return r, logits


def test_termination_accepts_an_improbable_eos_the_seeded_sampler_chose(honest, client, base):
    from loranet import thresholds
    from loranet.sampling import gumbel_noise

    def gap(seed):  # g_eos - max over the other tokens' Gumbel noise at step 2
        g = gumbel_noise(seed, 2, 259)
        return g[EOS_ID] - np.delete(g, EOS_ID).max()

    seed = next(s for s in range(100_000) if gap(s) > 2.0)  # EOS's noise leads by > 2
    # EOS wins the race by 0.05 with p(eos) ~ e^(0.05 - gap) / 258 < 1e-3: an honest sample, accepted.
    r, logits = _eos_case(honest, client, base, 1.3, seed, 0.05 - gap(seed))
    c = domain.termination_check(r, logits)
    assert c.ok, c.detail
    assert "sampler's choice" in c.detail
    # The same improbable EOS losing the race within the near-tie tolerance: rejected (floor applies).
    r, logits = _eos_case(honest, client, base, 1.3, seed, -gap(seed) - thresholds.REPLAY_MARGIN / 2)
    c = domain.termination_check(r, logits)
    assert not c.ok and "near-tie" in c.detail, c.detail
    # A likely EOS within the tolerance: accepted; the same EOS losing beyond it: rejected.
    seed = next(s for s in range(100_000) if gap(s) < -1.0)
    r, logits = _eos_case(honest, client, base, 1.3, seed, -gap(seed) - thresholds.REPLAY_MARGIN / 2)
    c = domain.termination_check(r, logits)
    assert c.ok and "near-tie" in c.detail, c.detail
    r, logits = _eos_case(honest, client, base, 1.3, seed, -gap(seed) - 10 * thresholds.REPLAY_MARGIN)
    assert not domain.termination_check(r, logits).ok
    # Greedy: EOS must be the argmax (or within GREEDY_TIE_MARGIN of it).
    for d, ok in [(0.5, True), (-thresholds.GREEDY_TIE_MARGIN / 2, True), (-2 * thresholds.GREEDY_TIE_MARGIN, False)]:
        r, logits = _eos_case(honest, client, base, 0.0, 0, d)
        assert domain.termination_check(r, logits).ok is ok, (d, domain.termination_check(r, logits).detail)


def test_a_rerun_is_a_new_run_for_the_replay_guard_and_always_audited():
    from tests import factories

    guard = domain.ReplayGuard(10)
    first = factories.result()
    guard.remember(first)
    rerun = first.model_copy(update={"attempt": 1, "node_id": "node-9", "node_seq": 7})
    assert guard.seen_job(first.job_id) and not guard.seen_job(rerun.job_id, rerun.attempt)
    assert domain.run_key(rerun) == (first.job_id, 1)
    guard.remember(rerun)
    assert guard.seen_job(rerun.job_id, 1)
    clean = domain.NodeRecord("node-9", clean_audits=10**6)
    policy = domain.AuditPolicy(new_node_jobs=0, after_failure_jobs=0, clean_rate=0.0)
    assert not domain.should_audit(clean, first.job_id, policy)[0]
    assert domain.should_audit(clean, first.job_id, policy, attempt=1)[0]


def test_proof_structure_parses_every_fingerprint_chunk(honest, client, base):
    """Each chunk must parse, commit min(128, numel) entries and cover its rows at one width; the audit
    scores an unparsable chunk as a failure, never an exception."""
    import math

    import torch

    from loranet.fingerprint import encode_chunk

    r = honest.run(client.job(base[1], "", "Hello there", 40))
    assert domain.proof_structure(r).ok
    chunks = list(r.fingerprint.chunks)
    rows = len(r.prompt_tokens)
    cases = {
        "truncated": chunks[1][:100],
        "fewer entries": encode_chunk(torch.randn(32, 128), k=16),
        "other version": b"\x01" + chunks[1][1:],
        "rows not a multiple": encode_chunk(torch.randn(rows * 128 + 1)),
    }
    for name, bad in cases.items():
        i = 0 if name == "rows not a multiple" else 1
        broken = r.model_copy(
            update={"fingerprint": r.fingerprint.model_copy(update={"chunks": [*chunks[:i], bad, *chunks[i + 1 :]]})}
        )
        c = domain.proof_structure(broken)
        assert not c.ok and f"malformed chunks [{i}]" in c.detail, (name, c.detail)
        hidden = torch.zeros(len(r.prompt_tokens) + len(r.output_tokens), 128)
        ok, overlap, mean_x, max_x = domain.fingerprint_figures(broken, hidden)[i]
        assert (ok, overlap, mean_x, max_x) == (False, 0.0, math.inf, math.inf), name
    wider = [encode_chunk(torch.randn(rows, 256)), *chunks[1:]]  # chunk 0 at width 256, the others at 128
    c = domain.proof_structure(r.model_copy(update={"fingerprint": r.fingerprint.model_copy(update={"chunks": wider})}))
    assert not c.ok and "hidden widths [128, 256]" in c.detail


def test_the_fingerprint_statistic_judges_a_node_by_the_precision_it_declares():
    """Issue 18: a fingerprint excess above honest float32 nodes' is a departure for a node that declares
    float32 (or nothing): it serves a lower precision than declared. A node that declares bfloat16 is not
    judged by the float32 calibration (none exists for it yet); its off-choice tokens still count."""
    from loranet import thresholds
    from services.verifier import domain

    def record(dtype: str, **figures) -> domain.NodeRecord:
        r = domain.NodeRecord("n", dtype=dtype)
        r.fp_chunks, r.fp_excess_sum = 6, 6 * 8.2e-5
        for name, value in figures.items():
            setattr(r, name, value)
        return r

    assert "lower precision than the float32 it declares" in domain.statistics_flag(record("float32"))
    assert "lower precision than the float32" in domain.statistics_flag(record(""))
    assert domain.statistics_flag(record("bfloat16")) == ""
    many = thresholds.NODE_OFF_CHOICE_FLAG
    assert "not the replayed choice" in domain.statistics_flag(record("bfloat16", off_choice_tokens=many))
