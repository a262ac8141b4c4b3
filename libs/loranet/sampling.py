"""Seeded, device-independent token sampler, replayable from logits alone.

A node and a verifier on different hardware must pick the same token from
(nearly) the same logits. So the sampler:

- works in float64 numpy on CPU over the logits it is handed (whatever
  device produced them);
- draws its randomness from a counter-based generator, a pure function of
  (job seed, step, token index): splitmix64 mixing in numpy uint64 integer
  arithmetic, identical on every platform; no RNG state is carried;
- picks by a Gumbel-max race: `argmax(z_i + g_i)` over the tokens kept by
  the temperature / top-k / top-p filters, with z = logits / temperature and
  g_i = -log(-log(u_i)). This samples exactly from softmax(z) restricted to
  the kept set, and a verifier can measure how close the race was
  (`replay_margin`) to tolerate near-ties under numeric noise.

Greedy (temperature == 0) is argmax of the logits, lowest index on ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class SamplerParams:
    """Sampling settings of a job.

    temperature: 0 for greedy; > 0 divides the logits.
    top_k: keep the k highest logits (0 = no limit).
    top_p: keep the smallest set of highest-probability tokens whose total
        probability reaches top_p (1.0 = no limit).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = SamplerParams()


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of x + golden on a uint64 array (wrapping arithmetic); the fingerprint's
    field points use it too."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
        return mixed


def uniform_noise(seed: int, step: int, n: int) -> np.ndarray:
    """u[i] in the open interval (0, 1) for token i = 0..n-1, a pure function of (seed, step, i).

    u = (top 53 bits of splitmix64(splitmix64(splitmix64(seed) ^ step) ^ i) + 0.5) / 2^53.
    """
    key = splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))
    key = splitmix64(key ^ np.uint64(int(step) & _MASK64))
    bits = splitmix64(key ^ np.arange(n, dtype=np.uint64))
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def gumbel_noise(seed: int, step: int, n: int) -> np.ndarray:
    """Standard Gumbel noise g[i] = -log(-log(u[i])) for tokens 0..n-1."""
    noise: np.ndarray = -np.log(-np.log(uniform_noise(seed, step, n)))
    return noise


def _as_f64(logits: Any) -> np.ndarray:
    if hasattr(logits, "detach"):  # torch tensor on any device, any float dtype
        logits = logits.detach().to("cpu").double().numpy()
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"logits must be a non-empty 1-D vector, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("logits contain NaN")
    return arr


def _kept_mask(z: np.ndarray, params: SamplerParams) -> np.ndarray:
    """Tokens that survive top-k then top-p, as a boolean mask.

    Order is by (z descending, index ascending), so ties break the same way everywhere."""
    order = np.lexsort((np.arange(z.size), -z))
    keep_n = z.size if params.top_k == 0 else min(params.top_k, z.size)
    if params.top_p < 1.0:
        top = z[order[:keep_n]]
        probs = np.exp(top - top[0])
        probs /= probs.sum()
        # first position where the running total reaches top_p; at least one token
        keep_n = min(keep_n, int(np.searchsorted(np.cumsum(probs), params.top_p, side="left")) + 1)
    mask = np.zeros(z.size, dtype=bool)
    mask[order[:keep_n]] = True
    mask &= np.isfinite(z) | (z > 0)  # -inf logits are never eligible
    if not mask.any():
        mask[order[0]] = True
    return mask


def perturbed_scores(logits: Any, params: SamplerParams, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, kept mask): the race each token runs; `sample` is argmax of scores over kept.

    Greedy: scores are the logits themselves, all tokens kept."""
    x = _as_f64(logits)
    if params.greedy:
        return x, np.ones(x.size, dtype=bool)
    z = x / params.temperature
    mask = _kept_mask(z, params)
    return z + gumbel_noise(seed, step, z.size), mask


def sample(logits: Any, params: SamplerParams, seed: int, step: int) -> int:
    """The token chosen at decode `step` (0 = first generated token) of the job with `seed`.

    `logits` is the 1-D vector of the position that predicts this token
    (numpy array, list or torch tensor on any device). Pure function."""
    scores, mask = perturbed_scores(logits, params, seed, step)
    return int(np.argmax(np.where(mask, scores, -np.inf)))


def sample_many(logits: Any, params: list[SamplerParams], seeds: list[int], steps: list[int]) -> list[int]:
    """`sample` for each row of a [B, V] logits matrix (a serving batch): the same tokens, with the
    greedy rows decided by one argmax over the batch instead of one float64 copy per row.

    Equivalent: float32 -> float64 is exact, so the order of the values is the same, and both
    argmaxes return the first index among equal maxima.  Rows holding NaN go through `sample`
    (which refuses them)."""
    if hasattr(logits, "detach"):  # a torch tensor (a CPU float32 one from the engine)
        logits = logits.detach()
    else:
        logits = np.asarray(logits, dtype=np.float64)
    out: list[int | None] = [None] * len(params)
    greedy = [i for i, p in enumerate(params) if p.greedy]
    if greedy:
        rows = logits[greedy] if len(greedy) < len(params) else logits
        nan: list[Any]
        best: list[Any]
        if isinstance(rows, np.ndarray):
            nan = np.isnan(rows).any(axis=1).tolist()  # type: ignore[assignment]  # a list for a 2-D array
            best = rows.argmax(axis=1).tolist()
        else:
            nan, best = rows.isnan().any(dim=1).tolist(), rows.argmax(dim=1).tolist()
        for i, token, bad in zip(greedy, best, nan):
            out[i] = None if bad else int(token)
    return [t if t is not None else sample(logits[i], params[i], seeds[i], steps[i]) for i, t in enumerate(out)]


def replay_margin(logits: Any, params: SamplerParams, seed: int, step: int, chosen: int) -> float:
    """How decisively `chosen` wins the race on these logits; >= 0 iff `sample` picks it
    (up to exact ties, where the lower index wins and the margin is 0).

    If `chosen` is kept: its score minus the best other kept score (in
    scaled-logit units; raw logits when greedy). If it is filtered out by
    top-k/top-p: the smaller of (its scaled logit minus the lowest kept
    scaled logit) and its race margin as if it were kept, a negative number
    that is small when it sits just at the filter's edge. A verifier that
    recomputed slightly different logits accepts a node's token when the
    margin is above a small negative tolerance (thresholds.py)."""
    scores, mask = perturbed_scores(logits, params, seed, step)
    if not 0 <= chosen < scores.size:
        raise ValueError(f"chosen token {chosen} is outside the logits' range 0..{scores.size - 1}")
    others = np.where(mask, scores, -np.inf)
    others[chosen] = -np.inf
    best_other = others.max()
    race = float(scores[chosen] - best_other) if np.isfinite(best_other) else float("inf")
    if mask[chosen]:
        return race
    x = _as_f64(logits)
    z = x if params.greedy else x / params.temperature
    edge = float(z[chosen] - z[mask].min())
    return min(edge, race)
