"""Faults end in a clear message or a clean recovery, and nothing computed or logged is lost."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from mot.tracking import RunLogger, init_store
from tests.conftest import BIN, REPO, snakemake

SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())


def mot(*args, check=True, cwd=REPO, **kwargs):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(BIN / "mot"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=check, **kwargs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The smoke study's data, tokenizers and tokens, built once for this module."""
    root = tmp_path_factory.mktemp("prepared")
    config = {**SMOKE, "results_dir": str(root / "results")}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    for stage in ("init-tracking", "data", "fit-tokenizers", "tokenize"):
        mot(stage, "--config", str(path))
    return root / "results" / SMOKE["study"]


def study(tmp_path, prepared, **changes) -> Path:
    """A fresh results dir sharing the prepared tokens, with config changes (dicts merge one level deep)."""
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    config["results_dir"] = str(tmp_path / "results")
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    root = tmp_path / "results" / config["study"]
    root.mkdir(parents=True)
    for part in ("data", "tokenizers", "tokens"):
        (root / part).symlink_to(prepared / part)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    mot("init-tracking", "--config", str(path))
    os.utime(root / "tracking.json", (0, 0))  # older than the shared data, so Snakemake keeps that data
    return path


def client_for(config_path: Path) -> MlflowClient:
    results = Path(yaml.safe_load(config_path.read_text())["results_dir"])
    return MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")


def run_metrics(config_path: Path, run: str) -> dict[str, list[tuple[int, float]]]:
    client = client_for(config_path)
    results = Path(yaml.safe_load(config_path.read_text())["results_dir"])
    run_id = (results / SMOKE["study"] / "chameleon" / run / "train" / "mlflow_run_id").read_text().strip()
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def test_same_config_and_seed_give_identical_metrics(tmp_path, prepared):
    a = study(tmp_path / "a", prepared)
    b = study(tmp_path / "b", prepared)
    for config in (a, b):
        mot("train", "--config", str(config), "--setting", "chameleon", "--run", "mot")
    ma, mb = run_metrics(a, "mot"), run_metrics(b, "mot")
    deterministic = {k: v for k, v in ma.items() if not k.startswith("perf/") and k != "val/wall_clock_s"}
    assert deterministic and deterministic == {k: mb[k] for k in deterministic}


