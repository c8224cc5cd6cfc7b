"""What each run of a setting is to the report, from the config (`settings.{setting}.roles`), not from its
name: the baseline (every run's speed-up and first comparison target), the headline run (the headline
comparison with the baseline; the second comparison target of ablations and merges) and the merges.

A role may be a selection (`roles.select: {name: [candidate runs]}`, e.g. each architecture at several
learning rates): the report then takes the candidate with the lowest final loss, summed over the setting's
modalities and averaged over seeds, as that role (`pick`), so the headline comparison is best against best.
The loss it picks on is `roles.select_on`: `whole_split` (eval/metrics.json, the `eval.split`: with
`eval.split: test` disjoint from the validation curve the verdicts use) or `curve` (the curve's last point, the
verdict's own samples: the pick then favours each role's luckiest candidate on those samples)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Roles:
    baseline: str
    headline: str
    merges: tuple[str, ...]
    select: dict[str, tuple[str, ...]] = field(default_factory=dict)   # selection name -> its candidate runs
    select_on: str = "whole_split"
    picked: dict[str, str] = field(default_factory=dict)               # selection name -> the run it picked

    @property
    def references(self) -> tuple[str, str]:
        """The comparison targets of every run, in table order."""
        return self.headline, self.baseline

    def resolve(self, name: str) -> str:
        """A run name, or a selection's picked run (the name itself while nothing is picked)."""
        return self.picked.get(name, name)


def roles_for(config: dict, setting: str, specs) -> Roles:
    """The setting's roles; merges default to the runs whose `groups` put >= 2 modalities in one parameter set."""
    declared = config["settings"][setting].get("roles") or {}
    merges = declared.get("merges")
    if merges is None:
        merges = list(dict.fromkeys(s.base_name for s in specs if s.untie and any(len(g) > 1 for g in s.groups)))
    return Roles(declared.get("baseline", "dense"), declared.get("headline", "mot"), tuple(merges),
                 {name: tuple(runs) for name, runs in (declared.get("select") or {}).items()},
                 declared.get("select_on", "whole_split"))


def role_problems(config: dict):
    """(key path, what) of each selection that points at nothing or is ambiguous (checked with the config)."""
    for setting, section in config["settings"].items():
        roles = section.get("roles") or {}
        for name, candidates in (roles.get("select") or {}).items():
            where = ["settings", setting, "roles", "select", name]
            if name in section["runs"]:
                yield where, f"{name!r} is a run too: a selection needs a name of its own"
            for run in candidates:
                if run not in section["runs"]:
                    yield where, f"{run!r} is not a run of settings.{setting} (runs: {', '.join(section['runs'])})"


def selection_score(results, run: str, select_on: str) -> tuple[float, dict[str, float]] | None:
    """(the seed-mean of the final loss summed over the setting's modalities, each modality's seed mean) of one
    candidate, or None without a result. The sum weighs each modality's loss equally (the training loss weighs
    them by their target tokens instead)."""
    by_seed = results.whole_split_by_seed if select_on == "whole_split" else results.final_by_seed
    per_loss = {m: by_seed(run, m) for m in results.modalities}
    seeds = set.intersection(*(set(v) for v in per_loss.values())) if per_loss else set()
    if not seeds:
        return None
    total = float(np.mean([sum(per_loss[m][s] for m in results.modalities) for s in seeds]))
    return total, {m: float(np.mean([per_loss[m][s] for s in seeds])) for m in results.modalities}


def pick(roles: Roles, results) -> tuple[Roles, list[dict]]:
    """Each selection's best present candidate, and one row per candidate (its learning rate, seeds, losses,
    score, whether picked). The roles that name a selection become its picked run."""
    rows, picked = [], {}
    for name, candidates in roles.select.items():
        scored = {run: selection_score(results, run, roles.select_on) for run in candidates if results.has(run)}
        scored = {run: score for run, score in scored.items() if score is not None}
        if scored:
            picked[name] = min(scored, key=lambda run: scored[run][0])
        for run in candidates:
            row = {"selection": name, "run": run, "lr": results.train_value(run, "lr"),
                   "seeds": len(results.groups.get(run, [])), "score": "", "picked": ""}
            if run in scored:
                row["score"] = scored[run][0]
                row.update({f"loss_{m}": v for m, v in scored[run][1].items()})
                row["picked"] = "yes" if picked.get(name) == run else ""
            rows.append(row)
    resolved = replace(roles, picked=picked, baseline=picked.get(roles.baseline, roles.baseline),
                       headline=picked.get(roles.headline, roles.headline))
    return resolved, rows
