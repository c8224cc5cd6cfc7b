"""Declared claims: parsed with the run roles as defaults, checked against the config, and judged by a one-sided
test with Holm over the setting's claims; under simulated curves with no true effect the check says
"supported" at most α of the time; one seed is exploratory; power is printed where a claim is inconclusive."""

import numpy as np
import pytest
import yaml
from scipy import stats

from evaluation.claims import Claim, claims_for, test_claim as judge, verdicts
from evaluation.speedup import speedup_fractions
from mot.config import ConfigError
from mot.config.load import load_config
from tests.conftest import REPO


def claim(**kw):
    base = dict(name="c", setting="chameleon", run="mot", reference="dense", loss="image", metric="delta",
                direction="less", threshold=0.0, alpha=0.05, seeds=3)
    return Claim(**{**base, **kw})


def verdict_of(c, values, family=1, with_power=True):
    row = judge(c, values, family, with_power)
    verdicts([row], [c])
    return row


def test_claims_default_to_the_roles_and_name_what_they_test():
    config = load_config([REPO / "configs" / "pipeline.yaml"])
    claims = claims_for(config)
    assert {(c.setting, c.run, c.reference, c.loss, c.metric) for c in claims} == {
        ("chameleon", "mot", "dense", "text", "steps_frac"), ("chameleon", "mot", "dense", "image", "steps_frac"),
        ("chameleon_speech", "mot", "dense", "speech", "steps_frac"),
        ("transfusion", "mot", "dense", "image", "steps_frac")}
    assert str(claims_for(config, "transfusion")[0]) == "mot vs dense, image, steps_frac < 1"
    experiments = REPO / "configs" / "experiments"
    seeds = load_config([experiments / "tiny_untuned.yaml", experiments / "tiny_seeds.yaml"])
    assert [str(c) for c in claims_for(seeds)] == [str(c) for c in claims]  # the same claims, more seeds
    assert all(c.seeds == 1 for c in claims) and all(c.seeds > 1 for c in claims_for(seeds))


def test_a_claim_about_a_run_that_does_not_exist_is_an_error(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["claims"] = [{"setting": "chameleon", "run": "nope", "loss": "image", "metric": "delta", "less_than": 0,
                         "seeds": 3}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="c.yaml: claims\\[0\\].run: 'nope' is not a run or selection of settings.chameleon"):
        load_config([path])  # before any job runs
    config["claims"][0].pop("less_than")
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="claims"):
        load_config([path])  # neither less_than nor greater_than: the schema says so


def test_verdicts_supported_not_supported_inconclusive_exploratory():
    c = claim()
    supported = verdict_of(c, [-0.030, -0.032, -0.029])
    assert supported["verdict"] == "supported"
    assert supported["p"] == pytest.approx(stats.ttest_1samp([-0.030, -0.032, -0.029], 0, alternative="less").pvalue)
    assert verdict_of(c, [0.030, 0.032, 0.029])["verdict"] == "not supported"
    unclear = verdict_of(c, [-0.003, 0.01, -0.02])
    assert unclear["verdict"] == "inconclusive"
    assert unclear["detectable_effect"] > 0 and unclear["ci_low"] < 0 < unclear["ci_high"]
    assert verdict_of(c, [-0.5])["verdict"] == "exploratory"
    # Holm inside the family: two claims at p 0.03 and 0.04 both fail at 0.05 once adjusted (0.06 and 0.06)
    a, b = judge(c, [-0.01, -0.03, 0.002]), judge(c, [-0.01, -0.025, 0.0])
    a["p"], b["p"] = 0.03, 0.04
    verdicts([a, b], [c, c])
    assert (a["p_holm"], b["p_holm"]) == pytest.approx((0.06, 0.06)) and a["verdict"] != "supported"


def test_power_fields_of_a_claim():
    from evaluation.power import detectable_effect, seeds_needed

    row = judge(claim(seeds=3), [-0.003, 0.01, -0.02], family_size=2)
    sd = float(np.std([-0.003, 0.01, -0.02], ddof=1))
    assert row["sd"] == pytest.approx(sd)
    assert row["detectable_effect"] == pytest.approx(detectable_effect(sd, 3, 0.025))  # α / 2 claims
    assert row["seeds_needed"] == seeds_needed(0.013 / 3, sd, 0.025)
    planned = judge(claim(seeds=6, planning_sd=0.01), [-0.5])  # one seed: the planning sd sizes the study
    assert planned["sd_from"] == "planning_sd (config)" and planned["detectable_at"] == 6


def no_effect_curves(rng, n_seeds):
    """Dense and MoT of each seed: one true curve, a seed effect shared by the pair's batches and per-run noise."""
    steps = np.arange(0, 601, 30, dtype=float)
    true = 0.8 + 4.0 * np.exp(-steps / 120)
    pairs = []
    for _ in range(n_seeds):
        shared = rng.normal(0, 0.004)
        runs = [true + shared + rng.normal(0, 0.006) + rng.normal(0, 0.003, len(steps)) for _ in range(2)]
        pairs.append(tuple({"step": steps, "flops": steps * 1e9, "time": steps * 0.5, "loss": r} for r in runs))
    return pairs


@pytest.mark.parametrize("metric, threshold", [("steps_frac", 1.0), ("delta", 0.0)])
def test_no_true_effect_is_supported_at_most_alpha_of_the_time(metric, threshold):
    rng = np.random.default_rng(22)
    c = claim(metric=metric, threshold=threshold, seeds=3)
    draws, supported = 2000, 0
    for _ in range(draws):
        pairs = no_effect_curves(rng, 3)
        if metric == "delta":
            values = [mot["loss"][-1] - dense["loss"][-1] for dense, mot in pairs]
        else:
            values = [speedup_fractions(dense, mot)["steps_frac"] for dense, mot in pairs]
        supported += verdict_of(c, values, with_power=False)["verdict"] == "supported"
    # α = 0.05, plus three Monte Carlo standard errors of a rate of 0.05 over 2000 draws
    assert supported / draws <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / draws)


def test_a_fraction_no_seed_count_can_detect_is_said_so_not_printed_as_a_negative_fraction(tmp_path):
    from tests.evaluation.test_report import make_study
    from evaluation.claims import evaluate_claims
    from evaluation.results import SettingResults
    runs = {"dense": {"untie": []}, "mot": {"untie": ["attn", "ffn", "norm"]}}
    finals = {"dense": {"text": [1.0], "image": [0.8]}, "mot": {"text": [0.9], "image": [0.79]}}
    curves = {"dense": {"text": [5, 2.0, 1.5, 1.2], "image": [5, 1.8, 1.1, 0.9]},
              "mot": {"text": [5, 1.8, 1.3, 1.0], "image": [5, 1.7, 1.0, 0.85]}}
    claims = [{"setting": "chameleon", "loss": "image", "metric": "steps_frac", "less_than": 1.0, "seeds": 1,
               "planning_sd": 0.3}]  # one claim at α = 0.05: 2 seeds detect an effect of ~1.7
    config, _ = make_study(tmp_path, "chameleon", ["text", "image"], runs, finals, curves, claims=claims)
    row = evaluate_claims(SettingResults(config, "chameleon"), [])[0]
    assert row["verdict"] == "exploratory" and row["detectable_effect"] > 1
    assert "2 seeds detect no true steps_frac with 80% power" in row["notes"] and "< -" not in row["notes"]
