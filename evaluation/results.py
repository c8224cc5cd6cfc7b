"""Loading one setting's results for the report: each run's validation curves from MLflow and its
`eval/metrics.json`, grouped by the run of the config (its seeds), with the run roles.

The verdict's validation set: a run's final loss in every comparison is the last point of its validation
curve (`train.eval_samples` val samples, the same for every run and seed), the samples the speed-up
crossing and its target are measured on, so one verdict never mixes two validation sets. The whole split's
final loss (`eval/metrics.json`) stays beside it (`whole_split_by_seed`) to show what that choice costs.
Runs without an evaluation (failed under --keep-going) or without a curve are listed as missing, not fatal.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from evaluation.roles import pick, roles_for
from mot.config import run_specs, uses_text_only
from mot.config.grid import with_run_overrides
from mot.settings.registry import objective_class
from mot.paths import StudyPaths
from mot.tracking import client_for

EVAL_CURVES = ("eval/cider", "eval/fid", "eval/clip_score")


def load_curves(client, run_id: str, losses) -> dict[str, dict[str, np.ndarray]]:
    """Validation curves of one MLflow run: per loss, aligned step / FLOPs / time / loss arrays; per eval
    metric over training, step / value arrays."""
    def history(key):
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    flops, time = history("val/cum_flops"), history("val/wall_clock_s")
    curves = {}
    for m in losses:
        loss = history(f"val/loss_{m}")
        steps = sorted(s for s in loss if s in flops and s in time)
        curves[m] = {"step": np.array(steps, float), "flops": np.array([flops[s] for s in steps]),
                     "time": np.array([time[s] for s in steps]), "loss": np.array([loss[s] for s in steps])}
    for key in EVAL_CURVES:
        points = history(key)
        curves[key] = {"step": np.array(sorted(points), float), "value": np.array([points[s] for s in sorted(points)])}
    return curves


class SettingResults:
    """Every present run of one setting: `curves[name]`, `metrics[name]` (eval/metrics.json), `groups[base]`
    (its present seed runs), `seed_of[name]`, and the roles."""

    def __init__(self, config: dict, setting: str):
        self.config, self.setting = config, setting
        self.paths = StudyPaths.from_config(config)
        self.client = client_for(config["results_dir"])
        self.modalities = list(config["settings"][setting]["modalities"])
        # one curve per modality, and text_only (the text-only val rows) when the mixture trains on them
        self.losses = self.modalities + (["text_only"] if uses_text_only(config, setting) else [])
        self.smoothing = config["report"]["smoothing"]
        self.specs = run_specs(config, setting)
        self.curves: dict[str, dict] = {}
        self.metrics: dict[str, dict] = {}
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
            self.metrics[spec.name] = json.loads(metrics_file.read_text())
        self.whole_splits = {loss: self._whole_split(loss) for loss in self.losses}
        self.groups: dict[str, list[str]] = defaultdict(list)
        self.arch, self.shared = {}, {}
        for spec in self.specs:
            self.arch[spec.base_name] = spec.arch
            self.shared[spec.base_name] = (" / ".join("+".join(g) for g in spec.groups) if spec.untie
                                           else "+".join(spec.modalities))  # dense: one set for all
            if spec.name in self.curves:
                self.groups[spec.base_name].append(spec.name)
        objective = objective_class(config, setting)
        # what each run's loss measures (e.g. Transfusion's image loss: the diffusion prediction target)
        self.loss_definition = {spec.base_name: {loss: objective.loss_definition(with_run_overrides(config, spec), loss)
                                                 for loss in self.losses} for spec in self.specs}
        self.seed_of = {spec.name: spec.seed for spec in self.specs}
        self.train = {spec.base_name: spec.train for spec in self.specs}
        self.eval_samples = {base: train["eval_samples"] for base, train in self.train.items()}
        # the roles, a selection's (e.g. each architecture's learning rates) resolved to its best candidate
        self.roles, self.selection = pick(roles_for(config, setting, self.specs), self)

    def train_value(self, base: str, key: str):
        """A run's resolved `train.{key}` (e.g. its learning rate); None for a run not in the config."""
        return self.train[base][key] if base in self.train else None

    def comparable_losses(self, base: str, reference: str) -> list[str]:
        """The losses on which the two runs measure the same quantity (not so for Transfusion image losses of
        different diffusion.prediction targets, say): the only ones compared."""
        return [m for m in self.losses if self.loss_definition[base][m] == self.loss_definition[reference][m]]

    def incomparable(self) -> list[str]:
        """'run vs reference: loss' for each run whose loss measures another quantity than a reference's."""
        references = [r for r in self.roles.references if self.has(r)]
        pairs = {(base, reference): self.comparable_losses(base, reference)
                 for base in self.groups for reference in references if base != reference}
        return [f"{base} vs {reference}: {loss}" for (base, reference), comparable in pairs.items()
                for loss in self.losses if loss not in comparable]

    def has(self, base: str) -> bool:
        return base in self.groups

    def seeds(self, base: str) -> list[int]:
        return [self.seed_of[n] for n in self.groups.get(base, [])]

    def run_of_seed(self, base: str) -> dict[int, str]:
        return {self.seed_of[n]: n for n in self.groups.get(base, [])}

    def final_by_seed(self, base: str, loss: str) -> dict[int, float]:
        """The verdict's final loss per seed: the last point of the validation curve."""
        return {self.seed_of[n]: float(self.curves[n][loss]["loss"][-1]) for n in self.groups.get(base, [])}

    def whole_split_by_seed(self, base: str, loss: str) -> dict[int, float]:
        """The final loss on the whole eval split (eval/metrics.json), per seed where evaluated."""
        key = f"{self.whole_splits[loss]}/loss_{loss}"
        return {self.seed_of[n]: float(self.metrics[n][key]) for n in self.groups.get(base, [])
                if self.metrics[n].get(key) is not None}

    def _whole_split(self, loss: str) -> str:
        """The split every run's whole-split final loss was measured on (metrics.json's `loss_splits`; a file
        written before it holds val, then the only one). Runs evaluated on different splits stop the report."""
        splits = {n: m.get("loss_splits", {}).get(loss, "val") for n, m in self.metrics.items()
                  if any(key.endswith(f"/loss_{loss}") for key in m)}
        if len(set(splits.values())) > 1:
            listed = ", ".join(f"{n}: {split}" for n, split in sorted(splits.items()))
            raise ValueError(f"{self.paths.root / self.setting}/*/eval/metrics.json loss_splits.{loss}: runs were "
                             f"evaluated on different splits ({listed}); expected one: re-run their evaluate stage "
                             "(snakemake --forcerun evaluate)")
        return next(iter(splits.values()), self.config["eval"]["split"])

    def metric_values(self, base: str, key: str) -> list[float]:
        return [self.metrics[n][key] for n in self.groups.get(base, []) if self.metrics[n].get(key) is not None]
