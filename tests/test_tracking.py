"""MLflow logging: a resumed run never logs a (metric, step) twice; a re-evaluation revises values."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from mot.tracking import RunLogger, init_store


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_resumed_training_run_drops_points_it_already_logged(tmp_path):
    init_store(tmp_path, "s", ["chameleon"])
    run_id_file = tmp_path / "run_id"
    first = RunLogger.start_or_resume(tmp_path, "s/chameleon", "mot", run_id_file, {"arch": "mot"}, {"a": "1"})
    for step in (10, 20, 30):
        first.log_metrics({"train/loss": 1.0 / step}, step)
    resumed = RunLogger.start_or_resume(tmp_path, "s/chameleon", "mot", run_id_file, {"arch": "mot"}, {"a": "1"})
    for step in (20, 30, 40):  # restarted from the step-20 checkpoint: 20 and 30 are recomputed
        resumed.log_metrics({"train/loss": 1.0 / step}, step)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert history(client, first.run_id, "train/loss") == [(10, 0.1), (20, 0.05), (30, 1 / 30), (40, 0.025)]
    assert resumed.run_id == first.run_id


def test_re_evaluation_adds_changed_values_only(tmp_path):
    init_store(tmp_path, "s", ["chameleon"])
    run_id_file = tmp_path / "run_id"
    RunLogger.start_or_resume(tmp_path, "s/chameleon", "mot", run_id_file, {}, {}).log_metrics({"eval/fid": 9.0}, 600)
    again = RunLogger.attach(tmp_path, run_id_file, revisable=True)
    again.log_metrics({"eval/fid": 9.0}, 600)  # a rerun with the same result: nothing new
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert history(client, again.run_id, "eval/fid") == [(600, 9.0)]
    RunLogger.attach(tmp_path, run_id_file, revisable=True).log_metrics({"eval/fid": 7.5}, 600)  # eval config changed
    assert client.get_run(again.run_id).data.metrics["eval/fid"] == 7.5
    # params are immutable in MLflow: a changed value keeps the first and does not fail
    logger = RunLogger.attach(tmp_path, run_id_file, revisable=True)
    logger.log_params({"eval.fid_extractor": "tiny_clip"})
    logger.log_params({"eval.fid_extractor": "inception"})
    assert client.get_run(again.run_id).data.params["eval.fid_extractor"] == "tiny_clip"


def test_every_study_experiment_opens_on_its_training_runs_in_the_ui(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    init_store(tmp_path, "s", ["chameleon"])
    before = client.create_experiment("s/transfusion")  # created without the tag (e.g. by an older version)
    ids = init_store(tmp_path, "s", ["chameleon", "transfusion"])
    assert set(ids) == {"s/data", "s/chameleon", "s/transfusion"} and ids["s/transfusion"] == before
    for experiment_id in ids.values():  # MLflow 3's UI opens these on the runs table, not the GenAI overview
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_on_a_tracking_server_artifacts_go_through_the_server(tmp_path, monkeypatch):
    """A real `mlflow server --serve-artifacts`: the experiments init_store creates take the server's artifact
    store (mlflow-artifacts:/), so a job uploads over HTTP and never writes a folder it assumes is shared."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = tmp_path / "server_artifacts"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(served), "--serve-artifacts"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        results = tmp_path / "results"
        init_store(results, "s", ["chameleon"])
        logger = RunLogger.start_or_resume(results, "s/chameleon", "mot", tmp_path / "run_id", {}, {})
        (tmp_path / "grid.png").write_bytes(b"png")
        logger.log_artifact(tmp_path / "grid.png", "eval")
        client = MlflowClient(tracking_uri=uri)
        assert client.get_run(logger.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        assert [a.path for a in client.list_artifacts(logger.run_id, "eval")] == ["eval/grid.png"]
        assert [p.name for p in served.rglob("grid.png")] == ["grid.png"]  # stored by the server
        assert not (results / "mlartifacts").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
