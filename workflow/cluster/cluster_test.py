"""`make cluster-test`: the smoke study through the SLURM box, checked against the local smoke run.

Runs every job of configs/smoke.yaml + workflow/cluster/smoke.yaml with the slurm executor (profiles slurm +
slurm-box), logging to the box's MLflow server ($MLFLOW_TRACKING_URI). While it runs, cancels the training job of
PREEMPTED once its first checkpoint is on disk (`scancel`, as a preemption would); the profile's retry resumes it.
Then checks, and exits 1 with one line per failed check:
- the job table (sacct): every job COMPLETED but the cancelled one, the multi-node job on 2 nodes;
- the cancelled run resumed from its checkpoint into the same MLflow run, no (metric, step) logged twice in any
  run, and its final weights equal the local (uninterrupted) run's bit for bit;
- every run's metrics and eval artifacts (captions, image grids), and the reports' plots, on the server;
- the eval metrics equal the local run's: exactly for one-process runs, within MULTI_PROCESS_TOL for the runs
  trained as several gloo processes (DDP averages the ranks' gradients: another float summation order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "results" / "smoke"  # `make smoke`: configs/smoke.yaml alone
CLUSTER = REPO / "results" / "slurm-box" / "smoke"  # workflow/cluster/smoke.yaml's results_dir
PROFILES = ["--profile", "workflow/profiles/slurm", "--profile", "workflow/profiles/slurm-box"]
CONFIGS = ["--configfile", "configs/smoke.yaml", "workflow/cluster/smoke.yaml"]
PREEMPTED = ("chameleon", "dense")
MULTI_PROCESS = {("chameleon", "mot"): "2 gloo processes on one node (torchrun)",
                 ("transfusion", "mot"): "1 process on each of 2 nodes (srun + torchrun c10d)"}
# Largest relative difference allowed between a multi-process run's eval metrics and the one-process run's: DDP
# averages the ranks' gradients (gloo all-reduce), another float summation order than one process's backward, so
# weights drift by float rounding (measured here: metrics within 1.4e-6, weights within 3e-7); a greedy caption
# token flipped by that drift would move CIDEr by far more and is worth a look, so the bound stays tight.
MULTI_PROCESS_TOL = 1e-4


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def run_study(log: Path, failures: list[str]) -> tuple[float, str | None]:
    """Runs the study through the slurm executor; cancels PREEMPTED's training job after its first checkpoint.
    Returns (seconds, the cancelled SLURM job id)."""
    setting, run = PREEMPTED
    checkpoints = CLUSTER / setting / run / "train" / "checkpoints"
    comment = f"rule_train_wildcards_{setting}_{run}"
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), *PROFILES, *CONFIGS],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        job_id = cancelled = None
        while proc.poll() is None:
            time.sleep(0.05)
            if cancelled:
                continue
            if job_id is None:  # its SLURM job, looked up once it runs (the cancel itself must be quick)
                if not checkpoints.parent.exists():
                    continue
                jobs = [line.split("|")[0] for line in sh("squeue", "-h", "-o", "%i|%k").splitlines()
                        if line.split("|")[1] == comment]
                job_id = jobs[0] if jobs else None
                continue
            if any(checkpoints.glob("step_*.pt")):
                sh("scancel", job_id)
                cancelled = job_id
                final = (CLUSTER / setting / run / "train" / "final.pt").exists()
                print(f"cluster-test: cancelled SLURM job {cancelled} ({setting}/{run} train) after "
                      f"{sorted(p.name for p in checkpoints.glob('step_*.pt'))}, final.pt written: {final}")
                if final:
                    failures.append(f"{setting}/{run}: its training finished before the cancel landed")
    if proc.returncode:
        failures.append(f"snakemake exited {proc.returncode} (log: {log})")
    if cancelled is None:
        failures.append(f"{setting}/{run}: its training job was never seen with a checkpoint: nothing cancelled")
    # the last attempt's log: it resumed from a checkpoint, into the MLflow run the first attempt created
    log_file = CLUSTER / "logs" / "train" / setting / f"{run}.log"
    lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    resumed = [line.split("INFO ")[-1] for line in lines if "resumed from" in line or "resuming MLflow run" in line]
    run_id_file = CLUSTER / setting / run / "train" / "mlflow_run_id"
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else "?"
    print(f"cluster-test: {setting}/{run} retry: {'; '.join(resumed) or 'did not resume'}")
    if cancelled and (len(resumed) != 2 or run_id not in resumed[0]):
        failures.append(f"{setting}/{run}: the retry did not resume from a checkpoint into run {run_id} ({log_file})")
    return time.time() - start, cancelled


def job_table(since: str, cancelled: str | None, failures: list[str]) -> None:
    table = sh("sacct", "-X", "-S", since, "-o", "JobID,Comment%60,State,NNodes,NodeList,Elapsed")
    print(table)
    rows = [line.split() for line in table.splitlines()[2:] if line.strip()]
    for row in rows:
        job_id, comment, state, nnodes = row[0], row[1], row[2], int(row[3])
        expected = "CANCELLED" if job_id == cancelled else "COMPLETED"
        if not state.startswith(expected):
            failures.append(f"job {job_id} ({comment}): {state}, expected {expected}")
        if comment == "rule_train_wildcards_transfusion_mot" and nnodes != 2:
            failures.append(f"job {job_id} ({comment}): ran on {nnodes} node(s), expected 2")
    resumed = [row for row in rows if row[1] == f"rule_train_wildcards_{'_'.join(PREEMPTED)}"]
    if [row[2].rstrip("+") for row in resumed] != ["CANCELLED", "COMPLETED"]:  # sacct: "CANCELLED by 0" -> "CANCELLED+"
        failures.append(f"{'/'.join(PREEMPTED)}: its train jobs were {[row[2] for row in resumed]}, "
                        "expected CANCELLED then COMPLETED (the profile's retry)")


def artifact_files(client, run_id: str, path: str) -> set[str]:
    """Every file under an artifact path of a run, listed through the tracking server."""
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def check_tracking(failures: list[str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()  # MLFLOW_TRACKING_URI: the box's server
    run_ids = sorted(CLUSTER.glob("*/*/train/mlflow_run_id"))
    if not run_ids:
        failures.append(f"no MLflow run ids under {CLUSTER}")
    for path in run_ids:
        name = "/".join(path.parts[-4:-2])
        run = client.get_run(path.read_text().strip())
        if not run.info.artifact_uri.startswith("mlflow-artifacts:"):
            failures.append(f"{name}: artifacts at {run.info.artifact_uri}, not served by the tracking server")
        twice = {key: len(steps) - len(set(steps)) for key in run.data.metrics
                 for steps in [[m.step for m in client.get_metric_history(run.info.run_id, key)]]
                 if len(steps) != len(set(steps))}
        if twice:
            failures.append(f"{name}: (metric, step) logged twice: {twice}")
        for key in ("train/loss_text", "val/loss_text", "eval/cider", "eval/fid", "eval/clip_score"):
            if key not in run.data.metrics:
                failures.append(f"{name}: metric {key} missing on the server")
        # every file the job wrote under eval/ (captions, image grids, generated images), on the server
        served = artifact_files(client, run.info.run_id, "eval")
        written = {f"eval/{p.relative_to(path.parents[1] / 'eval')}" for p in (path.parents[1] / "eval").rglob("*")
                   if p.is_file()}
        if not written or written != served or not any("grid_step" in a for a in served):
            failures.append(f"{name}: eval artifacts on the server {len(served)} files, written {len(written)}; "
                            f"missing {sorted(written - served)[:5]}")
    for setting_dir in sorted(p.parent.parent for p in CLUSTER.glob("*/report/report.md")):
        experiment = client.get_experiment_by_name(f"smoke/{setting_dir.name}")
        reports = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'report'")
        written = {f"report/{p.relative_to(setting_dir / 'report')}" for p in (setting_dir / "report").rglob("*")
                   if p.is_file() and p.name != ".snakemake_timestamp"}  # snakemake's, after the job
        served = artifact_files(client, reports[0].info.run_id, "report") if reports else set()
        if not any(a.endswith(".png") for a in served) or not written <= served:
            failures.append(f"{setting_dir.name}: report artifacts on the server {len(served)} files "
                            f"(missing {sorted(written - served)[:5]})")
    print(f"cluster-test: {len(run_ids)} runs on the MLflow server {os.environ['MLFLOW_TRACKING_URI']}")


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two final.pt models (inf when their tensors do not match up)."""
    ours, theirs = (torch.load(p, weights_only=False)["model"] for p in (a, b))
    if ours.keys() != theirs.keys():
        return float("inf")
    return max(float((ours[k].double() - theirs[k].double()).abs().max()) if ours[k].numel() else 0.0 for k in ours)