def test_killed_training_resumes_into_the_same_run_with_nothing_lost_or_duplicated(tmp_path, prepared):
    train = {"steps": 60, "checkpoint_every": 10, "eval_every": 20, "log_every": 5}
    killed = study(tmp_path / "killed", prepared, train=train)
    reference = study(tmp_path / "reference", prepared, train=train)
    results = tmp_path / "killed" / "results" / SMOKE["study"]
    checkpoints = results / "chameleon" / "dense" / "train" / "checkpoints"

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    target = str(results / "chameleon" / "dense" / "train" / "final.pt")  # before --configfile, which takes nargs
    process = subprocess.Popen([str(BIN / "snakemake"), target, "--snakefile", str(REPO / "Snakefile"), "--cores", "1",
                                "--configfile", str(killed)],
                               cwd=tmp_path / "killed", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while not (checkpoints.exists() and any(p.name >= "step_0000030.pt" for p in checkpoints.glob("step_*.pt"))):
        assert process.poll() is None, "training finished or failed before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # kill -9 of snakemake and the training job
    process.wait()
    assert not (results / "chameleon" / "dense" / "train" / "final.pt").exists()
    assert not (results / "chameleon" / "dense" / "train" / "complete").exists()

    snakemake("--unlock", "--configfile", str(killed), cwd=tmp_path / "killed", check=True)
    resumed = snakemake(target, "--cores", "1", "--rerun-incomplete", "--configfile", str(killed), cwd=tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (results / "logs" / "train" / "chameleon" / "dense.log").read_text()
    assert "resumed from step_00000" in log and "starting over" not in log
    assert (results / "chameleon" / "dense" / "train" / "complete").exists()

    mot("train", "--config", str(reference), "--setting", "chameleon", "--run", "dense")
    got, want = run_metrics(killed, "dense"), run_metrics(reference, "dense")
    client = client_for(killed)
    assert len(client.search_runs([client.get_experiment_by_name("smoke/chameleon").experiment_id])) == 1
    for key, points in got.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"duplicated steps in {key}"
    for key in ("val/loss_text", "val/loss_image", "train/loss_text", "train/loss"):
        assert got[key] == want[key], key  # same values at the same steps as the uninterrupted run


def test_a_finished_run_forced_to_rerun_trains_from_step_0_into_a_new_mlflow_run(tmp_path, prepared):
    config = study(tmp_path, prepared)
    train_dir = tmp_path / "results" / SMOKE["study"] / "chameleon" / "dense" / "train"
    target = str(train_dir / "final.pt")
    first = snakemake(target, "--cores", "1", "--configfile", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    old_run_id = (train_dir / "mlflow_run_id").read_text().strip()
    old = run_metrics(config, "dense")

    # --forcerun deletes final.pt before the job starts: the job must not take the run for a killed one
    forced = snakemake(target, "--cores", "1", "--forcerun", "train", "--configfile", str(config), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    log = (tmp_path / "results" / SMOKE["study"] / "logs" / "train" / "chameleon" / "dense.log").read_text()
    assert "rerun of a finished run; starting over from step 0" in log and "resumed from" not in log
    new_run_id = (train_dir / "mlflow_run_id").read_text().strip()
    assert new_run_id != old_run_id
    client = client_for(config)
    assert client.get_run(old_run_id).data.tags["superseded"] == "true"
    assert "superseded" not in client.get_run(new_run_id).data.tags
    assert client.get_run(new_run_id).info.status == "FINISHED"
    new = run_metrics(config, "dense")
    assert [s for s, _ in new["val/loss_image"]] == [0, 10, 20, 30]  # every step trained and logged again
    for key in ("val/loss_text", "val/loss_image", "train/loss"):
        assert new[key] == old[key], key  # retrained from scratch with the same seed: the same curve


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, prepared):
    config = study(tmp_path, prepared, train={"lr": 1.0e30, "warmup_steps": 0, "log_every": 1,
                                              "checkpoint_every": 1, "grad_clip": 0.0})
    result = mot("train", "--config", str(config), "--setting", "chameleon", "--run", "dense", check=False)
    assert result.returncode != 0
    assert "non-finite loss" in result.stderr and "last good checkpoint" in result.stderr
    checkpoints = sorted((tmp_path / "results" / SMOKE["study"] / "chameleon" / "dense" / "train" / "checkpoints").glob("step_*.pt"))
    state = torch.load(checkpoints[-1], weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    client = client_for(config)
    run = client.search_runs([client.get_experiment_by_name("smoke/chameleon").experiment_id])[0]
    assert run.info.status == "FAILED"


def test_one_failing_run_leaves_the_others_complete_and_the_report_lists_it(tmp_path, prepared):
    runs = {"dense": {"untie": []}, "mot": {"untie": ["attn", "ffn", "norm"]},
            "broken": {"untie": [], "train": {"lr": 1.0e30, "warmup_steps": 0, "log_every": 1, "grad_clip": 0.0}}}
    config = study(tmp_path, prepared, settings={"chameleon": {"modalities": ["text", "image"], "runs": runs}})
    result = snakemake("--cores", "2", "--keep-going", "--configfile", str(config), cwd=tmp_path)
    assert result.returncode != 0
    root = tmp_path / "results" / SMOKE["study"] / "chameleon"
    assert (root / "dense" / "eval" / "metrics.json").exists() and (root / "mot" / "eval" / "metrics.json").exists()
    assert not (root / "broken" / "eval" / "metrics.json").exists()
    mot("report", "--config", str(config), "--setting", "chameleon")
    report = (root / "report" / "report.md").read_text()
    assert "## Missing runs" in report and "broken" in report
    assert "| dense |" in report and "| mot |" in report


def _log_many(uri_dir: str, run_id_file: str, worker: int, steps: int) -> None:
    logger = RunLogger.start_or_resume(uri_dir, "concurrency/chameleon", f"worker{worker}", Path(run_id_file),
                                       {"worker": str(worker)}, {"p": "1"})
    for step in range(steps):
        logger.log_metrics({f"m{k}": worker * 1000 + step + k for k in range(5)}, step)
    logger.finish()


def test_four_processes_logging_into_one_sqlite_store_lose_nothing(tmp_path):
    results = tmp_path / "results"
    init_store(results, "concurrency", ["chameleon"])
    code = ("import sys; from tests.test_reliability import _log_many; "
            "_log_many(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(results), str(tmp_path / f"id{w}"), str(w), "150"],
                              cwd=REPO) for w in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("concurrency/chameleon").experiment_id])
    assert len(runs) == 4
    for run in runs:
        worker = int(run.data.tags["worker"])
        for k in range(5):
            history = client.get_metric_history(run.info.run_id, f"m{k}")
            assert sorted((m.step, m.value) for m in history) == [(s, worker * 1000 + s + k) for s in range(150)]
