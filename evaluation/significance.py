"""Is a difference between two runs beyond seed noise? Seed summaries, paired and Welch comparisons, Holm.

With one seed nothing about noise is measured: the std is None (printed blank, never `± 0.0000`)
and no test is made. Two runs with >= 2 common seeds are compared seed by seed (a dense and a MoT run of
one seed see the same batches): the per-seed difference Δ, its mean with a t-interval, the paired t-test,
the same-seed correlation ρ and the paired effect size d_z = mean(Δ) / sd(Δ). Where fewer than 2 seeds are
common, Welch's unequal-variance test of the two runs' seeds stands in (its interval from the
Welch–Satterthwaite degrees of freedom, effect size Cohen's d with the pooled sd). p-values of one table
(one family) are Holm-adjusted together (`holm`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95


class PValue(float):
    """A p-value: prints with enough digits to tell 0.04 from 0.0004."""

    def __str__(self) -> str:
        return f"{float(self):.4f}" if self >= 1e-4 else f"{float(self):.1e}"


@dataclass(frozen=True)
class SeedStat:
    """One quantity over a run's seeds: mean and sample std (None with one seed: not measured)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else None

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:.4f}"
        # a measured std too small for 4 decimals keeps its digits: `± 0.0000` would read as "not measured"
        return f"{self.mean:.4f} ± {self.std:.4f}" if self.std >= 5e-5 else f"{self.mean:.4f} ± {self.std:.1e}"


def seed_stat(values: Iterable[float | None]) -> SeedStat | None:
    """The seeds' summary, or None when no seed has a value."""
    present = tuple(float(v) for v in values if v is not None)
    return SeedStat(present) if present else None


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __str__(self) -> str:
        return f"[{self.low:+.4f}, {self.high:+.4f}]"


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Two-sided t-interval of the mean of `values` (None with fewer than 2)."""
    x = np.asarray(list(values), float)
    if len(x) < 2:
        return None
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return Interval(float(x.mean() - half), float(x.mean() + half))


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of mean(a) - mean(b): statistic, Welch–Satterthwaite degrees of freedom, two-sided p."""

    t: float
    df: float
    p: PValue

    def beyond_noise(self, alpha: float = ALPHA) -> bool:
        return self.p < alpha


def welch(a: Iterable[float], b: Iterable[float]) -> Welch | None:
    """None when either side has fewer than 2 values, or neither varies (no noise measured to compare with)."""
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():  # nearly identical seeds: scipy warns, the result is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    if not math.isfinite(result.pvalue) or not math.isfinite(result.statistic):
        return None
    return Welch(float(result.statistic), float(result.df), PValue(result.pvalue))


def verdict(test, alpha: float = ALPHA) -> str:
    """'yes' / 'no' for a test, '' where none could be made (a table cell left blank)."""
    if test is None:
        return ""
    return "yes" if test.p < alpha else "no"


def standard_error(a: SeedStat | None, b: SeedStat | None) -> float | None:
    """Standard error of mean(a) - mean(b) (Welch's denominator); None unless both sides have >= 2 seeds."""
    if a is None or b is None or a.std is None or b.std is None:
        return None
    return math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)


@dataclass(frozen=True)
class Difference:
    """Run minus reference: Δ of the means with its 95% interval, the two-sided p of the test that was
    possible (`method` "paired" over the common seeds, "welch" otherwise, "" = untested), the same-seed
    correlation ρ (paired, >= 3 seeds), the effect size (d_z paired, Cohen's d for Welch) and the seeds used."""

    delta: float
    interval: Interval | None
    p: PValue | None
    method: str
    n: int                 # paired: common seeds; welch / untested: seeds of the run
    n_reference: int
    rho: float | None
    effect_size: float | None
    se: float | None
    diffs: tuple[float, ...] = ()   # per-seed Δ (paired only)

    @property
    def tested(self) -> bool:
        return self.p is not None


def _paired(run: Mapping[int, float], reference: Mapping[int, float], seeds: list[int]) -> Difference:
    a = np.array([run[s] for s in seeds])
    b = np.array([reference[s] for s in seeds])
    d = a - b
    sd = float(d.std(ddof=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(a, b)
        rho = float(stats.pearsonr(a, b).statistic) if len(seeds) >= 3 and a.std() > 0 and b.std() > 0 else None
    p = PValue(result.pvalue) if math.isfinite(result.pvalue) else None
    return Difference(float(d.mean()), t_interval(d), p, "paired" if p is not None else "", len(seeds), len(seeds),
                      rho, float(d.mean() / sd) if sd > 0 else None, sd / math.sqrt(len(seeds)), tuple(d.tolist()))


def compare(run: Mapping[int, float], reference: Mapping[int, float]) -> Difference | None:
    """Run minus reference from their per-seed values ({seed: value}): paired over the common seeds when
    there are >= 2 of them, else Welch over all seeds; None when either side has no value."""
    if not run or not reference:
        return None
    common = sorted(set(run) & set(reference))
    if len(common) >= 2:
        return _paired(run, reference, common)
    a, b = np.array(list(run.values()), float), np.array(list(reference.values()), float)
    delta = float(a.mean() - b.mean())
    test = welch(a, b)
    if test is None:
        return Difference(delta, None, None, "", len(a), len(b), None, None, None)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, test.df) * se
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return Difference(delta, Interval(delta - half, delta + half), test.p, "welch", len(a), len(b), None,
                      delta / pooled if pooled > 0 else None, se)


def one_sided_t(values: Iterable[float], threshold: float, direction: str) -> PValue | None:
    """p of the one-sided one-sample t-test of H1: mean < threshold (`direction` "less") or > ("greater")."""
    x = np.asarray(list(values), float)
    if len(x) < 2 or x.std(ddof=1) == 0:
        return None
    return PValue(stats.ttest_1samp(x, threshold, alternative=direction).pvalue)


def holm(pvalues: Iterable[float | None]) -> list[PValue | None]:
    """Holm's step-down adjustment of one family's p-values (None = untested, left out of the family);
    reject where the adjusted p < α controls the family-wise error rate at α."""
    p = list(pvalues)
    tested = sorted((v, i) for i, v in enumerate(p) if v is not None)
    m, running, adjusted = len(tested), 0.0, [None] * len(p)
    for rank, (value, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * value))  # monotone: never below an earlier step's
        adjusted[i] = PValue(running)
    return adjusted
