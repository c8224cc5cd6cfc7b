"""The real DAG on configs/smoke.yaml, end to end, into a real MLflow store; then what a rerun plans on it."""

import json
import os
import subprocess
import sys
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


@pytest.mark.slow
def test_smoke_study_runs_end_to_end_offline_into_mlflow(finished):
    smoke_config = finished_config(finished)
    tmp_path = smoke_config.parent
    config = yaml.safe_load(smoke_config.read_text())
    root = tmp_path / "results" / config["study"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"{config['study']}/chameleon")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"dense", "mot", "moe4x", "report"} <= set(runs)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on these runs

    for name in ("dense", "mot"):
        run = runs[name]
        assert run.data.tags["setting"] == "chameleon" and run.data.tags["arch"] == name
        assert {"seed", "ablation", "git_commit"} <= set(run.data.tags)
        assert run.data.params["model.d_model"] == "32"
        for key in ("val/loss_text", "val/loss_image", "eval/cider", "eval/cider_constant", "eval/fid",
                    "eval/fid_random", "eval/clip_score", "eval/clip_score_shuffled",
                    "perf/tokens_per_s", "perf/flops_per_token", "train/loss_text", "train/loss_image"):
            assert key in run.data.metrics, key
        assert run.data.params["eval.fid_extractor"] == "tiny_clip"
        for key in ("eval/cider", "eval/fid", "eval/clip_score"):  # measured over training, at snapshot steps
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [10, 20, 30], key
        history = client.get_metric_history(run.info.run_id, "val/loss_image")
        assert [m.step for m in history] == [0, 10, 20, 30]  # step 0 + every eval_every, no duplicates
        assert history[-1].value < history[0].value  # it learns

        eval_dir = root / "chameleon" / name / "eval"
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        assert metrics["eval/cider"] == pytest.approx(run.data.metrics["eval/cider"])
        predictions = json.loads((eval_dir / "captions_pred.json").read_text())
        references = json.loads((eval_dir / "captions_ref.json").read_text())
        assert len(predictions) == config["eval"]["caption_images"]
        assert len(list((eval_dir / "images" / "final").glob("*.png"))) == config["eval"]["images"]["n"]
        assert (eval_dir / "images" / "grid_step0000030.png").stat().st_size > 1000
        assert {p["image_id"] for p in predictions} == {i["id"] for i in references["images"]}
        assert (root / "chameleon" / name / "train" / "mlflow_run_id").read_text().strip() == run.info.run_id

    report = root / "chameleon" / "report"
    assert "| mot | image |" in (report / "speedup.md").read_text()
    for png in ("val_loss_image_vs_step.png", "val_loss_text_vs_flops.png"):
        assert (report / "figures" / png).stat().st_size > 1000
    assert "speedup/steps_frac_image" in runs["report"].data.metrics or "not reached" in (report / "speedup.md").read_text()

    # data, tokenizer and reference stages log into {study}/data
    data_experiment = client.get_experiment_by_name(f"{config['study']}/data")
    stages = {r.info.run_name: r.data.metrics for r in client.search_runs([data_experiment.experiment_id])}
    assert set(stages) == {"data", "tokenizers", "tokenize", "clip", "fid_reference", "speech_data",
                           "speech_units", "image_vae"}
    assert stages["data"]["data/train_samples"] == config["data"]["synthetic"]["n_train"]
    assert stages["data"]["data/train_bad"] == 0
    assert {"vq/recon_mse", "vq/perplexity", "vq/codebook_usage"} <= set(stages["tokenizers"])
    assert {"clip/image_to_text_r1", "clip/score_matched", "clip/score_shuffled"} <= set(stages["clip"])
    assert stages["fid_reference"]["fid/random_codes"] > stages["fid_reference"]["fid/real_subset"]

    assert stages["speech_data"]["speech_data/train_samples"] == config["data"]["synthetic"]["n_train"]
    assert stages["speech_units"]["speech/train_unit_usage"] >= 0.8  # most of the codebook in use
    assert stages["image_vae"]["vae_final/recon_mse"] < 0.1 and "vae_final/scaling_factor" in stages["image_vae"]

    # Transfusion and Chameleon+Speech: their own experiments, with every modality's val loss and the eval metrics
    for setting, modalities in (("transfusion", ("text", "image")), ("chameleon_speech", ("text", "image", "speech"))):
        experiment = client.get_experiment_by_name(f"{config['study']}/{setting}")
        setting_runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        assert set(config["settings"][setting]["runs"]) | {"report"} <= set(setting_runs), setting
        for name in config["settings"][setting]["runs"]:
            metrics = setting_runs[name].data.metrics
            for key in [f"val/loss_{m}" for m in modalities] + ["eval/cider", "eval/fid", "eval/clip_score"]:
                assert key in metrics, (setting, name, key)
            history = client.get_metric_history(setting_runs[name].info.run_id, "val/loss_image")
            assert history[-1].value < history[0].value, (setting, name)  # the image loss (diffusion or codes) falls
        assert (root / setting / "report" / "speedup.md").exists()
    assert "merge-image_speech" in (root / "chameleon_speech" / "report" / "merges.md").read_text()

    # MoE-4x: the load-balancing loss keeps every expert busy (>= 10% of the tokens at the last log step)
    moe = runs["moe4x"]
    loads = [moe.data.metrics[f"moe/load_expert{e}"] for e in range(4)]
    assert sum(loads) == pytest.approx(1.0) and min(loads) >= 0.10, loads

    # one self-contained HTML page with every figure and table
    html = tmp_path / "report.html"
    made = snakemake("--report", str(html), "--configfile", str(smoke_config))
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
    reordered = variant(config_file, "reordered.yaml", dump=lambda c: yaml.safe_dump(_reversed_keys(c), sort_keys=False))
    assert reordered.read_text() != config_file.read_text()
    assert planned_jobs(reordered) == {}
    spelled_out = variant(config_file, "defaults.yaml", lambda c: c["eval"]["clip"].update(context_length=40, seed=0))
    assert planned_jobs(spelled_out) == {}  # fingerprints hash the resolved config: a default written out is no change


@pytest.mark.slow
def test_changing_one_runs_config_plans_only_its_training_evaluation_and_the_report(finished):
    config_file = finished_config(finished)
    changed = variant(config_file, "mot_lr.yaml",
                      lambda c: c["settings"]["chameleon"]["runs"]["mot"].update(train={"lr": 5.0e-4}))
    assert planned_jobs(changed) == {"train": 1, "evaluate": 1, "report": 1, "all": 1, "total": 4}
    plan = snakemake("-n", "--cores", "2", "--configfile", str(changed)).stdout
    assert "chameleon/mot/train/final.pt" in plan and "chameleon/dense/train/final.pt" not in plan


@pytest.mark.slow
def test_changing_the_clip_config_refits_clip_and_re_evaluates_with_nothing_upstream(finished):
    config_file = finished_config(finished)
    changed = variant(config_file, "clip.yaml", lambda c: c["eval"]["clip"].update(steps=20))
    # every run of the 3 settings is re-evaluated; no data, tokenizers, tokens or training
    assert planned_jobs(changed) == {"fit_clip": 1, "fid_reference": 1, "evaluate": 8, "report": 3, "all": 1,
                                     "total": 14}
