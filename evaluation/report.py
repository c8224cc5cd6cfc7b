"""Study report of one setting, under results/{study}/{setting}/report/ and in MLflow:

- plots: per modality, validation loss vs steps, FLOPs and wall-clock (every run overlaid, seed
  bands, dense's final loss as a line); CIDEr / FID / CLIP score vs steps; ablation bars;
- tables (md + csv): final metrics, speed-up per run and modality (steps, FLOPs, time), ablations
  (difference to mot and dense), parameter/FLOP accounting beside the paper's formulas;
- a `report` MLflow run holding everything as artifacts, with one nested run per compared run
  (tag `about_run`) holding `speedup/{steps,flops,time}_frac_{modality}`.
Runs without an evaluation (failed under --keep-going) are listed as missing, not fatal.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.speedup import speedup_fractions  # noqa: E402
from mot.config import run_specs  # noqa: E402
from mot.models.accounting import accounting_table  # noqa: E402
from mot.paths import StudyPaths  # noqa: E402
from mot.tracking import RunLogger, client_for, experiment_name  # noqa: E402

log = logging.getLogger("mot.report")
AXES = {"step": "training steps", "flops": "training FLOPs", "time": "wall-clock (s)"}
EVAL_CURVES = {"eval/cider": "CIDEr (higher is better)", "eval/fid": "FID (lower is better)",
               "eval/clip_score": "CLIP score (higher is better)"}
# The paper's headline numbers (fraction of dense's cost to match it), shown beside ours.
PAPER = {("chameleon", "mot", "image", "steps_frac"): 0.558, ("chameleon", "mot", "text", "steps_frac"): 0.558,
         ("chameleon_speech", "mot", "speech", "steps_frac"): 0.372,
         ("transfusion", "mot", "image", "steps_frac"): 1 / 3,
         ("chameleon", "mot", "image", "time_frac"): 0.472, ("chameleon", "mot", "text", "time_frac"): 0.756}
FRACTIONS = ("steps_frac", "flops_frac", "time_frac")


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
    for key in EVAL_CURVES:
        points = history(key)
        curves[key] = {"step": np.array(sorted(points), float), "value": np.array([points[s] for s in sorted(points)])}
    return curves


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present or len(present) < len(values):
        return None, None  # "not reached" by some seed is reported as such, never averaged away
    return float(np.mean(present)), float(np.std(present))


def fmt(value) -> str:
    if value is None:
        return "not reached"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_table(rows: list[dict], path_stem: Path, columns: list[str]) -> str:
    """Write rows as CSV and Markdown; return the Markdown."""
    with open(path_stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: ("not reached" if row.get(c, "") is None else row.get(c, "")) for c in columns}
                         for row in rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    path_stem.with_suffix(".md").write_text(markdown)
    return markdown


class SettingReport:
    def __init__(self, config: dict, setting: str):
        self.config, self.setting = config, setting
        self.paths = StudyPaths.from_config(config)
        self.out = self.paths.report_dir(setting)
        self.figures = self.out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.client = client_for(config["results_dir"])
        self.modalities = config["settings"][setting]["modalities"]
        self.smoothing = config["report"]["smoothing"]
        self.specs = run_specs(config, setting)
        self.curves: dict[str, dict] = {}      # run name (with seed) -> curves
        self.final: dict[str, dict] = {}       # run name -> eval/metrics.json
        self.missing: list[str] = []
        for spec in self.specs:
            metrics_file = self.paths.eval_dir(setting, spec.name) / "metrics.json"
            run_id_file = self.paths.run_id_file(setting, spec.name)
            if not metrics_file.exists() or not run_id_file.exists():
                self.missing.append(spec.name)
                continue
            curves = load_curves(self.client, run_id_file.read_text().strip(), self.modalities)
            if any(len(curves[m]["loss"]) == 0 for m in self.modalities):
                self.missing.append(f"{spec.name} (no validation curve in MLflow)")
                continue
            self.curves[spec.name] = curves
            self.final[spec.name] = json.loads(metrics_file.read_text())
        # base run name -> its seeds' run names (present ones only)
        self.groups: dict[str, list[str]] = defaultdict(list)
        self.arch = {}
        for spec in self.specs:
            self.arch[spec.base_name] = spec.arch
            if spec.name in self.curves:
                self.groups[spec.base_name].append(spec.name)
        self.seed_of = {spec.name: spec.seed for spec in self.specs}

    # --- tables ---------------------------------------------------------------------------

    def final_rows(self) -> tuple[list[dict], list[str]]:
        keys = sorted({k for m in self.final.values() for k in m if "/" in k and not k.startswith("over")})
        rows = []
        for base, names in self.groups.items():
            row = {"run": base, "arch": self.arch[base], "seeds": len(names)}
            for key in keys:
                values = [self.final[n].get(key) for n in names]
                mean, std = mean_std(values)
                row[key] = None if mean is None else (f"{mean:.4f} ± {std:.4f}" if len(names) > 1 else mean)
            rows.append(row)
        return rows, keys

    def speedup_rows(self) -> list[dict]:
        """Per compared run and modality: each seed against dense of the same seed, then mean ± std."""
        if "dense" not in self.groups:
            return []
        dense_by_seed = {self.seed_of[n]: n for n in self.groups["dense"]}
        rows = []
        for base, names in self.groups.items():
            if base == "dense":
                continue
            for m in self.modalities:
                per_seed = [speedup_fractions(self.curves[dense_by_seed[self.seed_of[n]]][m], self.curves[n][m],
                                              self.smoothing)
                            for n in names if self.seed_of[n] in dense_by_seed]
                if not per_seed:
                    continue
                row = {"run": base, "modality": m, "seeds": len(per_seed),
                       "target_loss": float(np.mean([r["target_loss"] for r in per_seed]))}
                for key in FRACTIONS:
                    row[key], row[f"{key}_std"] = mean_std([r[key] for r in per_seed])
                    row[f"paper_{key}"] = PAPER.get((self.setting, base, m, key), "")
                rows.append(row)
        return rows

    def ablation_rows(self) -> list[dict]:
        """Final val loss per modality per run, and its difference to mot and to dense (seed means)."""
        def mean_loss(base, m):
            return mean_std([self.final[n].get(f"val/loss_{m}") for n in self.groups.get(base, [])])[0]

        rows = []
        for base in self.groups:
            row = {"run": base, "arch": self.arch[base]}
            for m in self.modalities:
                loss = mean_loss(base, m)
                row[f"val/loss_{m}"] = loss
                for ref in ("mot", "dense"):
                    ref_loss = mean_loss(ref, m) if ref in self.groups else None
                    row[f"Δ {ref} ({m})"] = None if loss is None or ref_loss is None else loss - ref_loss
            rows.append(row)
        return rows

    def accounting_rows(self) -> list[dict]:
        rows = []
        for row in accounting_table(self.config):
            if row["setting"] != self.setting or row["run"] not in {s.name for s in self.specs}:
                continue
            comp = row["params_by_component"]
            rows.append({"run": row["run"], "total": row["params_total"], "non_embedding": row["params_non_embedding"],
                         "attn": comp["attn"], "ffn": comp["ffn"], "norm": comp["norm"],
                         "train_flops_per_token": max(v["train"] for v in row["flops_per_token"].values()),
                         "paper_mot_extra_D2": row["paper_formulas"]["mot_extra_paper"],
                         "mot_extra_real": row["paper_formulas"]["mot_extra_real_with_norms"],
                         "moe_extra_real": row["paper_formulas"]["moe_extra_real"]})
        return rows

    # --- plots ----------------------------------------------------------------------------

    def _band(self, ax, base: str, xs: list[np.ndarray], ys: list[np.ndarray], dense: bool) -> None:
        n = min(len(y) for y in ys)
        x = np.mean([v[:n] for v in xs], axis=0)
        y = np.stack([v[:n] for v in ys])
        line, = ax.plot(x, y.mean(0), marker="o", markersize=3, label=base, lw=2.2 if dense else 1.3)
        if len(ys) > 1:
            ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), color=line.get_color(), alpha=0.2)

    def plot_losses(self) -> list[Path]:
        figures = []
        for m in self.modalities:
            for axis in AXES:
                fig, ax = plt.subplots(figsize=(6.4, 4.2))
                for base, names in self.groups.items():
                    self._band(ax, base, [self.curves[n][m][axis] for n in names],
                               [self.curves[n][m]["loss"] for n in names], base == "dense")
                if "dense" in self.groups:
                    final = np.mean([self.curves[n][m]["loss"][-1] for n in self.groups["dense"]])
                    ax.axhline(final, color="grey", ls="--", lw=1, label="dense final")
                    lows = [c[m]["loss"].min() for c in self.curves.values()]
                    ax.set_ylim(min(lows) - 0.05 * final, final * 1.6)  # the interesting part: near dense's end
                ax.set(xlabel=AXES[axis], ylabel=f"val loss ({m})", title=f"{self.setting}: {m} validation loss")
                figures.append(self._save(fig, ax, f"val_loss_{m}_vs_{axis}.png"))
        return figures

    def _save(self, fig, ax, name: str) -> Path:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = self.figures / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def plot_eval_curves(self) -> list[Path]:
        figures = []
        for key, label in EVAL_CURVES.items():
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            drawn = False
            for base, names in self.groups.items():
                curves = [self.curves[n][key] for n in names if len(self.curves[n][key]["step"])]
                if curves:
                    self._band(ax, base, [c["step"] for c in curves], [c["value"] for c in curves], base == "dense")
                    drawn = True
            if not drawn:
                plt.close(fig)
                continue
            ax.set(xlabel="training steps", ylabel=label, title=f"{self.setting}: {label}")
            figures.append(self._save(fig, ax, f"{key.split('/')[1]}_vs_step.png"))
        return figures

    def plot_ablations(self, rows: list[dict]) -> list[Path]:
        fig, axes = plt.subplots(1, len(self.modalities), figsize=(4.5 * len(self.modalities), 4.2), squeeze=False)
        for ax, m in zip(axes[0], self.modalities):
            present = [r for r in rows if r[f"val/loss_{m}"] is not None]
            values = [r[f"val/loss_{m}"] for r in present]
            ax.bar(range(len(present)), values, color=["grey" if r["run"] == "dense" else "C0" for r in present])
            ax.set_xticks(range(len(present)), [r["run"] for r in present], rotation=60, ha="right", fontsize=7)
            if values:
                ax.set_ylim(min(values) * 0.98, max(values) * 1.01)
            ax.set_title(f"final {m} val loss")
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        path = self.figures / "ablations_final_val_loss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]

    # --- the whole report -----------------------------------------------------------------

    def write(self) -> Path:
        final_rows, final_keys = self.final_rows()
        speedup = self.speedup_rows()
        ablations = self.ablation_rows()
        accounting = self.accounting_rows()
        figures = self.plot_losses() + self.plot_eval_curves() + self.plot_ablations(ablations)

        md = {
            "final": write_table(final_rows, self.out / "final_metrics", ["run", "arch", "seeds", *final_keys]),
            "speedup": write_table(speedup, self.out / "speedup",
                                   ["run", "modality", "seeds", "target_loss", "steps_frac", "steps_frac_std",
                                    "paper_steps_frac", "flops_frac", "time_frac", "time_frac_std", "paper_time_frac"]),
            "ablations": write_table(ablations, self.out / "ablations",
                                     ["run", "arch"] + [k for m in self.modalities
                                                        for k in (f"val/loss_{m}", f"Δ mot ({m})", f"Δ dense ({m})")]),
            "accounting": write_table(accounting, self.out / "accounting", list(accounting[0]) if accounting else ["run"]),
        }
        lines = [f"# {self.config['study']} / {self.setting}", "",
                 "## Speed-up: fraction of dense's training to reach dense's final validation loss", "",
                 f"Interpolated between evaluation points; trailing smoothing window {self.smoothing}; "
                 "'not reached' = the run never reached it. `paper_*` = the paper's value at 7B where it gives one.",
                 "", md["speedup"], "## Final metrics (mean ± std over seeds)", "", md["final"],
                 "## Ablations: final validation loss and its difference to mot and dense", "", md["ablations"],
                 "## Parameters and FLOPs vs the paper's formulas", "", md["accounting"]]
        if self.missing:
            lines += ["## Missing runs", "", "No evaluation (failed or not run): " + ", ".join(self.missing), ""]
        lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures]
        report_md = self.out / "report.md"
        report_md.write_text("\n".join(lines) + "\n")
        self.log_to_mlflow(speedup)
        log.info("report for %s written to %s (%d runs, %d missing)", self.setting, report_md, len(self.curves),
                 len(self.missing))
        return report_md

    def log_to_mlflow(self, speedup: list[dict]) -> None:
        experiment = experiment_name(self.config["study"], self.setting)
        run_id_file = self.out / "mlflow_run_id"
        if run_id_file.exists():  # a rerun replaces the previous report runs instead of appending to them
            old = run_id_file.read_text().strip()
            for child in self.client.search_runs([self.client.get_run(old).info.experiment_id],
                                                 filter_string=f"tags.mlflow.parentRunId = '{old}'"):
                self.client.delete_run(child.info.run_id)
            self.client.delete_run(old)
            run_id_file.unlink()
        parent = RunLogger.start_or_resume(self.config["results_dir"], experiment, "report", run_id_file,
                                           {"setting": self.setting, "arch": "report"}, {})
        by_run: dict[str, dict] = defaultdict(dict)
        for row in speedup:
            for key in FRACTIONS:
                if row[key] is not None:
                    by_run[row["run"]][f"speedup/{key}_{row['modality']}"] = row[key]
        for run, metrics in by_run.items():
            child_file = self.out / f".mlflow_run_id_{run}"
            child_file.unlink(missing_ok=True)
            child = RunLogger.start_or_resume(self.config["results_dir"], experiment, f"report/{run}", child_file,
                                              {"setting": self.setting, "arch": "report", "about_run": run,
                                               "mlflow.parentRunId": parent.run_id}, {})
            child.log_metrics(metrics, 0)
            child.finish()
            child_file.unlink()
        parent.log_metrics(by_run.get("mot", {}), 0)  # the headline numbers on the report run itself
        parent.set_tags({"missing_runs": ",".join(self.missing) or "none",
                         "not_reached": ",".join(f"{r['run']}:{r['modality']}" for r in speedup
                                                 if r["steps_frac"] is None) or "none"})
        parent.log_artifacts(self.out, "report")
        parent.finish()


def report(config: dict, setting: str) -> Path:
    return SettingReport(config, setting).write()
