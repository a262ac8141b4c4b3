"""Adversarial suite: every cheating node is caught, honest jobs never rejected.

The bulk runs in-process through `VerifierService.judge` (the NATS route's own function); test_service.py
covers the NATS path. Default sizes are small (the suite must stay fast on 2 cores); the issue's full
sizes (≥300 trials per attack, ≥1000 honest jobs) run with `-m slow` and in bench/verify_bench.py.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from attacks import ATTACKS, judge_once, local_verifier, random_job, run_attack

TRIALS = int(os.environ.get("LORANET_ATTACK_TRIALS", "20"))
HONEST = int(os.environ.get("LORANET_HONEST_JOBS", "50"))


@pytest.fixture(scope="module")
def verifier(engine, honest):
    return local_verifier(engine, [honest])


def _honest_runs(verifier, kit, n):
    failures = []
    for _ in range(n):
        result = kit.node.run(random_job(kit))
        out = judge_once(verifier, result)
        if out.detected:
            failures.append((result.job_id, out.how, [c for c in out.verdict_checks or [] if not c.ok]))
    print(f"honest: {n} jobs, {n - len(failures)} accepted, {len(failures)} false rejections")
    return failures


def _attack_runs(verifier, kit, name, n):
    missed = []
    caught: Counter[str] = Counter()  # how the attack was caught: dead-letter reason or failed checks
    for _ in range(n):
        out = run_attack(verifier, kit, name)
        if not out.detected:
            missed.append(out.how)
        else:
            caught[out.how[:60]] += 1
    print(
        f"{name}: {n} trials, {n - len(missed)} detected, {len(missed)} missed; caught by {dict(caught.most_common(6))}"
    )
    return missed


def test_honest_jobs_are_accepted(verifier, kit):
    assert _honest_runs(verifier, kit, HONEST) == []
    record = verifier.records[kit.node.node_id]
    assert not record.flagged and record.fp_excess_sum == 0 and record.off_choice_tokens == 0, record


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_detected(verifier, kit, attack):
    assert _attack_runs(verifier, kit, attack, TRIALS) == []


@pytest.mark.slow
def test_full_size_honest(verifier, kit):
    assert _honest_runs(verifier, kit, 1000) == []


@pytest.mark.slow
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_full_size_attack(verifier, kit, attack):
    assert _attack_runs(verifier, kit, attack, 300) == []


def test_a_node_serving_float16_weights_is_flagged_by_its_statistics_alone(engine, kit, honest, node_model, adapters):
    """Issue 18: float16 weights move the fingerprint by less than one job's limit (its jobs are accepted),
    but the node's running mean of fingerprint excess departs from honest nodes' (0): it is flagged and then
    audited at 100%. The honest node beside it, audited as often, is never flagged."""
    import copy

    import torch
    from attacks import HonestNode

    from loranet import protocol as p
    from services.verifier import domain

    cheap = copy.deepcopy(node_model)
    with torch.no_grad():
        for module in cheap.base.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.data = module.weight.data.half().float()
    node = HonestNode("node-fp16", cheap, {aid: name for name, _, aid in adapters})
    verifier = local_verifier(engine, [honest, node])
    outcomes = []
    for _ in range(4):
        outcomes.append(judge_once(verifier, node.run(random_job(kit))))
        judge_once(verifier, kit.node.run(random_job(kit)))
    record = verifier.records["node-fp16"]
    assert sum(not o.detected for o in outcomes) >= 1, [o.how for o in outcomes]  # per-job checks let it through
    assert record.flagged.startswith("fingerprint mean excess"), record
    audit, why = domain.should_audit(record, p.new_job_id(), verifier.policy)
    assert audit and why.startswith("flagged by its statistics")
    assert not verifier.records[kit.node.node_id].flagged
    # ... and says so once, signed, naming the node's key and the audited jobs the figures rest on: the
    # flag settlement slashes on when enough registered verifiers sent one (tests/settlement/test_committee.py)
    [(subject, flag)] = verifier.rt.published
    assert subject == p.flags("node-fp16") and isinstance(flag, p.NodeFlag)
    flag.verify()
    assert flag.node_key == node.identity.public and flag.reason == record.flagged and flag.fp_excess_mean > 0
    assert flag.jobs and set(flag.jobs) <= set(record.observed_jobs)
