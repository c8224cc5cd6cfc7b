"""The study report from logged curves: every run in every table, seeds as mean ± std, every
referenced figure on disk, speed-up in a report run with one nested run per compared run."""

import json
import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from evaluation.report import report
from mot.config import load_config
from mot.paths import StudyPaths
from mot.tracking import RunLogger, init_store
from tests.conftest import REPO

STEPS = [0, 100, 200, 300, 400]
CURVES = {  # per run: val loss per modality at STEPS (seed 1 = seed 0 + 0.01)
    "dense": {"text": [5, 2.0, 1.5, 1.3, 1.2], "image": [5, 1.8, 1.2, 1.0, 0.9]},
    "mot": {"text": [5, 1.8, 1.3, 1.15, 1.05], "image": [5, 1.5, 1.0, 0.85, 0.8]},
    "mot-shared_attn": {"text": [5, 2.1, 1.6, 1.4, 1.3], "image": [5, 1.6, 1.1, 0.95, 0.88]},
}


@pytest.fixture
def study(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["results_dir"] = str(tmp_path / "results")
    config["seeds"] = [0, 1]
    config["settings"]["chameleon"]["runs"] = {"dense": {"untie": []}, "mot": {"untie": ["attn", "ffn", "norm"]},
                                               "mot-shared_attn": {"untie": ["ffn", "norm"]},
                                               "crashed": {"untie": ["ffn"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    config = load_config([path])
    init_store(config["results_dir"], config["study"], ["chameleon"])
    paths = StudyPaths.from_config(config)
    for base, curves in CURVES.items():
        for seed in (0, 1):
            name = f"{base}-s{seed}"
            logger = RunLogger.start_or_resume(config["results_dir"], "smoke/chameleon", name,
                                               paths.run_id_file("chameleon", name), {"seed": str(seed)}, {})
            for i, step in enumerate(STEPS):
                logger.log_metrics({"val/loss_text": curves["text"][i] + 0.01 * seed,
                                    "val/loss_image": curves["image"][i] + 0.01 * seed,
                                    "val/cum_flops": step * 1e9, "val/wall_clock_s": step * 0.5}, step)
            logger.log_metrics({"eval/cider": 0.5 + seed * 0.1, "eval/fid": 2.0}, 400)
            logger.finish()
            eval_dir = paths.eval_dir("chameleon", name)
            eval_dir.mkdir(parents=True)
            (eval_dir / "metrics.json").write_text(json.dumps(
                {"step": 400, "val/loss_text": curves["text"][-1] + 0.01 * seed,
                 "val/loss_image": curves["image"][-1] + 0.01 * seed, "eval/cider": 0.5 + seed * 0.1}))
    return config, paths


def test_report_tables_figures_and_mlflow_runs(study):
    config, paths = study
    report_md = report(config, "chameleon")
    out = paths.report_dir("chameleon")
    text = report_md.read_text()
    for figure in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (out / figure).stat().st_size > 1000, figure
    assert len(re.findall(r"\]\(figures/", text)) >= 2 * 3 + 1  # 2 modalities x 3 axes + ablation bars
    for table in ("final_metrics", "ablations"):
        rows = (out / f"{table}.md").read_text()
        for run in CURVES:
            assert f"| {run} |" in rows, (table, run)
    assert "## Missing runs" in text and "crashed-s0, crashed-s1" in text
    # seeds: cider 0.5 and 0.6 -> mean 0.55, std 0.05
    assert "0.5500 ± 0.0500" in (out / "final_metrics.md").read_text()

    speedup = {(r.split(",")[0], r.split(",")[1]): r.split(",") for r in (out / "speedup.csv").read_text().splitlines()[1:]}
    # mot text reaches dense's final 1.2 (+0.01 per seed) between steps 200 (1.3) and 300 (1.15): 266.7 / 400
    steps_frac = float(speedup["mot", "text"][4])
    assert steps_frac == pytest.approx((200 + (1.3 - 1.2) / (1.3 - 1.15) * 100) / 400, rel=1e-6)
    assert speedup["mot-shared_attn", "text"][4] == "not reached"

    client = MlflowClient(tracking_uri=f"sqlite:///{paths.results_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke/chameleon").experiment_id
    parent = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert parent.data.metrics["speedup/steps_frac_text"] == pytest.approx(steps_frac)
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    about = {c.data.tags["about_run"]: c.data.metrics for c in children}
    assert set(about) == {"mot", "mot-shared_attn"}
    assert "speedup/steps_frac_text" not in about["mot-shared_attn"]  # not reached is never a number
    assert "speedup/steps_frac_image" in about["mot-shared_attn"]
    assert parent.data.tags["missing_runs"] == "crashed-s0,crashed-s1"

    # a rerun replaces the report runs instead of adding to them
    report(config, "chameleon")
    reports = client.search_runs([experiment], filter_string="tags.arch = 'report'")
    assert len(reports) == 3
