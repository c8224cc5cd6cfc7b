"""Claims declared before the run (the study config's `claims:`), their verdicts and their power.

A claim is one-sided, about one comparison of two runs in one setting: `run vs reference, loss, metric < c`
(or `> c`), where the metric is a speed-up fraction (`steps_frac`, `flops_frac`, `time_frac`: the fraction of
the reference's training the run needs to reach the reference's final loss, evaluation.speedup) or `delta`
(the run's final loss minus the reference's, seed by seed). Its level α and its seed count are fixed in the
config before the run.

Verdict, over the claim's seeds (the first `seeds` common seeds, in config order):
- one-sided t-test over the per-seed values of H1 "metric < c" (or > c); the setting's claims are one family,
  Holm-adjusted together; **supported** when the adjusted p < α;
- **not supported** when the one-sided test in the opposite direction rejects at α (the effect is on the wrong
  side of c beyond seed noise);
- **inconclusive** otherwise, with the smallest effect its seeds detect at 80% power;
- **exploratory** with fewer than 2 seeds (no test).
Power (evaluation.power) at α / (claims in the family), Holm's first step: from the measured per-seed sd, else
the claim's `planning_sd`. A study with more seeds than declared is tested on the declared ones (the rest is
shown as exploratory); a report that follows an earlier one with fewer seeds says seeds were added after a look.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.analysis import paired_fractions
from evaluation.paper import paper_value
from evaluation.power import POWER, detectable_effect, seeds_needed
from evaluation.significance import CONFIDENCE, PValue, holm, one_sided_t, t_interval
from mot.config import ConfigError, run_specs, uses_text_only

VERDICTS = ("supported", "not supported", "inconclusive", "exploratory")


@dataclass(frozen=True)
class Claim:
    name: str
    setting: str
    run: str
    reference: str
    loss: str
    metric: str
    direction: str      # "less" (metric < threshold) or "greater"
    threshold: float
    alpha: float
    seeds: int
    planning_sd: float | None = None
    source: str = ""
    paper: float | None = None   # the paper's value of this metric, where it gives one

    def __str__(self) -> str:
        metric = "Δ final loss" if self.metric == "delta" else self.metric
        return (f"{self.run} vs {self.reference}, {self.loss}, {metric} {'<' if self.direction == 'less' else '>'} "
                f"{self.threshold:g}")

    def effect(self, mean: float) -> float:
        """How far `mean` lies on the claimed side of the threshold (negative: the wrong side)."""
        return self.threshold - mean if self.direction == "less" else mean - self.threshold


def _problem(config: dict, raw: dict) -> tuple[str, str] | None:
    """(field, what is wrong) of one declared claim, or None."""
    setting = raw["setting"]
    if setting not in config["settings"]:
        return "setting", f"{setting!r} is not a setting of this study"
    roles = config["settings"][setting].get("roles") or {}
    runs = [*config["settings"][setting]["runs"], *(roles.get("select") or {})]  # a selection stands for its pick
    for field, name in (("run", raw.get("run", roles.get("headline", "mot"))),
                        ("vs", raw.get("vs", roles.get("baseline", "dense")))):
        if name not in runs:
            return field, f"{name!r} is not a run or selection of settings.{setting} (runs: {', '.join(runs)})"
    losses = list(config["settings"][setting]["modalities"]) + (["text_only"] if uses_text_only(config, setting) else [])
    if raw["loss"] not in losses:
        return "loss", f"{raw['loss']!r} is not measured in {setting} ({', '.join(losses)})"
    return None


def claim_problems(config: dict):
    """(key path, what) of every declared claim that points at nothing (checked with the config, before any job)."""
    for i, raw in enumerate(config.get("claims") or []):
        problem = _problem(config, raw)
        if problem:
            yield ["claims", i, problem[0]], problem[1]


def claims_for(config: dict, setting: str | None = None) -> list[Claim]:
    """The study's declared claims (of one setting), role defaults filled in: run = the headline run,
    reference = the baseline. Raises ConfigError naming the claim when it points at nothing."""
    claims = []
    for i, raw in enumerate(config.get("claims") or []):
        problem = _problem(config, raw)
        if problem:
            raise ConfigError(f"claims[{i}].{problem[0]}: {problem[1]}")
        if setting is not None and raw["setting"] != setting:
            continue
        roles = config["settings"][raw["setting"]].get("roles") or {}
        run, reference = raw.get("run", roles.get("headline", "mot")), raw.get("vs", roles.get("baseline", "dense"))
        direction = "less" if "less_than" in raw else "greater"
        claims.append(Claim(
            name=raw.get("name") or f"{raw['setting']}/{run}-vs-{reference}/{raw['loss']}/{raw['metric']}",
            setting=raw["setting"], run=run, reference=reference, loss=raw["loss"], metric=raw["metric"],
            direction=direction, threshold=float(raw["less_than" if direction == "less" else "greater_than"]),
            alpha=float(raw.get("alpha", 0.05)), seeds=int(raw["seeds"]), planning_sd=raw.get("planning_sd"),
            source=raw.get("source", ""),
            paper=None if raw["metric"] == "delta" else paper_value(config, raw["setting"], raw["loss"], raw["metric"])))
    return claims


def claim_values(results, claim: Claim) -> list[float]:
    """The claim's metric per common seed of its two runs (a selection: its pick), in config seed order."""
    run, reference = results.roles.resolve(claim.run), results.roles.resolve(claim.reference)
    if not results.has(run) or not results.has(reference):
        return []
    if claim.metric == "delta":
        own, ref = results.final_by_seed(run, claim.loss), results.final_by_seed(reference, claim.loss)
        return [own[s] - ref[s] for s in results.seeds(run) if s in ref]
    return [r[claim.metric] for r in paired_fractions(results, run, reference, claim.loss)]


