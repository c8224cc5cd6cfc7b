"""Is a difference between two runs beyond seed noise? Seed summaries and Welch's t-test.

With one seed nothing about noise is measured: the std is None (printed blank, never `± 0.0000`)
and no test is made. With >= 2 seeds on both sides, Welch's unequal-variance t-test of the two
runs' per-seed values gives a two-sided p-value; "beyond seed noise" means p < ALPHA.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats

ALPHA = 0.05


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


def verdict(test: Welch | None, alpha: float = ALPHA) -> str:
    """'yes' / 'no' for a test, '' where none could be made (a table cell left blank)."""
    if test is None:
        return ""
    return "yes" if test.beyond_noise(alpha) else "no"


def standard_error(a: SeedStat | None, b: SeedStat | None) -> float | None:
    """Standard error of mean(a) - mean(b) (Welch's denominator); None unless both sides have >= 2 seeds."""
    if a is None or b is None or a.std is None or b.std is None:
        return None
    return math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)
