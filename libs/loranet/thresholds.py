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

Re-measured on the real model, SmolLM2-135M-Instruct (hidden 576, vocabulary
49,152, two trained adapters): `bench/verify_bench.py --calibrate --model
smollm2` (bench/results/cpu-2026-12-05/verify_calibrate_smollm2.log). 200
honest audits over the same node x verifier variations, plus the serving
engine's own variations (each job alone, or batched with 16 mixed-adapter
jobs; 1 or 2 threads; 20 jobs each): 0 rejected; worst overlap 1.000, worst
mean excess 0, worst max excess 1.1e-5 of hi (merged LoRA), replay margins
all >= +5e-4. Closest attacks over 20 trials: bf16 weights overlap 1.000 but
mean excess 1.76e-3 and max excess 7.1e-3; adapter x 0.5 overlap 0.70; no or
another adapter 0.57 / 0.38; a layer-dropped model 0.04. Every value below
keeps its gap on the real model, so none was changed. A node whose engine
runs bfloat16 is rejected like the bf16 attack (20 of 20): the protocol's
nodes compute in float32.
"""

from __future__ import annotations

# --- Activation fingerprint (loranet.fingerprint.ChunkScore), per chunk -----
#
# Figures from `bench/verify_bench.py --calibrate --full` (fingerprint version
# 2, 15-bit magnitudes: half-step 1.5e-5 of hi): 1,000 honest audits (4 node
# variations x 5 verifier variations x 50 jobs) and 50 trials of each close
# attack. "Worst-chunk" = the result's worst chunk; attack figures are the
# closest to honest over the trials.

# A verifier top-k index "matches" when |recomputed - committed| minus the
# half-step is at most this times hi; matched indices are judged by the error
# bounds below, unmatched ones count against the overlap. Honest worst-chunk
# overlap is 1.000 at every window tried (1e-3 .. 5e-2). bf16 weights:
# 0.953-0.984 at 1e-2, 0.969-0.992 at 2e-2 and the same at 5e-2 (no bf16 error
# lies between 2e-2 and 5e-2 of hi), so at 2e-2 a precision attack is matched
# and then judged by its errors. A value P gives at an index the node did not
# commit is garbage and lands in the window by chance: a wrong base model's
# worst chunk matches 0-7% of indices at 2e-2 (0-1.6% at 3e-3, 5-15% at 5e-2).
# Honest risk without FP_BOUNDARY_REL below: an index whose magnitude ties the
# k-th within the hardware's noise may flip in or out of the top-k; its garbage
# value would be matched with error beyond FP_MAX_EXCESS_REL (a rejection) with
# about that chance, a few percent per flip. No flip occurred in the 1,000
# honest audits; the boundary zone below takes such indices out.
FP_MATCH_REL = 2e-2

# The residual risk above, removed: the verifier's top-k indices whose
# magnitude is within this much (times hi) of its own k-th magnitude are left
# out of the overlap and error figures (the k-th itself always is). A flip
# needs two magnitudes within the hardware's noise of the boundary: honest
# noise is <= 6.6e-7 of hi (max excess above), so 1e-4 is x150 over it. With
# k = 128 of 32 x 2048 roughly normal values, about 0.2 indices besides the
# k-th fall in that zone on average: an attacker gains nothing by it.
FP_BOUNDARY_REL = 1e-4

# Fraction of the verifier's own top-k indices that match (see above).
# Honest worst: 1.000. Highest attack figure: adapter x0.5 0.305, no adapter
# 0.227, wrong adapter 0.109, wrong base 0.070 (mostly chance matches of
# garbage) — bf16 weights reach 0.992 by design and are caught by the value
# errors below. 0.90 tolerates a dozen top-k boundary flips on other hardware
# (TOPLOC uses a similar top-k intersection bound).
FP_MIN_INDEX_OVERLAP = 0.90

# Mean |recomputed - committed| over the matched indices, beyond the
# quantisation half-step, relative to the largest committed magnitude (hi).
# Honest worst: 0.0 (every honest error is inside the 15-bit half-step).
# Lowest attack figure (worst chunk): bf16 weights 2.3e-3, wrong adapter
# 6.8e-3, no adapter 7.8e-3, wrong base 8.2e-3, adapter x0.5 8.4e-3 (the
# non-precision attacks' matched errors are bounded by the window). 2e-4
# sits x12 below bf16, and one chance-matched garbage value among 128 adds at
# most 2e-2/128 = 1.6e-4.
FP_MAX_MEAN_EXCESS_REL = 2e-4

# Largest single |error| over the matched indices beyond the half-step,
# relative to hi. Honest worst: 6.6e-7 (merged LoRA), 5.6e-7 (single
# prefill, padded batch, 2 threads), 4.4e-7 (sdpa). Lowest attack figure:
# bf16 8.4e-3, wrong base 1.5e-2. 2e-3 is x3000 over honest and x4 under
# bf16: with 15-bit magnitudes bf16 weights are caught by the fingerprint's
# own value errors (mean and max) at every hidden width; version 1's 8-bit
# values at width 2048 had a half-step (4e-3 of hi) above the bf16 error.
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

# --- Per-node statistics (issue 18) ----------------------------------------
# Over every audited job of a node: the mean of its chunks' fingerprint mean excess (above), and the count of
# its tokens that are not the replayed choice (margin < 0, near ties included). `python
# bench/node_audit_bench.py --quick --json` on the tiny model: 20 honest configurations (threads, attention),
# 5,514 tokens: every chunk's mean excess 0.0, no token off the choice; float16 weights: 8.2e-5 per chunk
# (under the per-job limit) from the first chunk; int8 / int4 tokens "proved" by an honest prefill: 22 / 33
# tokens off the choice in 700 / 118. A node past either is flagged and audited at 100%.
NODE_FP_FLAG = 1e-6  # mean excess over at least NODE_FP_MIN_CHUNKS chunks
# The fingerprint statistic is calibrated for nodes that declare float32 (what the verifier recomputes in;
# an undeclared node counts as float32): serving lower precision than that is the departure it finds. For a
# node that declares a lower precision its honest figures sit above 0 and no calibration exists yet, so
# only the off-choice statistic applies to it.
NODE_FP_CALIBRATED_DTYPES = ("", "float32")
NODE_FP_MIN_CHUNKS = 4
# What an honest node reaches in 10,000 tokens with probability < 1e-6 at the measured honest rate's 95% bound
NODE_OFF_CHOICE_FLAG = 21

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