def test_claim(claim: Claim, values: list[float], family_size: int = 1, with_power: bool = True) -> dict:
    """Estimate, 95% interval, one-sided p (unadjusted), the opposite-side p, and (`with_power`) power, over
    `values` (already cut to the claim's seeds). The verdict needs the family's Holm step: see `verdicts`."""
    x = [v for v in values if math.isfinite(v)]
    row = {"claim": claim.name, "setting": claim.setting, "statement": str(claim), "alpha": claim.alpha, "declared_seeds": claim.seeds,
           "n": len(values), "estimate": "", "ci_low": "", "ci_high": "", "p": "", "p_opposite": "", "sd": "",
           "sd_from": "", "detectable_effect": "", "detectable_at": "", "seeds_needed": "",
           "paper": "" if claim.paper is None else claim.paper}
    if values:
        row["estimate"] = float(np.mean(values)) if len(x) == len(values) else float("inf")
    if len(x) == len(values) and len(x) >= 2:
        interval = t_interval(x, CONFIDENCE)
        row.update(ci_low=interval.low, ci_high=interval.high, sd=float(np.std(x, ddof=1)), sd_from=f"{len(x)} seeds")
        opposite = "greater" if claim.direction == "less" else "less"
        row["p"] = one_sided_t(x, claim.threshold, claim.direction) or ""
        row["p_opposite"] = one_sided_t(x, claim.threshold, opposite) or ""
    if row["sd"] in ("", 0.0) and claim.planning_sd:
        row.update(sd=float(claim.planning_sd), sd_from="planning_sd (config)")
    if with_power and row["sd"] not in ("", 0.0):
        alpha = claim.alpha / family_size  # Holm's first step: the level the family's smallest p must beat
        n_design = max(claim.seeds, 2)
        row["detectable_effect"] = detectable_effect(row["sd"], n_design, alpha) or ""
        row["detectable_at"] = n_design
        if row["estimate"] != "" and math.isfinite(row["estimate"]):
            row["seeds_needed"] = seeds_needed(claim.effect(row["estimate"]), row["sd"], alpha) or "never"
    return row


def verdicts(rows: list[dict], claims: list[Claim]) -> None:
    """Holm over the family's one-sided p-values, then each claim's verdict and a note in words."""
    adjusted = holm([r["p"] if r["p"] != "" else None for r in rows])
    for row, claim, p_holm in zip(rows, claims, adjusted):
        row["p_holm"] = "" if p_holm is None else p_holm
        if row["n"] < 2:
            row["verdict"] = "exploratory"
        elif p_holm is not None and p_holm < claim.alpha:
            row["verdict"] = "supported"
        elif row["p_opposite"] != "" and row["p_opposite"] < claim.alpha:
            row["verdict"] = "not supported"
        else:
            row["verdict"] = "inconclusive"


