"""The study report from logged curves: every run in every table, seeds as mean ± std (blank with one
seed), Welch p-values against dense equal to scipy's, speed-up against same-seed and seed-mean dense,
the leave-one-modality-out merge table, every referenced figure on disk, and the report's MLflow runs."""

import csv
import json
import re
import statistics

import matplotlib.pyplot as plt
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats

from evaluation.paper import paper_value
from evaluation.plots import band
from evaluation.report import report
from evaluation.results import SettingResults
from evaluation.scaling import size_sweep_rows
from mot.config.load import load_config
from mot.paths import StudyPaths
from mot.tracking import RunLogger, init_store
from tests.conftest import REPO

STEPS = [0, 100, 200, 300, 400]
# final val losses a user measured with 3 seeds on the default study: text gain robust, image within noise
FINAL = {"dense": {"text": [1.0563, 1.0563, 1.0562], "image": [0.8247, 0.8090, 0.8225]},
         "mot": {"text": [1.0221, 1.0198, 1.0224], "image": [0.8135, 0.8201, 0.8230]},
         "mot-shared_attn": {"text": [1.3], "image": [0.80]}}
CURVES = {  # val loss before the final point, at STEPS[:-1]
    "dense": {"text": [5, 2.0, 1.5, 1.3], "image": [5, 1.8, 1.2, 0.95]},
    "mot": {"text": [5, 1.8, 1.3, 1.15], "image": [5, 1.5, 1.0, 0.85]},
    "mot-shared_attn": {"text": [5, 2.1, 1.6, 1.4], "image": [5, 1.6, 1.1, 0.95]},
}


