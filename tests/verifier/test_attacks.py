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
