"""Power of the one-sided t-test over seeds: against its closed-form edges and a simulation of the test itself."""

import numpy as np
import pytest
from scipy import stats

from evaluation.power import detectable_effect, power, seeds_needed


def test_no_effect_has_power_alpha():
    assert power(0.0, 1.0, 5, 0.05) == pytest.approx(0.05)
    assert power(0.0, 0.3, 12, 0.01) == pytest.approx(0.01)


def test_power_matches_a_simulation_of_the_test():
    rng = np.random.default_rng(0)
    effect, sd, n, alpha = 0.6, 1.0, 8, 0.05
    draws = rng.normal(-effect, sd, size=(40000, n))  # claim: mean < 0, true mean -0.6
    rejected = stats.ttest_1samp(draws, 0.0, axis=1, alternative="less").pvalue < alpha
    assert power(effect, sd, n, alpha) == pytest.approx(rejected.mean(), abs=0.01)


def test_detectable_effect_and_seeds_needed_invert_power():
    sd, alpha = 0.01, 0.05
    mde = detectable_effect(sd, 3, alpha)
    assert power(mde, sd, 3, alpha) == pytest.approx(0.8)
    # large-n limit: (z_{1-a} + z_{0.8}) sd / sqrt(n)
    assert detectable_effect(sd, 400, alpha) == pytest.approx((stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) * sd / 20,
                                                             rel=0.01)
    n = seeds_needed(0.01, sd, alpha)
    assert power(0.01, sd, n, alpha) >= 0.8 > power(0.01, sd, n - 1, alpha)
    assert seeds_needed(-0.01, sd, alpha) is None and detectable_effect(sd, 1, alpha) is None
