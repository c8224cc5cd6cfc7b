"""The real DAG on configs/smoke.yaml, end to end, into a real MLflow store; then what a rerun plans on it."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import OFFLINE, REPO, snakemake


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The smoke study run once for this module, end to end and offline: (its config file, snakemake's result)."""
    root = tmp_path_factory.mktemp("smoke")
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["results_dir"] = str(root / "results")
    path = root / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, snakemake("--cores", "2", "--configfile", str(path), timeout=900, offline=True)


def finished_config(finished) -> Path:
    path, result = finished
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return path


def planned_jobs(*config_files: Path) -> dict[str, int]:
    """Job counts of `snakemake -n` (its "Job stats" table), {} when nothing is to be done."""
    result = snakemake("-n", "--cores", "2", "--configfile", *map(str, config_files))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {p[0]: int(p[1]) for p in (line.split() for line in table.splitlines()) if len(p) == 2 and p[1].isdigit()}


def variant(config_file: Path, name: str, change=None, dump=yaml.safe_dump) -> Path:
    """The finished study's config with `change(config)` applied, written to another file."""
    config = yaml.safe_load(config_file.read_text())
    if change:
        change(config)
    path = config_file.parent / "variants" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(dump(config))
    return path


def test_the_offline_guard_blocks_the_network():
    env = {**os.environ, "PYTHONPATH": str(OFFLINE)}
    code = "import socket; socket.create_connection(('pypi.org', 443), timeout=1)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "network access blocked" in result.stderr


@dataclass(frozen=True)
class Study:
    """The finished smoke study: its config, its files and its MLflow store."""
    config: dict
    config_file: Path
    root: Path  # results/{study}
    client: MlflowClient

    def runs(self, setting: str) -> dict:
        """run name -> MLflow run, in the experiment {study}/{setting}."""
        experiment = self.client.get_experiment_by_name(f"{self.config['study']}/{setting}")
        return {r.info.run_name: r for r in self.client.search_runs([experiment.experiment_id])}


@pytest.fixture(scope="module")
def study(finished) -> Study:
    config_file = finished_config(finished)
    config, results = yaml.safe_load(config_file.read_text()), config_file.parent / "results"
    return Study(config, config_file, results / config["study"],
                 MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}"))


@pytest.mark.slow
def test_smoke_study_runs_end_to_end_offline(finished):
    finished_config(finished)


@pytest.mark.slow
def test_chameleon_runs_and_report_log_into_the_settings_experiment(study):
    experiment = study.client.get_experiment_by_name(f"{study.config['study']}/chameleon")
    assert {"dense", "mot", "moe4x", "report"} <= set(study.runs("chameleon"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on these runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "mot"])
def test_a_chameleon_run_logs_its_tags_params_and_metrics_over_training(study, name):
    run = study.runs("chameleon")[name]
    assert run.data.tags["setting"] == "chameleon" and run.data.tags["arch"] == name
    assert {"seed", "ablation", "git_commit"} <= set(run.data.tags)
    assert run.data.params["model.d_model"] == "32"
    for key in ("val/loss_text", "val/loss_image", "eval/cider", "eval/cider_constant", "eval/fid",
                "eval/fid_random", "eval/clip_score", "eval/clip_score_shuffled",
                "perf/tokens_per_s", "perf/flops_per_token", "train/loss_text", "train/loss_image"):
        assert key in run.data.metrics, key
    assert run.data.params["eval.fid_extractor"] == "tiny_clip"
    for key in ("eval/cider", "eval/fid", "eval/clip_score"):  # measured over training, at snapshot steps
        assert [m.step for m in study.client.get_metric_history(run.info.run_id, key)] == [10, 20, 30], key
    history = study.client.get_metric_history(run.info.run_id, "val/loss_image")
    assert [m.step for m in history] == [0, 10, 20, 30]  # step 0 + every eval_every, no duplicates
    assert history[-1].value < history[0].value  # it learns


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "mot"])
def test_a_chameleon_runs_eval_files_match_its_mlflow_run(study, name):
    run = study.runs("chameleon")[name]
    eval_dir = study.root / "chameleon" / name / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["eval/cider"] == pytest.approx(run.data.metrics["eval/cider"])
    predictions = json.loads((eval_dir / "captions_pred.json").read_text())
    references = json.loads((eval_dir / "captions_ref.json").read_text())
    assert len(predictions) == study.config["eval"]["caption_images"]
    assert len(list((eval_dir / "images" / "final").glob("*.png"))) == study.config["eval"]["images"]["n"]
    assert (eval_dir / "images" / "grid_step0000030.png").stat().st_size > 1000
    assert {p["image_id"] for p in predictions} == {i["id"] for i in references["images"]}
    assert (study.root / "chameleon" / name / "train" / "mlflow_run_id").read_text().strip() == run.info.run_id


