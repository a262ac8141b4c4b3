"""Every verification threshold of the verifier, in one place.

Each value says how it was calibrated. The calibration run is
`bench/verify_bench.py --calibrate` (honest jobs recomputed under every
execution variation the network tolerates: batch of 1 vs a padded batch of
several prompts, torch threads 1 vs 2, attention "eager" vs "sdpa", merged
vs unmerged LoRA) plus the adversarial suite in tests/verifier. Figures
quoted are from the 2-core CPU development machine, default tiny model.

The worst honest figure and the best (closest to honest) attack figure are
both printed by the calibration; each threshold sits well inside the gap,
nearer the honest side by a safety factor, never tuned to an attack.
"""

from __future__ import annotations

# --- Activation fingerprint (loranet.fingerprint.ChunkScore), per chunk -----

# Fraction of the committed top-k indices found in the recomputed top-k.
# Honest worst across all variations: 1.000. Best (highest) attack figure
# per trial: wrong base 0.016, wrong adapter 0.33, no adapter 0.38, adapter
# x0.5 0.76 — but bf16 weights reach 0.992, so bf16 is caught by the value
# errors below, not by this bound. 0.90 tolerates a few top-k boundary flips
# on other hardware (TOPLOC uses a similar top-k intersection bound).
FP_MIN_INDEX_OVERLAP = 0.90

# Mean |recomputed - committed| at the committed indices, beyond the
# quantisation half-step, relative to the largest committed magnitude (hi).
# Honest worst: 0.0 (every error is inside the half-step). Lowest attack
# figure per trial (worst chunk): bf16 weights 2.8e-3, adapter x0.5 4.9e-2,
# no adapter 0.17, wrong adapter 0.27, wrong base 0.75. 2e-4 sits x14 below
# bf16 and far above honest fp32 noise.
FP_MAX_MEAN_EXCESS_REL = 2e-4

# Largest single |error| beyond the half quantisation step, relative to hi.
# Honest worst: 2.1e-7 (merged LoRA), 4.5e-8 (padded batch, 2 threads),
# 8.8e-9 (sdpa). Lowest attack figure: bf16 9.7e-3, adapter x0.5 0.25.
# 2e-3 is x10^4 over honest and x5 under bf16.
FP_MAX_EXCESS_REL = 2e-3

# --- Sampling replay (loranet.sampling.replay_margin) -----------------------

# Greedy: the node's token must be the argmax of the recomputed logits, or
# within this many logits of it (a near-tie that fp32 noise may flip).
# Honest minimum margin across all variations: +2.2e-3 (never negative: no
# near-tie was flipped); fp32 logit noise between variations is ~1e-6;
# edited tokens sit at -0.1 .. -10. 1e-3 is ~x1000 over the noise.
GREEDY_TIE_MARGIN = 1e-3

# Sampled: the node's token must win the seeded Gumbel race on recomputed
# logits (scaled by 1/temperature), or lose it by at most this much.
# Same noise analysis as greedy, divided by temperature >= 0.1 in our jobs;
# wrong seed / cheaper model lose by O(1) on most tokens.
REPLAY_MARGIN = 1e-3

# At most this many output tokens may be accepted only because of the
# tolerance (margin < 0 but above the tolerance). Honest runs: 0 seen.
# A cheater steering many tokens through near-ties is bounded by it.
MAX_NEAR_TIE_TOKENS = 2

# --- Termination -----------------------------------------------------------

# finish_reason "eos": EOS must win the replayed race at its step. An EOS
# that wins it (margin >= 0) is accepted whatever its probability: the seed
# is the client's, so it is what every honest node samples there (applying
# this floor to it rejected an honest T=1.3 job, p(eos)=6.4e-4, in the
# full-size adversarial run). An EOS that loses the race but within the
# near-tie tolerance above must in addition have softmax probability (at the
# job's temperature, 1.0 for greedy) of at least this floor — an EOS that won
# only by noise at a near-tie with probability < 1e-3 is not "likely".
EOS_MIN_PROB = 1e-3

# --- Audit policy ----------------------------------------------------------

# Every job of a node is audited until it has this many clean audits...
AUDIT_NEW_NODE_JOBS = 20
# ...and again for this many jobs after any failure.
AUDIT_AFTER_FAILURE_JOBS = 50
# Afterwards a deterministic fraction (hash of job id) is audited.
AUDIT_CLEAN_RATE = 0.25
