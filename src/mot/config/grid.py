"""The run grid: every (setting, run, seed) of a validated study config, with its sections resolved
(study section, overridden by the setting's, overridden by the run's)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from mot.config.files import ConfigError, deep_merge
from mot.grouping import COMPONENTS


# sections an objective reads (its `config_sections`) that a run may change for itself
OBJECTIVE_SECTIONS = ("diffusion",)


def resolve_section(config: dict, setting: str, run: str, section: str) -> dict:
    """Global section, overridden by the setting's, overridden by the run's."""
    setting_cfg = config["settings"][setting]
    resolved = copy.deepcopy(config.get(section, {}))
    for override in (setting_cfg.get(section), setting_cfg["runs"][run].get(section)):
        if override:
            resolved = deep_merge(resolved, override)
    # the global section had its defaults filled; overrides only carry what they name
    return resolved


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid: a (setting, run, seed) with everything resolved."""

    study: str
    setting: str
    name: str          # directory and MLflow run name, e.g. "mot" or "mot-s1"
    base_name: str     # the run's name in the config
    seed: int
    arch: str
    ablation: str
    modalities: tuple[str, ...]
    untie: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    moe: dict | None
    model: dict
    train: dict
    # the run's changes to sections its setting's objective reads (e.g. {"diffusion": {"prediction": ...}})
    objective_overrides: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        spec = {
            "study": self.study, "setting": self.setting, "run": self.name, "seed": self.seed,
            "arch": self.arch, "ablation": self.ablation, "modalities": list(self.modalities),
            "untie": list(self.untie), "groups": [list(g) for g in self.groups], "moe": self.moe,
            "model": self.model, "train": self.train,
        }
        if self.objective_overrides:  # only when set: the runs without keep their fingerprints
            spec["objective_overrides"] = self.objective_overrides
        return spec

    def snapshot_steps(self, config: dict) -> list[int]:
        """Steps before the last at which the weights are kept for evaluation over training."""
        over = config["eval"]["over_training"]
        if over["runs"] and self.base_name not in over["runs"]:
            return []
        return sorted(s for s in over["steps"] if s < self.train["steps"])


def setting_sequences(config: dict, setting: str) -> dict:
    """The study's sequences section overridden by the setting's."""
    return deep_merge(config["sequences"], config["settings"][setting].get("sequences") or {})


def uses_text_only(config: dict, setting: str) -> bool:
    """Whether the setting's training mixture draws text-only documents."""
    return setting_sequences(config, setting)["mixture"].get("text_only", 0) > 0


def text_only_seq_len(config: dict) -> int:
    """Text-only documents are cut into rows of this many tokens + 1: the longest seq_len of the settings that
    draw them (one tokenization serves them all; a shorter setting cuts its rows further)."""
    lengths = [setting_sequences(config, s)["seq_len"] for s in config["settings"] if uses_text_only(config, s)]
    return max(lengths, default=config["sequences"]["seq_len"])


def run_seeds(config: dict, setting: str, run: str) -> list[int]:
    """The run's seeds: its own `seeds:`, else its setting's, else the study's (the most specific wins)."""
    setting_cfg = config["settings"][setting]
    return list(setting_cfg["runs"][run].get("seeds") or setting_cfg.get("seeds") or config["seeds"])


def seed_run_name(base_name: str, seed: int, n_seeds: int) -> str:
    """A run with one seed keeps its plain name; with several, each seed is `{run}-s{seed}`."""
    return base_name if n_seeds == 1 else f"{base_name}-s{seed}"


def run_specs(config: dict, setting: str | None = None) -> list[RunSpec]:
    """Every run of the grid (all seeds), in config order."""
    specs = []
    for setting_name, setting_cfg in config["settings"].items():
        if setting is not None and setting_name != setting:
            continue
        modalities = tuple(setting_cfg["modalities"])
        for base_name, run_cfg in setting_cfg["runs"].items():
            groups = run_cfg.get("groups") or [[m] for m in modalities]
            moe = copy.deepcopy(run_cfg.get("moe"))
            if moe is not None:
                moe["modalities"] = moe.get("modalities") or list(modalities)
            seeds = run_seeds(config, setting_name, base_name)
            for seed in seeds:
                specs.append(RunSpec(
                    study=config["study"], setting=setting_name, name=seed_run_name(base_name, seed, len(seeds)),
                    base_name=base_name, seed=seed,
                    arch=run_cfg.get("arch", base_name), ablation=run_cfg.get("ablation", "none"),
                    modalities=modalities,
                    untie=tuple(c for c in COMPONENTS if c in run_cfg.get("untie", [])),
                    groups=tuple(tuple(g) for g in groups), moe=moe,
                    model=resolve_section(config, setting_name, base_name, "model"),
                    train=resolve_section(config, setting_name, base_name, "train"),
                    objective_overrides={section: copy.deepcopy(run_cfg[section]) for section in OBJECTIVE_SECTIONS
                                         if run_cfg.get(section)},
                ))
    return specs


def with_run_overrides(config: dict, run: RunSpec) -> dict:
    """The config as `run`'s objective reads it: the sections of OBJECTIVE_SECTIONS with the run's changes."""
    if not run.objective_overrides:
        return config
    return {**config, **{section: deep_merge(config[section], change)
                         for section, change in run.objective_overrides.items()}}


def find_run(config: dict, setting: str, run: str) -> RunSpec:
    for spec in run_specs(config, setting):
        if spec.name == run:
            return spec
    names = [s.name for s in run_specs(config, setting)]
    raise ConfigError(f"settings.{setting}.runs: no run named {run!r} (runs: {', '.join(names)})")
