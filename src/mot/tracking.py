"""MLflow tracking: one store per study, one experiment per setting, one run per training run.

The sqlite store and its experiments are created by one upstream job (`mot init-tracking`):
concurrent first writers into a new sqlite store crash. Metrics go out in batches, and a
resumed run never logs a (metric, step) it already holds.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger("mot.tracking")
DATA_EXPERIMENT = "data"  # tokenizer fitting and data statistics: experiment "{study}/data"
# MLflow 3's UI opens an experiment on its GenAI overview unless this tag selects the model-training view
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri(results_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set (a team server), else the study's local sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def experiment_name(study: str, setting: str) -> str:
    return f"{study}/{setting}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def client_for(results_dir: str | Path) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(results_dir))


def init_store(results_dir: str | Path, study: str, settings: list[str]) -> dict[str, str]:
    """Create the store and every experiment of the study, each marked as model training so that the UI opens
    on its runs (idempotent; also marks experiments created before). Returns name -> id."""
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    client = client_for(results_dir)
    # The local store keeps artifacts beside it; a tracking server decides where its artifacts go (with
    # --serve-artifacts, uploaded over HTTP): a job never assumes it can write the server's artifact folder.
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = (Path(results_dir).resolve() / "mlartifacts").as_uri()
    ids = {}
    for setting in [DATA_EXPERIMENT, *settings]:
        name = experiment_name(study, setting)
        found = client.get_experiment_by_name(name)
        if found is None:
            location = f"{artifacts}/{name.replace('/', '_')}" if local else None
            ids[name] = client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
            continue
        ids[name] = found.experiment_id
        for key, value in EXPERIMENT_KIND.items():
            if found.tags.get(key) != value:
                client.set_experiment_tag(found.experiment_id, key, value)
    return ids


class RunLogger:
    """Logs into one MLflow run without ever logging a (metric, step, value) twice.

    A resumed training run drops points at or below a key's last logged step (the same run recomputes the same
    values). An evaluation that is rerun (`revisable=True`) drops only points identical to logged ones, so a
    re-evaluation with a changed eval config adds its new values, which MLflow then shows as the latest."""

    def __init__(self, client: MlflowClient, run_id: str, revisable: bool = False):
        self.client, self.run_id, self.revisable = client, run_id, revisable
        self._last_step: dict[str, int] = {}
        self._logged: set[tuple[str, int, float]] = set()
        self._pending: list[Metric] = []

    @classmethod
    def start_or_resume(cls, results_dir, experiment: str, run_name: str, run_id_file: Path,
                        tags: dict[str, str], params: dict[str, str]) -> "RunLogger":
        client = client_for(results_dir)
        if run_id_file.exists():
            run_id = run_id_file.read_text().strip()
            logger = cls(client, run_id)
            logger._load_last_steps()
            client.update_run(run_id, status="RUNNING")
            log.info("resuming MLflow run %s (%s)", run_name, run_id)
            return logger
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise RuntimeError(f"MLflow experiment {experiment!r} does not exist: run `mot init-tracking` first")
        run = client.create_run(found.experiment_id, run_name=run_name,
                                tags={**tags, "git_commit": git_commit()})
        logger = cls(client, run.info.run_id)
        logger.log_params(params)
        run_id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run.info.run_id + "\n")
        return logger

    @classmethod
    def attach(cls, results_dir, run_id_file: Path, revisable: bool = False) -> "RunLogger":
        """Log into an existing run (evaluation logs into its training run)."""
        logger = cls(client_for(results_dir), run_id_file.read_text().strip(), revisable)
        logger._load_last_steps()
        return logger

    def _load_last_steps(self) -> None:
        run = self.client.get_run(self.run_id)
        for key in run.data.metrics:
            history = self.client.get_metric_history(self.run_id, key)
            self._last_step[key] = max(m.step for m in history) if history else -1
            self._logged.update((key, m.step, m.value) for m in history)

    def log_params(self, params: dict[str, str]) -> None:
        """MLflow params are immutable: a key already logged keeps its value (evaluation records the current
        value as a tag of the same name too)."""
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(items), 100):  # MLflow accepts 100 params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int, flush: bool = True) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            if (key, step, value) in self._logged or (not self.revisable and step <= self._last_step.get(key, -1)):
                continue  # already logged before a restart
            self._pending.append(Metric(key, value, now, step))
            self._last_step[key] = max(step, self._last_step.get(key, -1))
            self._logged.add((key, step, value))
        if flush:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self._pending), 1000):
            self.client.log_batch(self.run_id, metrics=self._pending[start:start + 1000])
        self._pending = []

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def quiet_mlflow() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as flat `a.b.c` -> string params (what MLflow stores)."""
    if isinstance(config, dict):
        flat: dict[str, str] = {}
        for key, value in config.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(config) if isinstance(config, (list, type(None))) else str(config)}