def make_study(tmp_path, setting, modalities, runs, finals, curves, mixture=None, roles=None, claims=None):
    """A study whose runs have logged curves and metrics.json; `runs` = config of each run (seeds included).
    A mixture with text_only rows adds the val/loss_text_only curve (finals and curves then hold "text_only")."""
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["results_dir"] = str(tmp_path / "results")
    config["eval"]["over_training"]["runs"] = []
    config["settings"] = {setting: {"modalities": modalities, "runs": runs}}
    if roles:
        config["settings"][setting]["roles"] = roles
    config["claims"] = claims or []
    if mixture:
        config["settings"][setting]["sequences"] = {"mixture": mixture}
        modalities = modalities + ["text_only"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    config = load_config([path])
    init_store(config["results_dir"], config["study"], [setting])
    paths = StudyPaths.from_config(config)
    for base in finals:
        seeds = runs[base].get("seeds", config["seeds"])
        for i, seed in enumerate(seeds):
            name = base if len(seeds) == 1 else f"{base}-s{seed}"
            logger = RunLogger.start_or_resume(config["results_dir"], f"smoke/{setting}", name,
                                               paths.run_id_file(setting, name), {"seed": str(seed)}, {})
            final = {m: finals[base][m][i] for m in modalities}
            for j, step in enumerate(STEPS):
                logger.log_metrics({**{f"val/loss_{m}": (curves[base][m] + [final[m]])[j] for m in modalities},
                                    "val/cum_flops": step * 1e9, "val/wall_clock_s": step * 0.5}, step)
            logger.log_metrics({"eval/cider": 0.5 + seed * 0.1, "eval/fid": 2.0}, 400)
            logger.finish()
            eval_dir = paths.eval_dir(setting, name)
            eval_dir.mkdir(parents=True)
            (eval_dir / "metrics.json").write_text(json.dumps(
                {"step": 400, **{f"val/loss_{m}": v for m, v in final.items()}, "eval/cider": 0.5 + seed * 0.1}))
    return config, paths


@pytest.fixture
def study(tmp_path):
    runs = {"dense": {"untie": [], "seeds": [0, 1, 2]}, "mot": {"untie": ["attn", "ffn", "norm"], "seeds": [0, 1, 2]},
            "mot-shared_attn": {"untie": ["ffn", "norm"]}, "crashed": {"untie": ["ffn"]}}
    return make_study(tmp_path, "chameleon", ["text", "image"], runs, FINAL, CURVES)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def crossing(before: float, after: float, target: float) -> float:
    """Step at which a curve going from `before` (step 300) to `after` (step 400) reaches `target`."""
    return 300 + (before - target) / (before - after) * 100


def comparisons_by(out):
    return {(r["run"], r["reference"], r["loss"]): r for r in read_csv(out / "comparisons.csv")}


def test_paired_comparisons_with_intervals_and_holm(study):
    config, paths = study
    report_md = report(config, "chameleon")
    out = paths.report_dir("chameleon")
    rows = comparisons_by(out)
    tested = [r for r in rows.values() if r["p"] != ""]
    for m, beyond in (("text", "yes"), ("image", "no")):
        mot, dense = FINAL["mot"][m], FINAL["dense"][m]
        d = [a - b for a, b in zip(mot, dense)]
        half = stats.t.ppf(0.975, 2) * statistics.stdev(d) / 3 ** 0.5
        row = rows["mot", "dense", m]
        assert row["method"] == "paired" and row["n"] == "3"
        assert float(row["delta"]) == pytest.approx(statistics.mean(d))
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((statistics.mean(d) - half,
                                                                               statistics.mean(d) + half))
        p = stats.ttest_rel(mot, dense).pvalue
        assert float(row["p"]) == pytest.approx(p, rel=1e-9)
        assert float(row["rho"]) == pytest.approx(stats.pearsonr(mot, dense).statistic)
        assert float(row["effect_size"]) == pytest.approx(statistics.mean(d) / statistics.stdev(d))
        # Holm over the whole table: p times the number of tested p-values at or below it, never below an earlier one
        ranked = sorted(float(r["p"]) for r in tested)
        k = ranked.index(float(row["p"]))
        expected = max(min(1.0, (len(ranked) - i) * ranked[i]) for i in range(k + 1))
        assert float(row["p_holm"]) == pytest.approx(expected)
        assert row["differs_p"] == beyond
        assert row["status"] == "exploratory"  # nothing declared in this study
        # the whole split (metrics.json) beside it: the same numbers here
        assert float(row["whole_delta"]) == pytest.approx(statistics.mean(d))
    one = rows["mot-shared_attn", "dense", "text"]  # one seed: a difference, no interval, no test
    assert float(one["delta"]) == pytest.approx(1.3 - statistics.mean(FINAL["dense"]["text"]))
    assert one["p"] == one["p_holm"] == one["ci_low"] == "" and one["status"] == "exploratory (one seed)"
    assert ("dense", "dense", "text") not in rows  # never against itself
    assert ("dense", "mot", "image") not in rows  # nor twice: dense vs mot is mot vs dense, one test in the family
    assert len(tested) == 2  # mot vs dense per loss (mot-shared_attn: one seed, untested; dense vs mot: the same test)


    final = {r["run"]: r for r in read_csv(out / "final_metrics.csv")}
    assert float(final["mot"]["curve/loss_text"]) == pytest.approx(statistics.mean(FINAL["mot"]["text"]))
    assert float(final["mot"]["val/loss_text_std"]) == pytest.approx(statistics.stdev(FINAL["mot"]["text"]))
    assert final["mot-shared_attn"]["val/loss_text_std"] == ""
    for table in ("final_metrics", "comparisons", "speedup"):
        assert "± 0.0000" not in (out / f"{table}.md").read_text(), table

    text = report_md.read_text()
    assert text.index("## Declared claims") < text.index("## Headline") < text.index("## Comparisons")
    assert "No claims are declared for this setting" in text
    assert "Seeds per run: dense 3, mot 3, mot-shared_attn 1" in text
    headline = text.split("## Headline")[1].split("##")[0]
    assert re.search(r"- text: Δ = -0\.03\d+ \[.*paired, 3 seeds, ρ = .*Holm p = .*beyond seed noise", headline)
    assert re.search(r"- image: .*not detected.*no evidence of no gain", headline)
    assert "reached" not in text  # a count of seeds crossing the target is no evidence: not shown
    assert "## Missing runs" in text and "No evaluation (failed or not run): crashed" in text


def test_speedup_counts_every_seed_with_an_interval(study):
    config, paths = study
    report(config, "chameleon")
    out = paths.report_dir("chameleon")
    speedup = {(r["run"], r["loss"]): r for r in read_csv(out / "speedup.csv")}
    dense, mot = FINAL["dense"]["text"], FINAL["mot"]["text"]
    paired = [crossing(1.15, mot[s], dense[s]) / 400 for s in range(3)]
    row = speedup["mot", "text"]
    assert (row["seeds"], row["paired_seeds"], row["beyond_end"]) == ("3", "3", "0")
    assert float(row["steps_frac"]) == pytest.approx(statistics.mean(paired))
    half = stats.t.ppf(0.975, 2) * statistics.stdev(paired) / 3 ** 0.5
    assert float(row["steps_frac_ci_high"]) == pytest.approx(statistics.mean(paired) + half)
    assert float(row["p"]) == pytest.approx(stats.ttest_1samp(paired, 1.0).pvalue)
    vs_mean = [crossing(1.15, mot[s], statistics.mean(dense)) / 400 for s in range(3)]
    assert float(row["steps_frac_vs_mean"]) == pytest.approx(statistics.mean(vs_mean))
    assert float(row["paper_steps_frac"]) == pytest.approx(0.558)
    # image: seeds 1 and 2 of mot end above their dense's final loss; they count, by relative speed: mot's 400
    # steps over the step at which dense (same seed) reached mot's final loss (between 0.95 at 300 and its final)
    dense_i, mot_i = FINAL["dense"]["image"], FINAL["mot"]["image"]
    expected = [crossing(0.85, mot_i[0], dense_i[0]) / 400] + [400 / crossing(0.95, dense_i[s], mot_i[s])
                                                                for s in (1, 2)]
    row = speedup["mot", "image"]
    assert row["beyond_end"] == "2" and float(row["steps_frac"]) == pytest.approx(statistics.mean(expected))
    assert [float(v) for v in row["steps_frac_seeds"].split(";")] == pytest.approx(expected, abs=5e-4)
    assert expected[1] > 1 and expected[2] > 1
    # one seed, paired with dense-s0: a fraction without an interval or a test
    row = speedup["mot-shared_attn", "image"]
    assert float(row["steps_frac"]) == pytest.approx(crossing(0.95, 0.80, FINAL["dense"]["image"][0]) / 400)
    assert row["steps_frac_ci_low"] == row["p"] == "" and row["status"] == "exploratory (one seed)"


def test_figures_and_mlflow_runs(study):
    config, paths = study
    report_md = report(config, "chameleon")
    out = paths.report_dir("chameleon")
    text = report_md.read_text()
    for figure in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (out / figure).stat().st_size > 1000, figure
    assert len(re.findall(r"\]\(figures/", text)) >= 2 * 3 + 1  # 2 modalities x 3 axes + final-loss bars
    # no merge runs in this setting: no section, an empty table (the HTML report lists it for every setting)
    assert "## Leave-one-modality-out" not in text and read_csv(out / "merges.csv") == []

    client = MlflowClient(tracking_uri=f"sqlite:///{paths.results_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke/chameleon").experiment_id
    parent = client.get_run((out / "mlflow_run_id").read_text().strip())
    p_image = stats.ttest_rel(FINAL["mot"]["image"], FINAL["dense"]["image"]).pvalue
    assert parent.data.metrics["signif/p_loss_image"] == pytest.approx(p_image)
    assert "signif/p_holm_loss_image" in parent.data.metrics and "signif/rho_loss_text" in parent.data.metrics
    assert "speedup/steps_frac_text" in parent.data.metrics and "speedup/steps_frac_image" in parent.data.metrics
    assert parent.data.tags["differs_from_dense_text"] == "yes"
    assert parent.data.tags["differs_from_dense_image"] == "no"
    assert parent.data.tags["seeds"] == "dense:3,mot:3,mot-shared_attn:1"
    assert parent.data.tags["missing_runs"] == "crashed"
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    about = {c.data.tags["about_run"]: c.data for c in children}
    assert set(about) == {"dense", "mot", "mot-shared_attn"}
    mot = about["mot"].metrics
    assert mot["final/loss_text"] == pytest.approx(statistics.mean(FINAL["mot"]["text"]))
    assert mot["final/loss_text_std"] == pytest.approx(statistics.stdev(FINAL["mot"]["text"]))
    assert mot["signif/p_loss_image"] == pytest.approx(p_image)
    assert "speedup/steps_frac_text_vs_mean_dense" in mot and "speedup/steps_frac_text_ci_low" in mot
    shared = about["mot-shared_attn"]
    assert "signif/p_loss_text" not in shared.metrics and "final/loss_text_std" not in shared.metrics
    assert shared.tags["differs_from_dense_text"] == "untested (one seed)"
    assert about["dense"].metrics["final/loss_image_std"] == pytest.approx(statistics.stdev(FINAL["dense"]["image"]))

    # a rerun replaces the report runs instead of adding to them
    report(config, "chameleon")
    assert len(client.search_runs([experiment], filter_string="tags.arch = 'report'")) == 1 + 3


def test_seed_bands_are_drawn_only_with_several_seeds():
    fig, ax = plt.subplots()
    steps = [0.0, 1.0, 2.0]
    band(ax, "one", [steps], [[3.0, 2.0, 1.0]], emphasis=False)
    assert len(ax.collections) == 0 and ax.get_lines()[-1].get_label() == "one"
    band(ax, "three", [steps] * 3, [[3.0, 2.0, 1.0], [3.1, 2.1, 1.1], [2.9, 1.9, 0.9]], emphasis=False)
    assert len(ax.collections) == 1 and ax.get_lines()[-1].get_label() == "three (3 seeds, ± 1 sd)"
    plt.close(fig)


MERGE_FINAL = {"dense": {"text": [1.10, 1.12], "image": [0.90, 0.92], "speech": [2.00, 2.02]},
               "mot": {"text": [1.00, 1.01], "image": [0.80, 0.82], "speech": [1.80, 1.81]},
               "merge-text_image": {"text": [1.05, 1.07], "image": [0.84, 0.85], "speech": [1.80, 1.82]},
               "merge-image_speech": {"text": [1.02], "image": [0.83], "speech": [1.90]}}
MERGE_CURVES = {run: {"text": [5, 2.0, 1.5, 1.2], "image": [5, 1.8, 1.2, 1.0], "speech": [6, 3.0, 2.5, 2.1]}
                for run in MERGE_FINAL}


def test_leave_one_modality_out_table_for_three_modalities(tmp_path):
    modalities = ["text", "image", "speech"]
    runs = {"dense": {"untie": [], "seeds": [0, 1]}, "mot": {"untie": ["attn", "ffn", "norm"], "seeds": [0, 1]},
            "merge-text_image": {"untie": ["attn", "ffn", "norm"], "groups": [["text", "image"], ["speech"]],
                                 "seeds": [0, 1]},
            "merge-image_speech": {"untie": ["attn", "ffn", "norm"], "groups": [["text"], ["image", "speech"]]}}
    config, paths = make_study(tmp_path, "chameleon_speech", modalities, runs, MERGE_FINAL, MERGE_CURVES)
    report_md = report(config, "chameleon_speech")
    out = paths.report_dir("chameleon_speech")
    merges = {(r["modality"], r["run"]): r for r in read_csv(out / "merges.csv")}
    assert {run for _, run in merges} == {"mot", "dense", "merge-text_image", "merge-image_speech"}
    assert {m for m, _ in merges} == set(modalities)
    for m in modalities:
        merged, mot, dense = (MERGE_FINAL[r][m] for r in ("merge-text_image", "mot", "dense"))
        row = merges[m, "merge-text_image"]
        assert row["parameter_sets"] == "text+image / speech"
        assert merges[m, "dense"]["parameter_sets"] == "text+image+speech"
        assert float(row["val_loss"]) == pytest.approx(statistics.mean(merged))
        assert float(row["val_loss_std"]) == pytest.approx(statistics.stdev(merged))
        assert float(row["vs_headline_delta"]) == pytest.approx(statistics.mean(merged) - statistics.mean(mot))
        assert float(row["vs_baseline_delta"]) == pytest.approx(statistics.mean(merged) - statistics.mean(dense))
        assert float(row["vs_headline_p"]) == pytest.approx(stats.ttest_rel(merged, mot).pvalue)  # 2 common seeds
        assert row["vs_headline_method"] == "paired" and row["vs_headline_p_holm"] != ""
        single = merges[m, "merge-image_speech"]  # one seed: a difference, but no std and no test
        assert float(single["vs_headline_delta"]) == pytest.approx(
            MERGE_FINAL["merge-image_speech"][m][0] - statistics.mean(mot))
        assert single["val_loss_std"] == single["vs_headline_p"] == single["differs_vs_headline_p"] == ""
        assert merges[m, "mot"]["vs_headline_delta"] == "" and merges[m, "mot"]["vs_headline_p"] == ""
    assert "± 0.0000" not in (out / "merges.md").read_text()

    text = report_md.read_text()
    assert "## Leave-one-modality-out" in text and "figures/merges_val_loss_vs_mot.png" in text
    assert (out / "figures" / "merges_val_loss_vs_mot.png").stat().st_size > 1000
    assert len(re.findall(r"\]\(figures/val_loss_", text)) == 3 * 3  # every modality on every axis
    speedup = {(r["run"], r["loss"]): r for r in read_csv(out / "speedup.csv")}
    assert float(speedup["mot", "speech"]["paper_steps_frac"]) == pytest.approx(0.372)
    assert speedup["mot", "text"]["paper_steps_frac"] == ""  # the paper gives speech's alone in this setting
    client = MlflowClient(tracking_uri=f"sqlite:///{paths.results_dir / 'mlflow.db'}")
    parent = client.get_run((out / "mlflow_run_id").read_text().strip())
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    merged = next(c for c in children if c.data.tags["about_run"] == "merge-text_image").data.metrics
    assert merged["signif/p_loss_speech_vs_mot"] == pytest.approx(
        stats.ttest_rel(MERGE_FINAL["merge-text_image"]["speech"], MERGE_FINAL["mot"]["speech"]).pvalue)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/merges.csv", "report/merges.md"} <= artifacts


def test_paper_values_of_the_headline_comparison_come_from_each_settings_objective():
    config = load_config([REPO / "configs" / "pipeline.yaml"])
    assert paper_value(config, "chameleon_speech", "speech", "steps_frac") == pytest.approx(0.372)
    assert paper_value(config, "transfusion", "image", "flops_frac") == pytest.approx(1 / 3)
    assert paper_value(config, "chameleon", "image", "time_frac") == pytest.approx(0.472)
    assert paper_value(config, "chameleon_speech", "image", "steps_frac") is None


def test_size_sweep_table_and_plot_on_hand_made_curves(tmp_path):
    """Two sizes of dense and mot (2 seeds each): each mot is compared with the dense of its own size; the
    fraction is the hand-computed crossing; the plot and table exist; a one-size setting has no sweep rows."""
    runs = {"dense": {"arch": "dense", "untie": [], "seeds": [0, 1]},
            "mot": {"arch": "mot", "untie": ["attn", "ffn", "norm"], "seeds": [0, 1]},
            "dense-d64": {"arch": "dense", "untie": [], "seeds": [0, 1], "model": {"d_model": 64}},
            "mot-d64": {"arch": "mot", "untie": ["attn", "ffn", "norm"], "seeds": [0, 1], "model": {"d_model": 64}}}
    finals = {"dense": {"text": [1.30, 1.32]}, "mot": {"text": [1.20, 1.21]},
              "dense-d64": {"text": [1.50, 1.52]}, "mot-d64": {"text": [1.49, 1.53]}}
    curves = {"dense": {"text": [5, 2.0, 1.6, 1.4]}, "mot": {"text": [5, 1.8, 1.35, 1.25]},
              "dense-d64": {"text": [5, 2.2, 1.8, 1.6]}, "mot-d64": {"text": [5, 2.2, 1.8, 1.6]}}
    for run in finals:  # the image curves: the text ones (only text is checked)
        finals[run]["image"], curves[run]["image"] = finals[run]["text"], curves[run]["text"]
    config, paths = make_study(tmp_path, "chameleon", ["text", "image"], runs, finals, curves)
    rows = {r["size"]: r for r in size_sweep_rows(SettingResults(config, "chameleon")) if r["loss"] == "text"}
    assert set(rows) == {"d32 L2", "d64 L2"}  # smoke.yaml's d_model 32 and the d64 override
    big, small = rows["d64 L2"], rows["d32 L2"]
    assert big["non_embedding_dense"] > small["non_embedding_dense"]
    # d32: mot (seed s) reaches dense-s's final 1.30 / 1.32 between steps 200 (1.35) and 300 (1.25)
    expected = [(200 + (1.35 - 1.30) / (1.35 - 1.25) * 100) / 400, (200 + (1.35 - 1.32) / (1.35 - 1.25) * 100) / 400]
    assert small["steps_frac"] == pytest.approx(statistics.mean(expected))
    half = stats.t.ppf(0.975, 1) * statistics.stdev(expected) / 2 ** 0.5
    assert small["steps_frac_ci_low"] == pytest.approx(statistics.mean(expected) - half)
    # d64: mot-d64 equals dense-d64 until the end; seed 1 ends just above dense's final 1.52: it counts, by relative
    # speed (400 steps over dense's crossing of 1.53 between 1.6 at step 300 and 1.52 at 400), not dropped
    assert big["steps_frac_seeds"] == f"{crossing(1.6, 1.49, 1.50) / 400:.3f};{400 / crossing(1.6, 1.52, 1.53):.3f}"
    assert float(big["p"]) == pytest.approx(stats.ttest_rel([1.49, 1.53], [1.50, 1.52]).pvalue)
    report(config, "chameleon")
    out = paths.report_dir("chameleon")
    assert (out / "figures" / "speedup_vs_size.png").stat().st_size > 1000
    assert len(read_csv(out / "size_sweep.csv")) == 4  # 2 sizes x 2 modalities
    assert "## Size sweep" in (out / "report.md").read_text()


def test_tiny_scaling_config_is_a_three_size_sweep_of_dense_and_mot():
    from evaluation.scaling import size_pairs
    from mot.config import run_specs

    config = load_config([REPO / "configs" / "experiments" / "tiny_scaling.yaml"])
    pairs = size_pairs(run_specs(config, "chameleon"))
    assert [(dense, mot) for dense, mot, _ in pairs] == [("dense-d64", "mot-d64"), ("dense", "mot"),
                                                         ("dense-d256", "mot-d256")]


def test_a_mixture_with_text_only_rows_reports_their_speedup_and_significance(tmp_path):
    """val/loss_text_only (the text-only val rows) is a curve like a modality's: its speed-up against dense and its
    Welch p are in the tables, the headline and the nested MLflow runs."""
    finals = {"dense": {**FINAL["dense"], "text_only": [1.11, 1.12, 1.10]},
              "mot": {**FINAL["mot"], "text_only": [1.07, 1.06, 1.08]}}
    curves = {"dense": {**CURVES["dense"], "text_only": [5, 2.0, 1.4, 1.2]},
              "mot": {**CURVES["mot"], "text_only": [5, 1.9, 1.3, 1.10]}}
    runs = {"dense": {"untie": [], "seeds": [0, 1, 2]}, "mot": {"untie": ["attn", "ffn", "norm"], "seeds": [0, 1, 2]}}
    config, paths = make_study(tmp_path, "chameleon", ["text", "image"], runs, finals, curves,
                               mixture={"image_text": 0.6, "text_only": 0.4})
    report(config, "chameleon")
    out = paths.report_dir("chameleon")

    row = next(r for r in read_csv(out / "speedup.csv") if r["loss"] == "text_only")
    target = statistics.mean(finals["dense"]["text_only"])

    def first_crossing(values, target):  # linear between evaluation points, as the report interpolates
        for (s0, v0), (s1, v1) in zip(zip(STEPS, values), zip(STEPS[1:], values[1:])):
            if v1 <= target:
                return s0 + (v0 - target) / (v0 - v1) * (s1 - s0)

    expected = [first_crossing(curves["mot"]["text_only"] + [final], dense) / 400
                for final, dense in zip(finals["mot"]["text_only"], finals["dense"]["text_only"])]
    assert expected[0] == pytest.approx(0.7375)  # seed 0: dense ends at 1.11, mot passes it between steps 200 and 300
    assert row["beyond_end"] == "0" and float(row["target_loss"]) == pytest.approx(target)
    assert float(row["steps_frac"]) == pytest.approx(statistics.mean(expected))
    paired = stats.ttest_rel(finals["mot"]["text_only"], finals["dense"]["text_only"]).pvalue
    assert float(comparisons_by(out)["mot", "dense", "text_only"]["p"]) == pytest.approx(paired)
    assert "- text_only: Δ = " in (out / "report.md").read_text()
    assert (out / "figures" / "val_loss_text_only_vs_step.png").exists()


def test_roles_not_names_decide_the_comparisons_and_claims_open_the_report(tmp_path):
    """Runs named `base` and `untied` with roles baseline/headline: every table compares with them as it would
    with dense/mot; the declared claims are judged first thing in report.md; a report after an earlier look at
    fewer seeds says so."""
    runs = {"base": {"untie": [], "seeds": [0, 1, 2]}, "untied": {"untie": ["attn", "ffn", "norm"], "seeds": [0, 1, 2]}}
    finals = {"base": FINAL["dense"], "untied": FINAL["mot"]}
    curves = {"base": CURVES["dense"], "untied": CURVES["mot"]}
    claims = [{"setting": "chameleon", "loss": "text", "metric": "steps_frac", "less_than": 1.0, "seeds": 3},
              {"setting": "chameleon", "loss": "image", "metric": "delta", "less_than": 0.0, "seeds": 2}]
    config, paths = make_study(tmp_path, "chameleon", ["text", "image"], runs, finals, curves,
                               roles={"baseline": "base", "headline": "untied"}, claims=claims)
    out = paths.report_dir("chameleon")
    out.mkdir(parents=True, exist_ok=True)
    (out / "looks.json").write_text('[{"seeds": {"base": 2, "untied": 2}}]')  # an earlier report saw 2 seeds
    text = report(config, "chameleon").read_text()

    rows = comparisons_by(out)
    assert set(rows) == {("untied", "base", m) for m in ("text", "image")}
    assert float(rows["untied", "base", "text"]["p"]) == pytest.approx(
        stats.ttest_rel(FINAL["mot"]["text"], FINAL["dense"]["text"]).pvalue)
    assert rows["untied", "base", "image"]["status"] == "declared: chameleon/untied-vs-base/image/delta"
    speedup = {(r["run"], r["loss"]): r for r in read_csv(out / "speedup.csv")}
    assert speedup["untied", "text"]["status"] == "declared: chameleon/untied-vs-base/text/steps_frac"

    verdicts = {r["claim"]: r for r in read_csv(out / "claims.csv")}
    text_claim = verdicts["chameleon/untied-vs-base/text/steps_frac"]
    paired = [crossing(1.15, m, d) / 400 for m, d in zip(FINAL["mot"]["text"], FINAL["dense"]["text"])]
    assert float(text_claim["estimate"]) == pytest.approx(statistics.mean(paired))
    assert float(text_claim["p"]) == pytest.approx(stats.ttest_1samp(paired, 1.0, alternative="less").pvalue)
    assert text_claim["verdict"] == "supported"
    image_claim = verdicts["chameleon/untied-vs-base/image/delta"]  # declared with 2 seeds: tested on the first 2
    d = [m - b for m, b in zip(FINAL["mot"]["image"][:2], FINAL["dense"]["image"][:2])]
    assert image_claim["n"] == "2" and float(image_claim["estimate"]) == pytest.approx(statistics.mean(d))
    assert image_claim["verdict"] == "inconclusive" and float(image_claim["detectable_effect"]) > 0
    assert "3 seeds present, 2 declared" in image_claim["notes"]
    assert "seeds were added after an earlier report" in text_claim["notes"]

    assert text.splitlines()[2] == "## Declared claims and their verdicts"
    claims_part = text.split("## Declared claims and their verdicts")[1].split("## Headline")[0]
    assert "**supported**: untied vs base, text, steps_frac < 1" in claims_part
    assert "**inconclusive**: untied vs base, image, Δ final loss < 0" in claims_part
    assert "## Headline: untied vs base" in text and "Earlier reports of this study saw other seed counts" in text
    assert (out / "figures" / "val_loss_text_vs_step.png").exists()


def test_the_headline_says_apart_a_one_sided_raw_interval_that_holm_does_not_carry():
    from evaluation.publish import holm_verdict
    row = {"p_holm": 0.64, "ci_low": 0.0009, "ci_high": 0.0116}  # tiny_lr's image: raw p 0.038, Holm over 30
    text = holm_verdict(row, "[+0.0009, +0.0116]", "mot", 30)
    assert "not detected after Holm" in text and "mot is worse" in text and "no evidence of no gain" not in text
    assert "mot is better" in holm_verdict({**row, "ci_low": -0.02, "ci_high": -0.001}, "[]", "mot", 30)
    assert "no evidence of no gain" in holm_verdict({**row, "ci_low": -0.01}, "[]", "mot", 30)
    assert holm_verdict({**row, "p_holm": 0.01}, "[]", "mot", 30) == "**beyond seed noise**"
