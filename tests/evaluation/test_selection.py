"""Best against best: a role that is a selection (`roles.select`, e.g. each architecture at several learning
rates) becomes the candidate with the lowest final loss summed over the modalities (seed mean), picked on the
split `roles.select_on` says; claims, tables, the headline and `evaluation.compare --headline` then use the
picks. Also the gap along training, Δ(t) paired by seed."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from evaluation import compare
from evaluation.analysis import gap_rows
from evaluation.report import report
from evaluation.results import SettingResults
from mot.config import ConfigError
from mot.config.load import load_config
from tests.conftest import REPO
from tests.evaluation.test_report import STEPS, make_study, read_csv

SEEDS = [0, 1, 2]
# final losses per seed on the curve; lr 2e-3 is dense's best, 1e-3 mot's
FINAL = {"dense-lr1e-3": {"text": [1.06, 1.07, 1.05], "image": [0.83, 0.82, 0.84]},
         "dense-lr2e-3": {"text": [1.02, 1.03, 1.01], "image": [0.81, 0.80, 0.82]},
         "mot-lr1e-3": {"text": [0.99, 1.00, 0.985], "image": [0.805, 0.80, 0.81]},
         "mot-lr2e-3": {"text": [1.04, 1.03, 1.05], "image": [0.84, 0.83, 0.82]}}
CURVES = {name: {"text": [5, 2.0 - 0.1 * i, 1.5 - 0.05 * i, 1.2], "image": [5, 1.8, 1.1 - 0.03 * i, 0.9]}
          for i, name in enumerate(FINAL)}
RUNS = {name: {"arch": name.split("-")[0], "untie": [] if name.startswith("dense") else ["attn", "ffn", "norm"],
               "seeds": SEEDS, "train": {"lr": float(name.split("lr")[1])}} for name in FINAL}
ROLES = {"select": {"dense": ["dense-lr1e-3", "dense-lr2e-3"], "mot": ["mot-lr1e-3", "mot-lr2e-3"]}}
CLAIMS = [{"setting": "chameleon", "loss": "text", "metric": "delta", "less_than": 0.0, "seeds": 3}]


def score(name):
    return np.mean([FINAL[name]["text"][i] + FINAL[name]["image"][i] for i in range(3)])


@pytest.fixture
def sweep(tmp_path):
    return make_study(tmp_path, "chameleon", ["text", "image"], RUNS, FINAL, CURVES, roles=ROLES, claims=CLAIMS)


def test_each_selection_picks_its_lowest_summed_final_loss_and_the_report_compares_best_against_best(sweep):
    config, paths = sweep
    out = report(config, "chameleon").parent
    assert json.loads((out / "roles.json").read_text()) == {
        "baseline": "dense-lr2e-3", "headline": "mot-lr1e-3", "picked": {"dense": "dense-lr2e-3", "mot": "mot-lr1e-3"}}
    rows = {r["run"]: r for r in read_csv(out / "selection.csv")}
    for name in FINAL:
        assert float(rows[name]["score"]) == pytest.approx(score(name))
        assert float(rows[name]["lr"]) == RUNS[name]["train"]["lr"]
    assert [r["run"] for r in rows.values() if r["picked"] == "yes"] == ["dense-lr2e-3", "mot-lr1e-3"]
    # the declared claim names the selections: it is tested on the picks, paired by seed
    claim = read_csv(out / "claims.csv")[0]
    delta = np.subtract(FINAL["mot-lr1e-3"]["text"], FINAL["dense-lr2e-3"]["text"])
    assert float(claim["estimate"]) == pytest.approx(delta.mean())
    assert float(claim["p"]) == pytest.approx(stats.ttest_1samp(delta, 0.0, alternative="less").pvalue)
    comparison = [r for r in read_csv(out / "comparisons.csv")
                  if (r["run"], r["reference"], r["loss"]) == ("mot-lr1e-3", "dense-lr2e-3", "text")][0]
    assert comparison["status"].startswith("declared: ")
    text = (out / "report.md").read_text()
    assert "## Selection: best against best" in text and "`dense` → `dense-lr2e-3`" in text
    assert "## Headline: mot-lr1e-3 vs dense-lr2e-3" in text
    assert "disjoint" not in text  # smoke's eval.split is val: the pick's samples hold the verdict's
    for png in ("selection_vs_lr.png", "gap_vs_step.png"):
        assert (out / "figures" / png).stat().st_size > 1000


def test_select_on_whole_split_picks_on_eval_metrics_and_curve_on_the_curve(sweep):
    config, paths = sweep
    for seed in SEEDS:  # dense-lr1e-3 best on the whole split only
        path = paths.eval_dir("chameleon", f"dense-lr1e-3-s{seed}") / "metrics.json"
        path.write_text(json.dumps({"step": 400, "val/loss_text": 0.5, "val/loss_image": 0.5}))
    assert SettingResults(config, "chameleon").roles.baseline == "dense-lr1e-3"
    config["settings"]["chameleon"]["roles"]["select_on"] = "curve"
    assert SettingResults(config, "chameleon").roles.baseline == "dense-lr2e-3"


def test_whole_split_losses_come_from_the_split_each_run_was_evaluated_on(sweep):
    config, paths = sweep
    for seed in SEEDS:  # evaluated on test (eval.split: test): dense-lr1e-3 is the best there
        path = paths.eval_dir("chameleon", f"dense-lr1e-3-s{seed}") / "metrics.json"
        path.write_text(json.dumps({"step": 400, "test/loss_text": 0.5, "test/loss_image": 0.5,
                                    "loss_splits": {"text": "test", "image": "test"}}))
    with pytest.raises(ValueError, match=r"loss_splits\.text: runs were evaluated on different splits \(.*"
                                         r"dense-lr1e-3-s0: test.*dense-lr2e-3-s0: val"):
        SettingResults(config, "chameleon")  # the other runs' files are val's: no pick across two splits
    for name in FINAL:
        for seed in SEEDS:
            path = paths.eval_dir("chameleon", f"{name}-s{seed}") / "metrics.json"
            metrics = json.loads(path.read_text())
            metrics = {k.replace("val/", "test/"): v for k, v in metrics.items()}
            path.write_text(json.dumps({**metrics, "loss_splits": {"text": "test", "image": "test"}}))
    results = SettingResults(config, "chameleon")
    assert results.whole_splits["text"] == "test" and results.roles.baseline == "dense-lr1e-3"
    assert results.whole_split_by_seed("dense-lr1e-3", "image") == {0: 0.5, 1: 0.5, 2: 0.5}


def test_the_gap_along_training_is_the_mean_same_seed_difference_with_its_t_interval(sweep):
    config, _ = sweep
    results = SettingResults(config, "chameleon")
    rows = [r for r in gap_rows(results) if r["loss"] == "text"]
    assert [r["step"] for r in rows] == STEPS
    last = np.subtract(FINAL["mot-lr1e-3"]["text"], FINAL["dense-lr2e-3"]["text"])
    half = stats.t.ppf(0.975, 2) * last.std(ddof=1) / np.sqrt(3)
    assert (rows[-1]["delta"], rows[-1]["ci_low"], rows[-1]["ci_high"]) == pytest.approx(
        (last.mean(), last.mean() - half, last.mean() + half))
    # mid-run: the curves' shared points (mot-lr1e-3 is CURVES' third run, dense-lr2e-3 its second)
    assert rows[2]["delta"] == pytest.approx((1.5 - 0.05 * 2) - (1.5 - 0.05 * 1))
    assert rows[2]["ci_low"] == pytest.approx(rows[2]["delta"])  # no seed spread there: a zero-width interval


def test_the_gap_figure_fits_its_y_axis_to_the_curve_after_warm_up():
    from evaluation.plots import _steady_limits
    row = lambda step, d, lo, hi: {"step": step, "delta": d, "ci_low": lo, "ci_high": hi}  # noqa: E731
    rows = [row(0, 0.0, -0.1, 0.1), row(30, 0.6, 0.5, 0.7), row(300, -0.02, -0.04, 0.0), row(600, -0.01, -0.03, 0.01)]
    lo, hi = _steady_limits(rows)  # the warm-up spike (step 30 < 20% of 600) is left off the axis
    assert (lo, hi) == pytest.approx((-0.04 - 0.005, 0.01 + 0.005))
    rows[1] = row(30, 0.005, 0.0, 0.01)  # nothing off the steady part's limits: matplotlib's own limits stay
    rows[0] = row(0, 0.0, -0.01, 0.01)
    assert _steady_limits(rows) is None


def test_compare_headline_keeps_each_studys_picks_only(sweep, capsys):
    config, _ = sweep
    report(config, "chameleon")
    study = Path(config["results_dir"]) / config["study"]
    assert compare.main([str(study), "--headline"]) == 0
    table = capsys.readouterr().out.splitlines()[2:]
    assert len(table) == 2 and all("| mot-lr1e-3 | dense-lr2e-3 |" in line for line in table)
    assert compare.main([str(study)]) == 0
    assert len(capsys.readouterr().out.splitlines()[2:]) == 3 * 2  # every other run against the baseline


@pytest.mark.parametrize("select, expected", [
    ({"dense-lr1e-3": ["dense-lr2e-3"]}, r"roles\.select\.dense-lr1e-3: 'dense-lr1e-3' is a run too"),
    ({"dense": ["dense-lr3e-3"]}, r"roles\.select\.dense: 'dense-lr3e-3' is not a run of settings\.chameleon"),
])
def test_a_selection_that_points_at_nothing_stops_the_config(tmp_path, select, expected):
    base = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    base["claims"] = []
    base["settings"] = {"chameleon": {"modalities": ["text", "image"], "runs": RUNS, "roles": {"select": select}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match=expected):
        load_config([path])


def test_the_lr_sweeps_select_every_candidate_and_declare_their_claims_on_the_selections():
    experiments = REPO / "configs" / "experiments"
    for extra in ([], [experiments / "tiny_lr-2to1.yaml"]):
        config = load_config([experiments / "tiny_lr.yaml", *extra])
        chameleon = config["settings"]["chameleon"]
        assert sorted(sum(chameleon["roles"]["select"].values(), [])) == sorted(chameleon["runs"])
        lrs = {name: chameleon["runs"][name]["train"]["lr"] for name in chameleon["runs"]}
        assert sorted(set(lrs.values())) == [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]  # 8e-3: dense only (grid edge)
        assert config["eval"]["split"] == "test"  # picked on test, judged on the val curve
        assert {(c.get("run", "mot"), c.get("vs", "dense")) for c in config["claims"]} == {("mot", "dense")}
        assert all(c["seeds"] <= len(config["seeds"]) for c in config["claims"])
