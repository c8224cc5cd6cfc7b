"""Study report of one setting: loss curves per modality, final metrics and speed-up tables,
written under results/{study}/{setting}/report/ and logged to a `report` run in MLflow."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.speedup import speedup_fractions  # noqa: E402
from mot.config import run_specs  # noqa: E402
from mot.paths import StudyPaths  # noqa: E402
from mot.tracking import RunLogger, client_for, experiment_name  # noqa: E402

log = logging.getLogger("mot.report")
AXES = {"step": "training steps", "flops": "training FLOPs", "time": "wall-clock (s)"}


def load_curves(client, run_id: str, modalities) -> dict[str, dict[str, np.ndarray]]:
    """Validation curves of one MLflow run: per modality, aligned step / FLOPs / time / loss arrays."""
    def history(key):
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    flops, time = history("val/cum_flops"), history("val/wall_clock_s")
    curves = {}
    for m in modalities:
        loss = history(f"val/loss_{m}")
        steps = sorted(s for s in loss if s in flops and s in time)
        curves[m] = {"step": np.array(steps, float), "flops": np.array([flops[s] for s in steps]),
                     "time": np.array([time[s] for s in steps]), "loss": np.array([loss[s] for s in steps])}
    return curves


def write_table(rows: list[dict], path_stem: Path, columns: list[str]) -> str:
    """Write rows as CSV and Markdown; return the Markdown."""
    with open(path_stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("not reached" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    path_stem.with_suffix(".md").write_text(markdown)
    return markdown


def plot_curves(curves: dict[str, dict], modality: str, axis: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, per_modality in curves.items():
        c = per_modality[modality]
        ax.plot(c[axis], c["loss"], marker="o", markersize=3, label=run, lw=2 if run == "dense" else 1.3)
    if "dense" in curves:
        ax.axhline(curves["dense"][modality]["loss"][-1], color="grey", ls="--", lw=1, label="dense final")
    ax.set_xlabel(AXES[axis])
    ax.set_ylabel(f"val loss ({modality})")
    ax.set_title(f"{modality} validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(config: dict, setting: str) -> Path:
    paths = StudyPaths.from_config(config)
    out = paths.report_dir(setting)
    out.mkdir(parents=True, exist_ok=True)
    client = client_for(config["results_dir"])
    runs = run_specs(config, setting)
    modalities = config["settings"][setting]["modalities"]
    smoothing = config["report"]["smoothing"]

    curves, final_rows, missing = {}, [], []
    for run in runs:
        metrics_file = paths.eval_dir(setting, run.name) / "metrics.json"
        run_id_file = paths.run_id_file(setting, run.name)
        if not metrics_file.exists() or not run_id_file.exists():
            missing.append(run.name)  # a failed run is listed, not fatal (snakemake --keep-going)
            continue
        curves[run.name] = load_curves(client, run_id_file.read_text().strip(), modalities)
        final_rows.append({"run": run.name, "arch": run.arch, **json.loads(metrics_file.read_text())})

    figures = []
    for m in modalities:
        for axis in AXES:
            figure = out / f"val_loss_{m}_vs_{axis}.png"
            plot_curves(curves, m, axis, figure)
            figures.append(figure)

    metric_columns = sorted({k for row in final_rows for k in row if "/" in k})
    final_md = write_table(final_rows, out / "final_metrics", ["run", "arch", "step", *metric_columns])

    speedup_rows, speedup_metrics = [], {}
    if "dense" in curves:
        for run_name, per_modality in curves.items():
            if run_name == "dense":
                continue
            for m in modalities:
                fractions = speedup_fractions(curves["dense"][m], per_modality[m], smoothing)
                speedup_rows.append({"run": run_name, "modality": m, **fractions})
                for key in ("steps_frac", "flops_frac", "time_frac"):
                    if fractions[key] is not None:
                        speedup_metrics[f"speedup/{key}_{m}/{run_name}"] = fractions[key]
    speedup_md = write_table(speedup_rows, out / "speedup",
                             ["run", "modality", "target_loss", "steps_frac", "flops_frac", "time_frac"])

    lines = [f"# {config['study']} / {setting}", "",
             "## Final metrics", "", final_md,
             "## Speed-up: fraction of dense's training needed to reach dense's final validation loss", "",
             f"(smoothing window: {smoothing} evaluation points; 'not reached' = never reached)", "", speedup_md]
    if missing:
        lines += ["## Missing runs", "", "These runs have no evaluation (failed or not run): " + ", ".join(missing), ""]
    lines += ["## Validation loss curves", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    report_md = out / "report.md"
    report_md.write_text("\n".join(lines) + "\n")

    run_id_file = out / "mlflow_run_id"
    if run_id_file.exists():  # a rerun replaces the previous report run instead of appending to it
        client.delete_run(run_id_file.read_text().strip())
        run_id_file.unlink()
    logger = RunLogger.start_or_resume(config["results_dir"], experiment_name(config["study"], setting), "report",
                                       run_id_file, {"setting": setting, "arch": "report"}, {})
    primary = {}
    for row in speedup_rows:  # headline keys are about MoT; every run's fractions are kept under its name
        if row["run"] == "mot" and row["steps_frac"] is not None:
            primary[f"speedup/steps_frac_{row['modality']}"] = row["steps_frac"]
    logger.log_metrics({**primary, **speedup_metrics}, 0)
    logger.set_tags({"missing_runs": ",".join(missing) or "none"})
    logger.log_artifacts(out, "report")
    logger.finish()
    log.info("report for %s written to %s", setting, report_md)
    return report_md
