"""Study report of one setting, under results/{study}/{setting}/report/ and in MLflow:

- plots: per modality, validation loss vs steps, FLOPs and wall-clock (every run overlaid, ± 1 sd
  bands over seeds, dense's final loss as a line); CIDEr / FID / CLIP score vs steps; ablation bars
  with seed error bars; the leave-one-modality-out merges as differences to mot;
- tables (md + csv): final metrics, speed-up per run and modality (steps, FLOPs, time; against dense
  of the same seed and against the seed-mean dense curve), ablations (difference to mot and dense),
  merges (when the setting has `merge-*` runs), parameter/FLOP accounting beside the paper's formulas;
- seeds: mean ± sample std where a run has >= 2 seeds, the value alone where it has one (noise not
  measured); whether a run's final loss differs from dense's (and mot's) beyond seed noise by Welch's
  t-test (blank where either side has one seed), see evaluation.significance;
- a `report` MLflow run holding everything as artifacts, with one nested run per run of the setting
  (tag `about_run`) holding its speed-up fractions, seed summaries and p-values.
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

from evaluation.significance import ALPHA, PValue, SeedStat, seed_stat, standard_error, verdict, welch  # noqa: E402
from evaluation.scaling import plot_size_sweep, size_sweep_rows  # noqa: E402
from evaluation.speedup import speedup_fractions  # noqa: E402
from mot.config import run_specs, uses_text_only  # noqa: E402
from mot.settings.accounting import accounting_table  # noqa: E402
from mot.paths import StudyPaths  # noqa: E402
from mot.tracking import RunLogger, client_for, experiment_name  # noqa: E402

log = logging.getLogger("mot.report")
AXES = {"step": "training steps", "flops": "training FLOPs", "time": "wall-clock (s)"}
EVAL_CURVES = {"eval/cider": "CIDEr (higher is better)", "eval/fid": "FID (lower is better)",
               "eval/clip_score": "CLIP score (higher is better)"}
# The paper's headline numbers: fraction of dense's training to match dense's final loss, per setting, run
# and modality (at 7B). FLOPs per step match between MoT and dense, so a FLOPs fraction is a steps fraction.
PAPER = {
    "chameleon": {"mot": {"image": {"steps_frac": 0.558, "flops_frac": 0.558, "time_frac": 0.472},
                          "text": {"steps_frac": 0.558, "flops_frac": 0.558, "time_frac": 0.756}}},
    "chameleon_speech": {"mot": {"speech": {"steps_frac": 0.372, "flops_frac": 0.372}}},
    "transfusion": {"mot": {"image": {"steps_frac": 1 / 3, "flops_frac": 1 / 3}}},
}
FRACTIONS = ("steps_frac", "flops_frac", "time_frac")
MERGE_PREFIX = "merge-"


def paper_value(setting: str, run: str, modality: str, key: str) -> float | str:
    """The paper's value for this cell, or '' where the paper gives none."""
    return PAPER.get(setting, {}).get(run, {}).get(modality, {}).get(key, "")


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


