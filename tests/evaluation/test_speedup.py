"""Speed-up fractions against hand-computed curves."""

import numpy as np
import pytest

from evaluation.speedup import first_crossing, smooth, speedup_fractions


def curve(steps, losses, flops_per_step=10.0, seconds_per_step=0.5):
    steps = np.asarray(steps, float)
    return {"step": steps, "flops": steps * flops_per_step, "time": steps * seconds_per_step,
            "loss": np.asarray(losses, float)}


def test_exact_crossing_at_an_evaluation_point():
    dense = curve([0, 100, 200, 300, 400], [5, 3, 2, 1.5, 1.2])
    mot = curve([0, 100, 200, 300, 400], [5, 2.5, 1.6, 1.2, 1.0])
    assert speedup_fractions(dense, mot)["steps_frac"] == pytest.approx(300 / 400)


def test_crossing_between_points_is_interpolated():
    # target 1.2 lies between 1.6 (step 200) and 1.0 (step 300): 200 + (1.6-1.2)/(1.6-1.0)*100
    dense = curve([0, 100, 200, 300, 400], [5, 3, 2, 1.5, 1.2])
    mot = curve([0, 100, 200, 300, 400], [5, 2.5, 1.6, 1.0, 0.9])
    assert speedup_fractions(dense, mot)["steps_frac"] == pytest.approx((200 + 0.4 / 0.6 * 100) / 400)


def test_never_reached_counts_by_relative_speed_not_as_a_gap():
    # other ends at 1.5, above dense's final 1; dense got down to 1.5 halfway between steps 100 (2) and 200 (1):
    # other needs its 200 steps for what dense did in 150, so dense's final takes it 200/150 of dense's steps
    dense = curve([0, 100, 200], [5, 2, 1])
    other = curve([0, 100, 200], [5, 3, 1.5])
    result = speedup_fractions(dense, other)
    assert result["reached"] is False
    assert result["steps_frac"] == pytest.approx(200 / 150) == pytest.approx(result["flops_frac"])
    assert result["time_frac"] == pytest.approx(200 / 150)
    assert speedup_fractions(dense, dense)["reached"] is True and speedup_fractions(dense, dense)["steps_frac"] == 1


def test_noisy_curve_with_smoothing():
    steps = [0, 100, 200, 300, 400, 500]
    dense = curve(steps, [4.0, 3.0, 2.0, 1.8, 1.6, 1.4])
    # a single noisy dip at step 200 crosses dense's final raw loss early ...
    noisy = curve(steps, [4.0, 2.5, 1.3, 1.9, 1.5, 1.2])
    assert first_crossing(noisy["step"], noisy["loss"], 1.4) == pytest.approx(100 + (2.5 - 1.4) / (2.5 - 1.3) * 100)
    # ... a trailing 2-point average removes it: smoothed noisy = [4, 3.25, 1.9, 1.6, 1.7, 1.35]
    np.testing.assert_allclose(smooth(noisy["loss"], 2), [4.0, 3.25, 1.9, 1.6, 1.7, 1.35])
    result = speedup_fractions(dense, noisy, smoothing=2)
    target = 1.5  # dense smoothed final: (1.6 + 1.4) / 2
    assert result["target_loss"] == pytest.approx(target)
    assert result["steps_frac"] == pytest.approx((400 + (1.7 - 1.5) / (1.7 - 1.35) * 100) / 500)


def test_steps_flops_time_fractions_agree_when_rates_are_constant():
    dense = curve([0, 50, 100, 150], [3, 2, 1.5, 1.2], flops_per_step=7.0, seconds_per_step=0.25)
    mot = curve([0, 50, 100, 150], [3, 1.8, 1.3, 1.1], flops_per_step=7.0, seconds_per_step=0.25)
    r = speedup_fractions(dense, mot)
    assert r["steps_frac"] == pytest.approx(r["flops_frac"]) == pytest.approx(r["time_frac"])
    # a run whose steps are twice as slow needs twice the wall-clock fraction
    slow = curve([0, 50, 100, 150], [3, 1.8, 1.3, 1.1], flops_per_step=7.0, seconds_per_step=0.5)
    assert speedup_fractions(dense, slow)["time_frac"] == pytest.approx(2 * r["steps_frac"])