@pytest.mark.slow
def test_the_chameleon_report_has_its_speedup_table_and_figures(study):
    report = study.root / "chameleon" / "report"
    assert "| mot | dense | image |" in (report / "speedup.md").read_text()
    for png in ("val_loss_image_vs_step.png", "val_loss_text_vs_flops.png"):
        assert (report / "figures" / png).stat().st_size > 1000
    assert ("speedup/steps_frac_image" in study.runs("chameleon")["report"].data.metrics
            or "not reached" in (report / "speedup.md").read_text())


@pytest.mark.slow
def test_data_tokenizer_and_reference_stages_log_into_the_data_experiment(study):
    config = study.config
    stages = {name: run.data.metrics for name, run in study.runs("data").items()}
    settings = ("chameleon", "chameleon_speech", "transfusion")
    assert set(stages) == {"data", "tokenizers", "tokenize", "clip", "fid_reference", "speech_data",
                           "speech_units", "image_vae", *(f"fid_random_{setting}" for setting in settings)}
    assert stages["data"]["data/train_samples"] == config["data"]["synthetic"]["n_train"]
    assert stages["data"]["data/train_bad"] == 0
    assert {"vq/recon_mse", "vq/perplexity", "vq/codebook_usage"} <= set(stages["tokenizers"])
    assert {"clip/image_to_text_r1", "clip/score_matched", "clip/score_shuffled"} <= set(stages["clip"])
    for setting in settings:  # images from random tokenizer inputs are farther from the data than real images
        assert stages[f"fid_random_{setting}"]["fid/random"] > stages["fid_reference"]["fid/real_subset"]

    assert stages["speech_data"]["speech_data/train_samples"] == config["data"]["synthetic"]["n_train"]
    assert stages["speech_units"]["speech/train_unit_usage"] >= 0.8  # most of the codebook in use
    assert stages["image_vae"]["vae_final/recon_mse"] < 0.1 and "vae_final/scaling_factor" in stages["image_vae"]


@pytest.mark.slow
@pytest.mark.parametrize("setting,modalities", [("transfusion", ("text", "image")),
                                                ("chameleon_speech", ("text", "image", "speech"))],
                         ids=["transfusion", "chameleon_speech"])
def test_transfusion_and_chameleon_speech_log_every_modalitys_loss_and_the_eval_metrics(study, setting, modalities):
    setting_runs = study.runs(setting)  # their own experiments
    assert set(study.config["settings"][setting]["runs"]) | {"report"} <= set(setting_runs), setting
    for name in study.config["settings"][setting]["runs"]:
        metrics = setting_runs[name].data.metrics
        for key in [f"val/loss_{m}" for m in modalities] + ["eval/cider", "eval/fid", "eval/clip_score"]:
            assert key in metrics, (setting, name, key)
        history = study.client.get_metric_history(setting_runs[name].info.run_id, "val/loss_image")
        assert history[-1].value < history[0].value, (setting, name)  # the image loss (diffusion or codes) falls
    assert (study.root / setting / "report" / "speedup.md").exists()


@pytest.mark.slow
def test_the_chameleon_speech_report_lists_the_leave_one_out_merges(study):
    assert "merge-image_speech" in (study.root / "chameleon_speech" / "report" / "merges.md").read_text()


@pytest.mark.slow
def test_moe4x_load_balancing_keeps_every_expert_busy(study):
    # >= 10% of the tokens per expert at the last log step
    moe = study.runs("chameleon")["moe4x"]
    loads = [moe.data.metrics[f"moe/load_expert{e}"] for e in range(4)]
    assert sum(loads) == pytest.approx(1.0) and min(loads) >= 0.10, loads


@pytest.mark.slow
def test_snakemake_report_is_one_html_page_with_every_figure_and_table(study):
    html = study.config_file.parent / "report.html"
    made = snakemake("--report", str(html), "--configfile", str(study.config_file))
    assert made.returncode == 0, made.stderr[-2000:]
    page = html.read_text()
    for name in ("val_loss_image_vs_step.png", "val_loss_text_vs_time.png", "speedup.csv", "comparisons.csv", "claims.csv"):
        assert name in page, name


def _reversed_keys(node):
    return {k: _reversed_keys(v) for k, v in reversed(node.items())} if isinstance(node, dict) else node


@pytest.mark.slow
def test_the_same_config_in_another_key_order_or_another_file_plans_nothing(finished):
    config_file = finished_config(finished)
    assert planned_jobs(config_file) == {}
    assert planned_jobs(variant(config_file, "copy.yaml")) == {}  # the config path is in no rerun trigger
    reordered = variant(config_file, "reordered.yaml",
                        dump=lambda config: yaml.safe_dump(_reversed_keys(config), sort_keys=False))
    assert reordered.read_text() != config_file.read_text()
    assert planned_jobs(reordered) == {}
    spelled_out = variant(config_file, "defaults.yaml",
                          lambda config: config["eval"]["clip"].update(context_length=40, seed=0))
    assert planned_jobs(spelled_out) == {}  # fingerprints hash the resolved config: a default written out is no change