def reached_stat(values: list[float | None]) -> SeedStat | None:
    """Seeds' fractions; None ("not reached") unless every seed reached: a miss is never averaged away."""
    if not values or any(v is None for v in values):
        return None
    return seed_stat(values)


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def fmt(value) -> str:
    if value is None:
        return "not reached"
    if isinstance(value, (SeedStat, PValue)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _csv_cells(column: str, value, split: bool) -> dict:
    """A cell for the CSV: seed summaries become `column` (mean) and `column_std` (blank with one seed)."""
    if split:
        if isinstance(value, SeedStat):
            return {column: value.mean, f"{column}_std": "" if value.std is None else value.std}
        return {column: "not reached" if value is None else value, f"{column}_std": ""}
    if isinstance(value, PValue):
        return {column: float(value)}
    return {column: "not reached" if value is None else value}


def write_table(rows: list[dict], path_stem: Path, columns: list[str], seed_columns: tuple[str, ...] = ()) -> str:
    """Write rows as CSV (numbers; a `_std` column beside each seed summary, and beside `seed_columns`
    even when no row has one) and Markdown; return the Markdown."""
    split = {c: c in seed_columns or any(isinstance(row.get(c), SeedStat) for row in rows) for c in columns}
    csv_columns = [k for c in columns for k in ([c, f"{c}_std"] if split[c] else [c])]
    with open(path_stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns)
        writer.writeheader()
        for row in rows:
            cells = {}
            for c in columns:
                cells.update(_csv_cells(c, row.get(c, ""), split[c]))
            writer.writerow(cells)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    path_stem.with_suffix(".md").write_text(markdown)
    return markdown


def mean_curve(curves: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The seed-mean of several runs' curves, at the evaluation steps they all have."""
    common = sorted(set.intersection(*(set(c["step"].tolist()) for c in curves)))
    return {axis: np.mean([c[axis][np.isin(c["step"], common)] for c in curves], axis=0)
            for axis in ("step", "flops", "time", "loss")}


def _error_bars(ax, xs, values, errors) -> None:
    """Error bars only where seed noise was measured: a one-seed bar gets none (not a zero-width one)."""
    measured = [(x, v, e) for x, v, e in zip(xs, values, errors) if e is not None]
    if measured:
        x, v, e = zip(*measured)
        ax.errorbar(x, v, yerr=e, fmt="none", ecolor="black", capsize=3, lw=1)


class SettingReport:
    def __init__(self, config: dict, setting: str):
        self.config, self.setting = config, setting
        self.paths = StudyPaths.from_config(config)
        self.out = self.paths.report_dir(setting)
        self.figures = self.out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.client = client_for(config["results_dir"])
        self.modalities = config["settings"][setting]["modalities"]
        # the validation losses with a curve: one per modality, and text_only (the text-only val rows) when the
        # mixture trains on them: speed-ups and significance are reported for each
        self.losses = list(self.modalities) + (["text_only"] if uses_text_only(config, setting) else [])
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
            curves = load_curves(self.client, run_id_file.read_text().strip(), self.losses)
            if any(len(curves[m]["loss"]) == 0 for m in self.losses):
                self.missing.append(f"{spec.name} (no validation curve in MLflow)")
                continue
            self.curves[spec.name] = curves
            self.final[spec.name] = json.loads(metrics_file.read_text())
        # base run name -> its seeds' run names (present ones only)
        self.groups: dict[str, list[str]] = defaultdict(list)
        self.arch, self.shared = {}, {}
        for spec in self.specs:
            self.arch[spec.base_name] = spec.arch
            self.shared[spec.base_name] = (" / ".join("+".join(g) for g in spec.groups) if spec.untie
                                           else "+".join(spec.modalities))  # dense: one set for all
            if spec.name in self.curves:
                self.groups[spec.base_name].append(spec.name)
        self.seed_of = {spec.name: spec.seed for spec in self.specs}

    # --- seeds and significance -----------------------------------------------------------

    def final_values(self, base: str, key: str) -> list[float]:
        return [self.final[n][key] for n in self.groups.get(base, []) if self.final[n].get(key) is not None]

    def final_stat(self, base: str, key: str) -> SeedStat | None:
        return seed_stat(self.final_values(base, key))

    def test_against(self, base: str, ref: str, key: str):
        """Welch's test of the run's per-seed final value against `ref`'s (None: not testable or the same run)."""
        if base == ref or ref not in self.groups:
            return None
        return welch(self.final_values(base, key), self.final_values(ref, key))

    def difference(self, base: str, ref: str, key: str) -> dict:
        """Δ of the seed means, Welch's p and the yes/no verdict, blank where they cannot be given."""
        own, other = self.final_stat(base, key), self.final_stat(ref, key)
        test = self.test_against(base, ref, key)
        delta = "" if base == ref or own is None or other is None else own.mean - other.mean
        return {"delta": delta, "p": "" if test is None else test.p, "differs": verdict(test),
                "se": standard_error(own, other)}

    # --- tables ---------------------------------------------------------------------------

    def final_rows(self) -> tuple[list[dict], list[str]]:
        loss_keys = [f"val/loss_{m}" for m in self.losses]
        others = sorted({k for m in self.final.values() for k in m
                         if "/" in k and not k.startswith("over") and k not in loss_keys})
        columns = []
        for m in self.losses:
            columns += [f"val/loss_{m}", f"p vs dense ({m})", f"differs from dense ({m})"]
        columns += others
        rows = []
        for base, names in self.groups.items():
            row = {"run": base, "arch": self.arch[base], "seeds": len(names)}
            for key in loss_keys + others:
                row[key] = self.final_stat(base, key) or ""
            for m in self.losses:
                vs_dense = self.difference(base, "dense", f"val/loss_{m}")
                row[f"p vs dense ({m})"], row[f"differs from dense ({m})"] = vs_dense["p"], vs_dense["differs"]
            rows.append(row)
        return rows, columns

    def speedup_rows(self) -> list[dict]:
        """Per run and modality: each seed against dense of the same seed, and against the seed-mean dense curve."""
        if "dense" not in self.groups:
            return []
        dense_by_seed = {self.seed_of[n]: n for n in self.groups["dense"]}
        rows = []
        for base, names in self.groups.items():
            if base == "dense":
                continue
            for m in self.losses:
                paired = [speedup_fractions(self.curves[dense_by_seed[self.seed_of[n]]][m], self.curves[n][m],
                                            self.smoothing)
                          for n in names if self.seed_of[n] in dense_by_seed]
                dense_mean = mean_curve([self.curves[n][m] for n in self.groups["dense"]])
                vs_mean = [speedup_fractions(dense_mean, self.curves[n][m], self.smoothing) for n in names]
                row = {"run": base, "modality": m, "seeds": len(names), "dense seeds": len(self.groups["dense"]),
                       "paired seeds": len(paired),
                       "target_loss": float(np.mean([r["target_loss"] for r in paired])) if paired else "",
                       "reached": f"{sum(r['steps_frac'] is not None for r in paired)}/{len(paired)}" if paired else "",
                       "target_loss (mean dense)": vs_mean[0]["target_loss"],
                       "reached (mean dense)": f"{sum(r['steps_frac'] is not None for r in vs_mean)}/{len(vs_mean)}"}
                for key in FRACTIONS:
                    row[key] = reached_stat([r[key] for r in paired]) if paired else ""
                    row[f"{key} (mean dense)"] = reached_stat([r[key] for r in vs_mean])
                    row[f"paper_{key}"] = paper_value(self.setting, base, m, key)
                rows.append(row)
        return rows

    def ablation_rows(self) -> list[dict]:
        """Final val loss per modality per run, its difference to mot and to dense (seed means) and Welch's p."""
        rows = []
        for base, names in self.groups.items():
            row = {"run": base, "arch": self.arch[base], "seeds": len(names)}
            for m in self.modalities:
                key = f"val/loss_{m}"
                row[key] = self.final_stat(base, key) or ""
                for ref in ("mot", "dense"):
                    diff = self.difference(base, ref, key)
                    row[f"Δ {ref} ({m})"], row[f"p vs {ref} ({m})"] = diff["delta"], diff["p"]
                row[f"differs from dense ({m})"] = self.difference(base, "dense", key)["differs"]
            rows.append(row)
        return rows

    def ablation_columns(self) -> list[str]:
        return ["run", "arch", "seeds"] + [k for m in self.modalities for k in (
            f"val/loss_{m}", f"Δ mot ({m})", f"p vs mot ({m})", f"Δ dense ({m})", f"p vs dense ({m})",
            f"differs from dense ({m})")]

    def merge_rows(self) -> list[dict]:
        """Leave-one-modality-out: per modality, each `merge-*` run's final val loss beside mot and dense."""
        merges = [b for b in self.groups if b.startswith(MERGE_PREFIX)]
        if not merges:
            return []
        rows = []
        for m in self.modalities:
            key = f"val/loss_{m}"
            for base in [b for b in ("mot", "dense") if b in self.groups] + merges:
                vs_mot, vs_dense = self.difference(base, "mot", key), self.difference(base, "dense", key)
                rows.append({"modality": m, "run": base, "parameter sets": self.shared[base],
                             "seeds": len(self.groups[base]), "val_loss": self.final_stat(base, key) or "",
                             "Δ mot": vs_mot["delta"], "p vs mot": vs_mot["p"], "differs from mot": vs_mot["differs"],
                             "Δ dense": vs_dense["delta"], "p vs dense": vs_dense["p"],
                             "_se_mot": vs_mot["se"]})
        return rows

    def accounting_rows(self) -> list[dict]:
        base_of = {s.name: s.base_name for s in self.specs}
        rows, seen = [], set()
        for row in accounting_table(self.config):
            if row["setting"] != self.setting or base_of.get(row["run"]) in seen | {None}:
                continue  # seeds of a run share its sizes: one row per run
            seen.add(base_of[row["run"]])
            comp = row["params_by_component"]
            rows.append({"run": base_of[row["run"]], "total": row["params_total"], "non_embedding": row["params_non_embedding"],
                         "attn": comp["attn"], "ffn": comp["ffn"], "norm": comp["norm"],
                         "train_flops_per_token": max(v["train"] for v in row["flops_per_token"].values()),
                         "paper_mot_extra_D2": row["paper_formulas"]["mot_extra_paper"],
                         "mot_extra_real": row["paper_formulas"]["mot_extra_real_with_norms"],
                         "moe_extra_real": row["paper_formulas"]["moe_extra_real"]})
        return rows

    # --- plots ----------------------------------------------------------------------------

    def _band(self, ax, base: str, xs: list[np.ndarray], ys: list[np.ndarray], dense: bool) -> None:
        """Seed mean as a line; with >= 2 seeds a ± 1 sample-sd band around it (named in the legend)."""
        n = min(len(y) for y in ys)
        x = np.mean([v[:n] for v in xs], axis=0)
        y = np.stack([v[:n] for v in ys])
        label = base if len(ys) == 1 else f"{base} ({len(ys)} seeds, ± 1 sd)"
        line, = ax.plot(x, y.mean(0), marker="o", markersize=3, label=label, lw=2.2 if dense else 1.3,
                        zorder=3 if dense else 2)
        if len(ys) > 1:
            sd = y.std(0, ddof=1)
            ax.fill_between(x, y.mean(0) - sd, y.mean(0) + sd, color=line.get_color(), alpha=0.25, lw=0, zorder=1)

    def plot_losses(self) -> list[Path]:
        figures = []
        for m in self.losses:
            for axis in AXES:
                fig, ax = plt.subplots(figsize=(6.4, 4.2))
                for base, names in self.groups.items():
                    self._band(ax, base, [self.curves[n][m][axis] for n in names],
                               [self.curves[n][m]["loss"] for n in names], base == "dense")
                if "dense" in self.groups:
                    final = np.mean([self.curves[n][m]["loss"][-1] for n in self.groups["dense"]])
                    ax.axhline(final, color="grey", ls="--", lw=1, label="dense final (seed mean)")
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
        """Final val loss per run (seed mean, ± 1 sd where measured); * = differs from dense beyond seed noise."""
        fig, axes = plt.subplots(1, len(self.modalities), figsize=(4.5 * len(self.modalities), 4.2), squeeze=False)
        for ax, m in zip(axes[0], self.modalities):
            present = [r for r in rows if isinstance(r[f"val/loss_{m}"], SeedStat)]
            stats = [r[f"val/loss_{m}"] for r in present]
            values = [s.mean for s in stats]
            errors = [s.std or 0.0 for s in stats]
            ax.bar(range(len(present)), values, color=["grey" if r["run"] == "dense" else "C0" for r in present])
            _error_bars(ax, range(len(present)), values, [s.std for s in stats])
            for i, r in enumerate(present):
                if r[f"differs from dense ({m})"] == "yes":
                    ax.annotate("*", (i, values[i] + errors[i]), ha="center", va="bottom", fontsize=12)
            ax.set_xticks(range(len(present)), [f"{r['run']} (n={r['seeds']})" for r in present],
                          rotation=60, ha="right", fontsize=7)
            if values:
                ax.set_ylim(min(v - e for v, e in zip(values, errors)) * 0.98,
                            max(v + e for v, e in zip(values, errors)) * 1.01)
            ax.set_title(f"final {m} val loss (* p<{ALPHA} vs dense)", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        path = self.figures / "ablations_final_val_loss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]

    def plot_merges(self, rows: list[dict]) -> list[Path]:
        """Bars per modality, grouped by run: final val loss minus mot's (± Welch standard error where both
        have >= 2 seeds, no bar otherwise; * p < ALPHA)."""
        if not rows:
            return []
        runs = [r for r in dict.fromkeys(row["run"] for row in rows) if r != "mot"]
        by = {(row["run"], row["modality"]): row for row in rows}
        width = 0.8 / len(self.modalities)
        fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(runs) + 2), 4.2))
        for j, m in enumerate(self.modalities):
            xs, deltas, errors = [], [], []
            for i, run in enumerate(runs):
                row = by[run, m]
                if row["Δ mot"] == "":
                    continue
                xs.append(i + (j - (len(self.modalities) - 1) / 2) * width)
                deltas.append(row["Δ mot"])
                errors.append(row["_se_mot"])
                if row["differs from mot"] == "yes":
                    ax.annotate("*", (xs[-1], deltas[-1] + np.sign(deltas[-1]) * (errors[-1] or 0.0)), ha="center",
                                va="bottom" if deltas[-1] >= 0 else "top", fontsize=12)
            ax.bar(xs, deltas, width, label=m, color=f"C{j}")
            _error_bars(ax, xs, deltas, errors)
        ax.axhline(0, color="black", lw=1)
        ax.set_xticks(range(len(runs)), [f"{r} (n={by[r, self.modalities[0]]['seeds']})" for r in runs],
                      rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="final val loss − mot's", title=f"{self.setting}: leave-one-modality-out (0 = mot; * p<{ALPHA})")
        path = self._save(fig, ax, "merges_val_loss_vs_mot.png")
        return [path]

    # --- the whole report -----------------------------------------------------------------

    def noise_lines(self) -> list[str]:
        """The headline in words: is mot's final loss different from dense's beyond seed noise?"""
        if "mot" not in self.groups or "dense" not in self.groups:
            return ["Needs both a dense and a mot run.", ""]
        lines = []
        for m in self.losses:
            key = f"val/loss_{m}"
            mot, dense = self.final_stat("mot", key), self.final_stat("dense", key)
            test = self.test_against("mot", "dense", key)
            if mot is None or dense is None:
                lines.append(f"- {m}: no final {key} in the evaluation of mot or dense")
                continue
            if test is None:
                verdict_text = (f"not tested: {min(mot.n, dense.n)} seed(s) on one side, so seed noise is not "
                                "measured (give dense and mot >= 2 seeds, e.g. `seeds: [0, 1, 2]` on those runs)")
            else:
                verdict_text = (f"Welch's t-test p = {test.p} → "
                                + ("beyond seed noise" if test.beyond_noise() else "**within seed noise**"))
            lines.append(f"- {m}: mot {mot} ({seeds_text(mot.n)}) vs dense {dense} ({seeds_text(dense.n)}): {verdict_text}")
        return lines + [""]

    def write(self) -> Path:
        final_rows, final_columns = self.final_rows()
        speedup = self.speedup_rows()
        ablations = self.ablation_rows()
        merges = self.merge_rows()
        accounting = self.accounting_rows()
        sizes = size_sweep_rows(self)
        figures = (self.plot_losses() + self.plot_eval_curves() + self.plot_ablations(ablations)
                   + self.plot_merges(merges))
        sweep_figure = plot_size_sweep(sizes, self.modalities, self.setting, self.figures / "speedup_vs_size.png")
        figures += [sweep_figure] if sweep_figure else []

        md = {
            "final": write_table(final_rows, self.out / "final_metrics", ["run", "arch", "seeds", *final_columns]),
            "speedup": write_table(speedup, self.out / "speedup", [
                "run", "modality", "seeds", "paired seeds", "reached", "target_loss", "steps_frac", "paper_steps_frac",
                "flops_frac", "paper_flops_frac", "time_frac", "paper_time_frac", "dense seeds",
                "reached (mean dense)", "target_loss (mean dense)", "steps_frac (mean dense)",
                "flops_frac (mean dense)", "time_frac (mean dense)"]),
            "ablations": write_table(ablations, self.out / "ablations", self.ablation_columns()),
            "accounting": write_table(accounting, self.out / "accounting", list(accounting[0]) if accounting else ["run"]),
        }
        md["merges"] = write_table(merges, self.out / "merges", [  # header only without merge-* runs
            "modality", "run", "parameter sets", "seeds", "val_loss", "Δ mot", "p vs mot", "differs from mot",
            "Δ dense", "p vs dense"], seed_columns=("val_loss",))
        seeds = ", ".join(f"{base} {len(names)}" for base, names in self.groups.items())
        lines = [f"# {self.config['study']} / {self.setting}", "",
                 f"Seeds per run: {seeds}. `a ± b` = mean ± sample std over seeds; a value without `± b` comes "
                 "from one seed (its seed noise is not measured). `p vs dense` = Welch's t-test of the run's per-seed "
                 f"final values against dense's; `differs` = p < {ALPHA}; both blank where either run has one seed.",
                 "", "## Is mot's final validation loss different from dense's beyond seed noise?", "",
                 *self.noise_lines(),
                 "## Speed-up: fraction of dense's training to reach dense's final validation loss", "",
                 f"Interpolated between evaluation points; trailing smoothing window {self.smoothing}. Each seed is "
                 "compared with dense of the same seed (`paired seeds`) and with the seed-mean dense curve "
                 "(`(mean dense)` columns); `reached` = how many of those seeds reach the target. A fraction is "
                 "given only when every seed reached it, else 'not reached'. `paper_*` = the paper's value at 7B "
                 "where it gives one.",
                 "", md["speedup"], "## Final metrics (mean ± std over seeds)", "", md["final"],
                 "## Ablations: final validation loss and its difference to mot and dense", "", md["ablations"]]
        if merges:
            lines += ["## Leave-one-modality-out: merged parameter sets vs mot and dense", "",
                      "Per modality, each `merge-*` run (two modalities share one parameter set) beside mot "
                      "(every modality its own) and dense (one shared set).", "", md["merges"]]
        md["sizes"] = write_table(sizes, self.out / "size_sweep", [  # header only without a size sweep
            "size", "modality", "non_embedding dense", "non_embedding mot", "seeds", "reached", "steps_frac",
            "steps_frac (reached seeds)", "dense final", "mot final", "p mot vs dense"],
            seed_columns=("steps_frac", "steps_frac (reached seeds)", "dense final", "mot final"))
        if sizes:
            lines += ["## Size sweep: MoT's speed-up against model size", "",
                      "Each size's mot run against the dense run of the same model config, seed by seed: the "
                      "fraction of dense's steps mot needs to reach dense's final loss (`steps_frac` only when every "
                      "seed reached it; `(reached seeds)` over those that did), and both final losses with "
                      "Welch's p.", "", md["sizes"]]
        lines += ["## Parameters and FLOPs vs the paper's formulas", "", md["accounting"]]
        if self.missing:
            lines += ["## Missing runs", "", "No evaluation (failed or not run): " + ", ".join(self.missing), ""]
        lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures]
        report_md = self.out / "report.md"
        report_md.write_text("\n".join(lines) + "\n")
        self.log_to_mlflow(speedup)
        log.info("report for %s written to %s (%d runs, %d missing)", self.setting, report_md, len(self.curves),
                 len(self.missing))
        return report_md

    def run_metrics(self, speedup: list[dict]) -> tuple[dict[str, dict], dict[str, dict]]:
        """Per run: (metrics, tags) of its nested report run."""
        metrics: dict[str, dict] = defaultdict(dict)
        tags: dict[str, dict] = defaultdict(dict)
        for base, names in self.groups.items():
            tags[base]["seeds"] = ",".join(str(self.seed_of[n]) for n in names)
            metrics[base]["seeds"] = len(names)
            for m in self.losses:
                key = f"val/loss_{m}"
                stat = self.final_stat(base, key)
                if stat is not None:
                    metrics[base][f"final/loss_{m}"] = stat.mean
                    if stat.std is not None:
                        metrics[base][f"final/loss_{m}_std"] = stat.std
                for ref, suffix in (("dense", ""), ("mot", "_vs_mot")):
                    diff = self.difference(base, ref, key)
                    if diff["delta"] != "":
                        metrics[base][f"delta/loss_{m}_vs_{ref}"] = diff["delta"]
                    if diff["p"] != "":
                        metrics[base][f"signif/p_loss_{m}{suffix}"] = float(diff["p"])
                    if base != ref and ref in self.groups:
                        tags[base][f"differs_from_{ref}_{m}"] = diff["differs"] or "untested (one seed)"
        for row in speedup:
            m, run = row["modality"], row["run"]
            for key in FRACTIONS:
                for column, suffix in ((key, ""), (f"{key} (mean dense)", "_vs_mean_dense")):
                    stat = row[column]
                    if isinstance(stat, SeedStat):
                        metrics[run][f"speedup/{key}_{m}{suffix}"] = stat.mean
                        if stat.std is not None:
                            metrics[run][f"speedup/{key}_{m}{suffix}_std"] = stat.std
            for column, suffix in (("reached", ""), ("reached (mean dense)", "_vs_mean_dense")):
                if row[column]:
                    metrics[run][f"speedup/seeds_reached_{m}{suffix}"] = int(row[column].split("/")[0])
        return metrics, tags

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
        by_run, tags_by_run = self.run_metrics(speedup)
        for run, metrics in by_run.items():
            child_file = self.out / f".mlflow_run_id_{run}"
            child_file.unlink(missing_ok=True)
            child = RunLogger.start_or_resume(self.config["results_dir"], experiment, f"report/{run}", child_file,
                                              {"setting": self.setting, "arch": "report", "about_run": run,
                                               "mlflow.parentRunId": parent.run_id, **tags_by_run[run]}, {})
            child.log_metrics(metrics, 0)
            child.finish()
            child_file.unlink()
        parent.log_metrics({k: v for k, v in by_run.get("mot", {}).items() if k != "seeds"}, 0)  # the headline
        parent.set_tags({"missing_runs": ",".join(self.missing) or "none",
                         "not_reached": ",".join(f"{r['run']}:{r['modality']}" for r in speedup
                                                 if r["steps_frac"] is None) or "none",
                         "seeds": ",".join(f"{b}:{len(n)}" for b, n in self.groups.items()),
                         **{k: v for k, v in tags_by_run.get("mot", {}).items() if k.startswith("differs_")}})
        parent.log_artifacts(self.out, "report")
        parent.finish()


def report(config: dict, setting: str) -> Path:
    return SettingReport(config, setting).write()
