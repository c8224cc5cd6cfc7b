"""Power of a one-sided one-sample (or paired) t-test over seeds: the chance that n seeds, whose per-seed
values spread with sd σ, detect a true effect δ (mean beyond the claimed threshold by δ) at level α.

    power(δ, σ, n, α) = 1 − F_nct(t_{1−α, n−1}; df = n − 1, nc = δ √n / σ)

(the noncentral t distribution). `detectable_effect` inverts it for δ at 80% power, `seeds_needed` for n.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

POWER = 0.8
MAX_SEEDS = 1000


def power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Probability that the one-sided t-test at level α over n seeds rejects when the true effect is `effect`
    (in the claimed direction, > 0) and the seeds spread with sample sd `sd`."""
    if n < 2:
        return float("nan")
    df = n - 1
    critical = stats.t.ppf(1 - alpha, df)
    return float(stats.nct.sf(critical, df, effect * math.sqrt(n) / sd))


def detectable_effect(sd: float, n: int, alpha: float, target: float = POWER) -> float | None:
    """The smallest true effect n seeds detect with probability `target` (None below 2 seeds or without spread)."""
    if n < 2 or not sd > 0:
        return None
    return float(optimize.brentq(lambda e: power(e, sd, n, alpha) - target, 0.0, 100 * sd * (1 + 10 / n)))


def seeds_needed(effect: float, sd: float, alpha: float, target: float = POWER) -> int | None:
    """The fewest seeds (>= 2) that detect `effect` with probability `target`; None where no seed count up to
    MAX_SEEDS does (an effect <= 0, i.e. observed in the wrong direction, is never detected)."""
    if not effect > 0 or not sd > 0 or power(effect, sd, MAX_SEEDS, alpha) < target:
        return None
    low, high = 1, 2  # power grows with n: double until enough, then bisect (low never enough, high enough)
    while power(effect, sd, high, alpha) < target:
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if power(effect, sd, middle, alpha) < target else (low, middle)
    return high