@pytest.mark.slow
def test_changing_one_runs_config_plans_only_its_training_evaluation_and_the_report(finished):
    config_file = finished_config(finished)
    changed = variant(config_file, "mot_lr.yaml",
                      lambda config: config["settings"]["chameleon"]["runs"]["mot"].update(train={"lr": 5.0e-4}))
    assert planned_jobs(changed) == {"train": 1, "evaluate": 1, "report": 1, "all": 1, "total": 4}
    plan = snakemake("-n", "--cores", "2", "--configfile", str(changed)).stdout
    assert "chameleon/mot/train/final.pt" in plan and "chameleon/dense/train/final.pt" not in plan


@pytest.mark.slow
def test_changing_the_clip_config_refits_clip_and_re_evaluates_with_nothing_upstream(finished):
    config_file = finished_config(finished)
    changed = variant(config_file, "clip.yaml", lambda config: config["eval"]["clip"].update(steps=20))
    # every FID floor is re-measured with the new features and every run of the 3 settings re-evaluated; no data,
    # tokenizers, tokens or training
    assert planned_jobs(changed) == {"fit_clip": 1, "fid_reference": 1, "fid_random": 3, "evaluate": 8, "report": 3,
                                     "all": 1, "total": 17}


@pytest.mark.slow
def test_a_sampler_sweep_reproduces_the_evaluate_stage_at_the_studys_own_values_and_changes_no_run(study):
    from evaluation.sampling import main as sampling
    setting = "transfusion"
    metrics = {name: json.loads((study.root / setting / name / "eval" / "metrics.json").read_text())
               for name in ("dense", "mot")}
    before = {p: p.stat().st_mtime for p in (study.root / setting).glob("*/eval/**/*") if p.is_file()}
    scale = study.config.get("diffusion", {}).get("cfg_scale", 5.0)
    assert sampling(["--config", str(study.config_file), "--setting", setting, "--runs", "dense", "mot",
                     "--values", f"diffusion.cfg_scale={scale},1.0", "--values", "diffusion.ddim_steps=5"]) == 0
    report = study.root / setting / "report"
    with open(report / "sampling.csv") as f:
        rows = {float(r["diffusion.cfg_scale"]): r for r in csv.DictReader(f)}
    own = [metrics[n]["eval/clip_score"] for n in ("dense", "mot")]
    shuffled = [metrics[n]["eval/clip_score_shuffled"] for n in ("dense", "mot")]
    assert float(rows[scale]["clip_score"]) == pytest.approx(sum(own) / 2, rel=1e-5)
    assert float(rows[scale]["clip_score_shuffled"]) == pytest.approx(sum(shuffled) / 2, rel=1e-5)
    assert float(rows[scale]["gap"]) == pytest.approx((sum(own) - sum(shuffled)) / 2, rel=1e-5)
    fid = [metrics[n]["eval/fid"] for n in ("dense", "mot")]  # the smoke study's tiny CLIP may score 0 throughout
    assert float(rows[scale]["fid"]) == pytest.approx(sum(fid) / 2, rel=1e-5)
    assert float(rows[1.0]["fid"]) != pytest.approx(float(rows[scale]["fid"]), rel=1e-5)  # another sampler
    assert (report / "sampling" / "cfg_scale1.0_ddim_steps5" / "mot").is_dir()
    assert {p: p.stat().st_mtime for p in before} == before  # the runs' eval files are untouched


@pytest.mark.slow
def test_caption_use_measures_each_transfusion_runs_loss_with_own_shuffled_and_no_caption(study):
    from evaluation.caption_use import CAPTIONS, image_loss, main as caption_use
    from evaluation.stage import Evaluator
    from mot.config import find_run
    from mot.config.load import load_config
    assert caption_use(["--config", str(study.config_file), "--runs", "dense", "mot", "--timesteps", "100", "900",
                        "--images", "12"]) == 0
    with open(study.root / "transfusion" / "report" / "caption_use.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], int(r["t"])) for r in rows] == [("dense", 100), ("dense", 900), ("mot", 100), ("mot", 900)]
    for row in rows:
        losses = [float(row[f"loss_{c}"]) for c in CAPTIONS]
        assert all(0 < loss < 10 for loss in losses)
        assert float(row["shuffled_over_own"]) == pytest.approx(losses[1] / losses[0] - 1, rel=1e-4)
    # the padding of shorter captions in a batch changes nothing: one image at a time gives the same mean
    config = load_config([study.config_file])
    evaluator = Evaluator(config, find_run(config, "transfusion", "mot"))
    evaluator.load(evaluator.final_state)
    sequences = evaluator.objective.sequences(config["eval"]["split"], evaluator.model)
    for captions in CAPTIONS:
        batched = image_loss(evaluator.model, sequences, evaluator.objective, 100, captions, 12, 64, 0)
        single = image_loss(evaluator.model, sequences, evaluator.objective, 100, captions, 12, 1, 0)
        assert batched == pytest.approx(single, rel=1e-4)
        assert batched == pytest.approx(float([r for r in rows if (r["run"], r["t"]) == ("mot", "100")][0][f"loss_{captions}"]), rel=1e-4)