def compare(failures: list[str]) -> None:
    print(f"{'run':34s} {'metrics':>7s} {'max rel diff':>12s} {'weights max abs':>15s}  how it trained on the box")
    for path in sorted(CLUSTER.glob("*/*/eval/metrics.json")):
        key = tuple(path.parts[-4:-2])
        local = json.loads((LOCAL / key[0] / key[1] / "eval" / "metrics.json").read_text())
        box = json.loads(path.read_text())
        values = {k: (v, box[k]) for k, v in local.items() if isinstance(v, float)}
        worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in values.values())
        how = MULTI_PROCESS.get(key, "1 process" + (" (cancelled, resumed)" if key == PREEMPTED else ""))
        weights = max_weight_diff(CLUSTER / key[0] / key[1] / "train" / "final.pt",
                                  LOCAL / key[0] / key[1] / "train" / "final.pt")
        print(f"{'/'.join(key):34s} {len(values):7d} {worst:12.2e} {weights:15.2e}  {how}")
        if key not in MULTI_PROCESS and worst != 0:
            failures.append(f"{'/'.join(key)}: eval metrics differ from the local run's (max rel {worst:.2e})")
        if key in MULTI_PROCESS and worst > MULTI_PROCESS_TOL:
            failures.append(f"{'/'.join(key)}: eval metrics differ by {worst:.2e} > {MULTI_PROCESS_TOL}")
    setting, run = PREEMPTED
    final = "train/final.pt"
    same = max_weight_diff(CLUSTER / setting / run / final, LOCAL / setting / run / final) == 0
    print(f"cluster-test: {setting}/{run} final weights (cancelled + resumed) equal the local run's: {same}")
    if not same:
        failures.append(f"{setting}/{run}: final weights differ from the uninterrupted local run's")


def main() -> int:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        print("cluster-test: set MLFLOW_TRACKING_URI (the box's server; `make cluster-test` does)")
        return 2
    if not (LOCAL / "chameleon" / "dense" / "eval" / "metrics.json").exists():
        print(f"cluster-test: no local smoke run under {LOCAL}: run `make smoke` first (`make cluster-test` does)")
        return 2
    subprocess.run(["rm", "-rf", str(CLUSTER)], check=True)  # every job runs again: a fresh study on the box
    CLUSTER.mkdir(parents=True)
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    failures: list[str] = []
    seconds, cancelled = run_study(CLUSTER.parent / "snakemake.log", failures)
    print(f"cluster-test: the study through SLURM took {seconds:.0f} s")
    job_table(since, cancelled, failures)
    if not any(f.startswith("snakemake exited") for f in failures):
        check_tracking(failures)
        compare(failures)
    for failure in failures:
        print(f"cluster-test: FAILED: {failure}")
    print("cluster-test: " + ("FAILED" if failures else "all checks passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
