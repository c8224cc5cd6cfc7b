"""A setting of one's own, defined in one file (tests/settings/toy_captioning.py) and named by its import path in
the study config, is checked, planned, trained, evaluated and reported through the real DAG: no other file of the
project knows it."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mot.config import run_specs
from mot.config.load import load_config
from mot.settings import objective_for
from tests.conftest import REPO, snakemake
from tests.settings.toy_captioning import ToyCaptioningObjective

TOY_MODULE = "tests.settings.toy_captioning"


def toy_config(results_dir: Path) -> dict:
    """The smoke study's data, tokenizers and sizes with the toy setting alone (dense and mot)."""
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config.update(study="toy", results_dir=str(results_dir))
    config["eval"]["over_training"] = {"steps": [], "runs": []}
    config["eval"]["split"] = "test"  # the final losses, captions and images on the held-out test split
    config["settings"] = {"toy_captioning": {"module": TOY_MODULE, "modalities": ["text", "image"],
                                             "runs": {"dense": {"arch": "dense", "untie": []},
                                                      "mot": {"arch": "mot", "untie": ["attn", "ffn", "norm"]}}}}
    config["claims"] = [{"setting": "toy_captioning", "loss": "text", "metric": "steps_frac", "less_than": 1.0,
                         "seeds": 1}]  # smoke's claim names chameleon, which this study does not run
    return config


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("toy")
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_config(root / "results")))
    return path, snakemake("--cores", "2", "--configfile", str(path), timeout=900, offline=True, pythonpath=[REPO])


def test_the_config_names_the_setting_by_its_module_and_takes_its_facts_from_the_class(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_config(tmp_path / "results")))
    config = load_config([path])
    objective = objective_for(config, "toy_captioning")
    assert type(objective) is ToyCaptioningObjective
    assert [run.name for run in run_specs(config)] == ["dense", "mot"]
    config["settings"]["toy_captioning"]["sequences"] = {"mixture": {"text_only": 0.5}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match=r"settings\.toy_captioning\.sequences\.mixture\.text_only: the toy_captioning "
                                        r"setting draws no text_only sequences \(its kinds: image_text\)"):
        load_config([path])


@pytest.mark.slow
def test_the_new_setting_trains_evaluates_and_reports_through_the_real_dag(toy_study):
    path, result = toy_study
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = Path(yaml.safe_load(path.read_text())["results_dir"]) / "toy"
    for run in ("dense", "mot"):
        metrics = json.loads((root / "toy_captioning" / run / "eval" / "metrics.json").read_text())
        assert metrics["step"] == 30
        for key in ("test/loss_text", "test/loss_image", "eval/cider", "eval/fid", "eval/clip_score"):
            assert metrics[key] == metrics[key] and metrics[key] >= 0, (run, key)  # a number, not NaN
        assert metrics["loss_splits"] == {"text": "test", "image": "test"}
        assert "val/loss_text" not in metrics  # eval.split: test measures no val loss to be mistaken for one
    assert json.loads((root / "references" / "toy_captioning" / "fid_random.json").read_text())["fid_random"] > 0
    report = (root / "toy_captioning" / "report" / "report.md").read_text()
    assert "mot" in report and "exploratory" in report  # its declared one-seed claim is evaluated and labelled


@pytest.mark.slow
def test_the_final_losses_are_the_trained_models_losses_on_the_whole_test_split(toy_study):
    """eval/metrics.json's test/loss_* are the final checkpoint's losses over every test sample (recomputed here),
    not the val split's (which the validation curve, and so the verdicts, sample from)."""
    import torch

    from mot.paths import StudyPaths

    path, result = toy_study
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_config([path])
    objective, run = objective_for(config, "toy_captioning"), run_specs(config)[1]
    model = objective.build_model(run).eval()
    paths = StudyPaths.from_config(config)
    model.load_state_dict(torch.load(paths.final_checkpoint(run.setting, run.name), weights_only=False)["model"])
    def loss_on(split):  # noqa: E306
        return objective.validation_loss(model, objective.sequences(split, model).eval_batches(7), "cpu", run.modalities)
    metrics = json.loads((paths.eval_dir(run.setting, run.name) / "metrics.json").read_text())
    test, val = loss_on("test"), loss_on("val")
    for m in ("text", "image"):
        assert metrics[f"test/loss_{m}"] == pytest.approx(test[m], rel=1e-5)
        assert abs(test[m] - val[m]) > 1e-4  # the two splits' losses differ: the check can tell them apart


@pytest.mark.slow
def test_the_new_setting_logs_its_runs_into_its_own_mlflow_experiment(toy_study):
    path, result = toy_study
    assert result.returncode == 0, result.stderr[-3000:]
    results_dir = Path(yaml.safe_load(path.read_text())["results_dir"])
    client = MlflowClient(f"sqlite:///{results_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toy/toy_captioning")
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name != 'report'")
    by_name = {run.info.run_name: run for run in runs}
    assert {"dense", "mot"} <= set(by_name)
    for name in ("dense", "mot"):
        history = client.get_metric_history(by_name[name].info.run_id, "val/loss_text")
        assert len(history) >= 2 and history[-1].value < history[0].value  # it learned to caption


@pytest.mark.slow
def test_the_runs_trained_on_the_new_settings_sequences(toy_study):
    """Its training batches are the toy's own (captioning only: every row opens `<bos> <boi>`), unlike Chameleon's."""
    path, result = toy_study
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_config([path])
    objective = objective_for(config, "toy_captioning")
    run = run_specs(config)[0]
    model = objective.build_model(run)
    batch = objective.sequences("train", model).train_batch(0, 16, run.seed)
    vocab = objective.vocab
    assert (batch.tokens[:, 0] == vocab.bos).all() and (batch.tokens[:, 1] == vocab.boi).all()
    config["settings"]["toy_captioning"].pop("module")  # the same study as plain chameleon draws both directions
    chameleon = ToyCaptioningObjective.__mro__[1](config, "toy_captioning")
    mixed = chameleon.sequences("train", model).train_batch(0, 16, run.seed)
    assert not (mixed.tokens[:, 1] == vocab.boi).all()
