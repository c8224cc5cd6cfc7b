"""Seed summaries, paired and Welch comparisons, t-intervals and Holm against values computed by hand."""

import math

import pytest
from scipy import special

from evaluation.significance import (PValue, SeedStat, compare, holm, one_sided_t, seed_stat, standard_error,
                                     t_interval, verdict, welch)

# measured by a user with 3 seeds on the default study: final val loss
TEXT_DENSE, TEXT_MOT = [1.0563, 1.0563, 1.0562], [1.0221, 1.0198, 1.0224]
IMAGE_DENSE, IMAGE_MOT = [0.8247, 0.8090, 0.8225], [0.8135, 0.8201, 0.8230]


def by_hand(a, b):
    """Welch's t, Welch–Satterthwaite df and the two-sided p from the t distribution's incomplete beta."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df, special.betainc(df / 2, 0.5, df / (df + t * t))


def test_two_seeds_each_closed_form_with_two_degrees_of_freedom():
    # means 1 and 4, variances 2 and 2: t = -3 / sqrt(2/2 + 2/2), df = 2, p = 1 - |t| / sqrt(t^2 + 2)
    test = welch([0, 2], [3, 5])
    t = -3 / math.sqrt(2)
    assert test.t == pytest.approx(t) and test.df == pytest.approx(2)
    assert test.p == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2))  # 0.16795
    assert verdict(test) == "no"


def test_three_seeds_each_closed_form_with_four_degrees_of_freedom():
    # variances 1 and 1, n 3 and 3: t = -3 / sqrt(2/3), df = 4; Student's t CDF for 4 df in closed form
    test = welch([0, 1, 2], [3, 4, 5])
    t = -3 / math.sqrt(2 / 3)
    u = abs(t) / math.sqrt(1 + t * t / 4)
    assert test.df == pytest.approx(4)
    assert test.p == pytest.approx(1 - 0.75 * u * (1 - t * t / (12 * (1 + t * t / 4))))  # 0.02131
    assert verdict(test) == "yes"


@pytest.mark.parametrize("a, b, beyond", [(TEXT_DENSE, TEXT_MOT, True), (IMAGE_DENSE, IMAGE_MOT, False)])
def test_the_users_three_seed_measurements(a, b, beyond):
    t, df, p = by_hand(a, b)
    test = welch(a, b)
    assert (test.t, test.df, test.p) == pytest.approx((t, df, p), rel=1e-6)
    assert test.beyond_noise() is beyond
    assert verdict(test) == ("yes" if beyond else "no")


def test_unequal_seed_counts():
    a, b = [1.0, 1.2, 1.1, 1.3], [0.9, 1.0]
    t, df, p = by_hand(a, b)
    assert (welch(a, b).t, welch(a, b).df, welch(a, b).p) == pytest.approx((t, df, p), rel=1e-6)


def test_no_test_without_two_seeds_on_each_side_or_without_any_variance():
    assert welch([1.0], [2.0, 2.1]) is None
    assert welch([1.0, 1.1], [2.0]) is None
    assert welch([1.0, 1.0], [1.0, 1.0]) is None
    assert verdict(None) == ""


def test_one_seed_has_no_std_never_zero():
    one = seed_stat([0.8247])
    assert one.n == 1 and one.std is None and str(one) == "0.8247"
    assert seed_stat([None, None]) is None
    two = seed_stat([0.5, 0.6, None])  # missing seeds are left out
    assert two.n == 2 and two.std == pytest.approx(math.sqrt(0.005))  # sample std (ddof 1), as Welch uses
    assert str(two) == "0.5500 ± 0.0707"
    assert str(seed_stat([1.0563, 1.05625])) == "1.0563 ± 3.5e-05"  # measured, just small: never `± 0.0000`
    assert str(seed_stat([1.0, 1.0])) == "1.0000 ± 0.0e+00"  # seeds that agree exactly


def test_standard_error_of_a_difference():
    a, b = SeedStat((0.0, 2.0)), SeedStat((3.0, 5.0))
    assert standard_error(a, b) == pytest.approx(math.sqrt(2 / 2 + 2 / 2))
    assert standard_error(a, SeedStat((3.0,))) is None


def test_p_values_print_small_ones_readably():
    assert str(PValue(0.04321)) == "0.0432"
    assert str(PValue(3.2e-7)) == "3.2e-07"


def test_paired_comparison_closed_form_with_two_degrees_of_freedom():
    # per-seed differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3), df 2: p = 1 - |t| / sqrt(t^2 + 2)
    run, reference = {0: 2.0, 1: 4.0, 2: 6.0}, {0: 1.0, 1: 2.0, 2: 3.0}
    diff = compare(run, reference)
    t = 2 * math.sqrt(3)
    assert diff.method == "paired" and diff.n == 3 and diff.diffs == (1.0, 2.0, 3.0)
    assert diff.delta == pytest.approx(2.0)
    assert diff.p == pytest.approx(1 - t / math.sqrt(t * t + 2))  # 0.0377
    # t_{0.975, 2} = 4.302652729749464 (closed form: sqrt(2 / (1 - 0.95^2) - 2))
    t975 = math.sqrt(2 / (1 - 0.95 ** 2) - 2)
    assert (diff.interval.low, diff.interval.high) == pytest.approx((2 - t975 / math.sqrt(3), 2 + t975 / math.sqrt(3)))
    assert diff.rho == pytest.approx(1.0)  # the same seeds move together: 2x, exactly
    assert diff.effect_size == pytest.approx(2.0)  # d_z = mean / sd


def test_paired_uses_the_common_seeds_and_welch_stands_in_without_them():
    run, reference = {0: 1.0, 1: 1.2, 2: 1.1, 5: 9.0}, {0: 0.9, 1: 1.0, 2: 1.05}
    diff = compare(run, reference)
    assert diff.method == "paired" and diff.n == 3  # seed 5 has no partner
    a, b = {3: 1.0, 4: 1.2, 5: 1.1}, {0: 0.9, 1: 1.0}
    diff = compare(a, b)
    t, df, p = by_hand(list(a.values()), list(b.values()))
    assert diff.method == "welch" and diff.p == pytest.approx(p, rel=1e-6)
    se = math.sqrt(statistics_var([1.0, 1.2, 1.1]) / 3 + statistics_var([0.9, 1.0]) / 2)
    assert diff.interval.high - diff.delta == pytest.approx(special.stdtrit(df, 0.975) * se)
    one = compare({0: 1.0}, {0: 0.5, 1: 0.6})
    assert one.method == "" and one.p is None and one.interval is None and one.delta == pytest.approx(0.45)


def statistics_var(x):
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def test_t_interval_closed_form():
    # [0, 2]: mean 1, sd sqrt 2, se 1, t_{0.975, 1} = tan(pi/2 * 0.95) (Cauchy)
    interval = t_interval([0.0, 2.0])
    half = math.tan(math.pi / 2 * 0.95)
    assert (interval.low, interval.high) == pytest.approx((1 - half, 1 + half))
    assert t_interval([1.0]) is None


def test_one_sided_t():
    # [0, 2] against 3: t = (1 - 3) / 1 = -2, df 1: P(T < -2) = 1/2 - atan(2)/pi (Cauchy)
    assert one_sided_t([0.0, 2.0], 3.0, "less") == pytest.approx(0.5 - math.atan(2) / math.pi)
    assert one_sided_t([0.0, 2.0], 3.0, "greater") == pytest.approx(0.5 + math.atan(2) / math.pi)
    assert one_sided_t([1.0], 3.0, "less") is None


def test_holm_against_hand_computed_values():
    # sorted 0.01, 0.02, 0.03, 0.04 (m = 4): 4*0.01 = 0.04, 3*0.02 = 0.06, max(0.06, 2*0.03) = 0.06, max(0.06, 0.04)
    assert holm([0.03, 0.01, None, 0.04, 0.02]) == pytest.approx([0.06, 0.04, None, 0.06, 0.06])
    # capped at 1; monotone in the raw order
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    assert holm([0.9, 0.001]) == pytest.approx([0.9, 0.002])
    assert holm([]) == [] and holm([None]) == [None]