def evaluate_claims(results, looks: list[dict]) -> list[dict]:
    """One row per declared claim of the results' setting, with its verdict, power and notes."""
    claims = claims_for(results.config, results.setting)
    rows = []
    for claim in claims:
        values = claim_values(results, claim)
        used = values[:claim.seeds]
        row = test_claim(claim, used, len(claims))
        notes = []
        if len(values) < claim.seeds:
            notes.append(f"ran {len(values)} of the {claim.seeds} declared seeds")
        if len(values) > claim.seeds:
            extra = test_claim(claim, values, len(claims))
            notes.append(f"{len(values)} seeds present, {claim.seeds} declared: the verdict uses the first "
                         f"{claim.seeds}; all {len(values)} give {fmt_estimate(extra)} (exploratory)")
        compared = [results.roles.resolve(r) for r in (claim.run, claim.reference)]
        earlier = [look for look in looks
                   if any(look.get("seeds", {}).get(r, 0) < len(results.groups.get(r, [])) for r in compared)]
        if earlier:
            seen = ", ".join(f"{r} {earlier[0]['seeds'].get(r, 0)}" for r in compared)
            notes.append(f"seeds were added after an earlier report of this study ({seen} seeds): "
                         "a test after a look is not the declared one")
        row["notes"] = "; ".join(notes)
        rows.append(row)
    verdicts(rows, claims)
    for row, claim in zip(rows, claims):
        if row["verdict"] == "exploratory":
            row["notes"] = "; ".join(filter(None, ["one seed: no test", row["notes"]]))
        if row["verdict"] in ("inconclusive", "exploratory") and row["detectable_effect"] != "":
            bound = claim.threshold - row["detectable_effect"] if claim.direction == "less" else \
                claim.threshold + row["detectable_effect"]
            detects = (f"{row['detectable_at']} seeds detect a true {claim.metric} "
                       f"{'<' if claim.direction == 'less' else '>'} {bound:.4g} with {POWER:.0%} power")
            if claim.metric != "delta" and bound <= 0:  # a fraction is never <= 0: no effect is detectable
                detects = (f"{row['detectable_at']} seeds detect no true {claim.metric} with {POWER:.0%} power (the "
                           f"detectable effect, {row['detectable_effect']:.4g}, is beyond any fraction)")
            row["notes"] = "; ".join(filter(None, [detects, row["notes"]]))
    return rows


def fmt_estimate(row: dict) -> str:
    if row["estimate"] == "":
        return "no value"
    if row["ci_low"] == "":
        return f"{row['estimate']:.4f}"
    p = "" if row["p"] == "" else f", one-sided p = {PValue(row['p'])}"
    return f"{row['estimate']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]{p}"


# --- looks: the seed counts earlier reports of this study saw ------------------------------------------------

LOOKS_FILE = "looks.json"


def read_looks(report_dir: Path) -> list[dict]:
    path = report_dir / LOOKS_FILE
    return json.loads(path.read_text()) if path.exists() else []


def record_look(report_dir: Path, looks: list[dict], seeds: dict[str, int]) -> None:
    """Append this report's seed counts when they differ from the last look's (a rerun adds nothing)."""
    if not looks or looks[-1].get("seeds") != seeds:
        looks = looks + [{"seeds": seeds}]
    (report_dir / LOOKS_FILE).write_text(json.dumps(looks, indent=1) + "\n")


# --- power before the run (`mot power`) ----------------------------------------------------------------------

def power_rows(config: dict) -> list[dict]:
    """Per declared claim: the per-seed sd (measured where the study's runs exist, else planning_sd), the
    effect its declared seeds detect at 80% power and the seeds the observed effect needs."""
    from evaluation.results import SettingResults
    from mot.paths import StudyPaths

    paths = StudyPaths.from_config(config)
    rows = []
    for setting in config["settings"]:
        claims = claims_for(config, setting)
        if not claims:
            continue
        present = any((paths.eval_dir(setting, s.name) / "metrics.json").exists() for s in run_specs(config, setting))
        results = SettingResults(config, setting) if present else None
        for claim in claims:
            values = claim_values(results, claim) if results is not None else []
            rows.append(test_claim(claim, values, len(claims)))
    return rows


def power_table(config: dict) -> str:
    from evaluation.tables import col, interval_col

    columns = [col("setting"), col("statement", "claim"), col("alpha", "α"), col("declared_seeds", "declared seeds"),
               col("n", "seeds measured"), interval_col("estimate", "estimate [95% CI]"), col("sd", "per-seed sd"),
               col("sd_from", "sd from"), col("detectable_effect", "detectable effect (80%)"),
               col("detectable_at", "at seeds"), col("seeds_needed", "seeds for the observed effect")]
    rows = power_rows(config)
    if not rows:
        return "no claims declared (the study config's `claims:`)"
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + ("\n\nPower of the one-sided t-test over seeds at α / (claims of the setting), Holm's "
                               "first step; sd measured where the study has >= 2 seeds of both runs, else planning_sd.")
