"""The report's statistics: one list of rows per table, each table one family of tests (its p-values
Holm-adjusted together, `p_holm` beside `p`). Rows hold numbers under stable keys; tables.py decides how
they read. Every comparison is of two runs named by their roles (results.roles), never by a name prefix.

- comparisons: every run against each comparison target (the headline run and the baseline), per loss:
  Δ = run − reference of the final loss (the curve's last point), 95% interval, paired t-test over the
  common seeds (Welch where fewer than 2 are common), ρ, effect size; the whole split's Δ beside it;
- speed-up: every run against the baseline of the same seed: fraction of the baseline's steps / FLOPs /
  wall-clock to reach its final loss, every seed counted (beyond the end by relative speed, see
  evaluation.speedup), mean with a 95% t-interval, the t-test of "fraction = 1";
- merges: the leave-one-modality-out runs beside the headline run and the baseline;
- gap (descriptive): the headline run minus the baseline along training, paired by seed, with 95% intervals;
- prompt following: per run that generates images, its samples' CLIP score with their own prompts minus with
  another sample's prompt (the same images), per seed: mean, 95% interval, one-sided t-test of "no more than
  shuffled".
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from evaluation.paper import paper_value
from evaluation.significance import ALPHA, Difference, PValue, compare, holm, seed_stat, t_interval
from evaluation.speedup import speedup_fractions

FRACTIONS = ("steps_frac", "flops_frac", "time_frac")


def difference_cells(diff: Difference | None, prefix: str = "") -> dict:
    """A Difference as row cells (blank where not measured)."""
    if diff is None:
        return {f"{prefix}{k}": "" for k in ("delta", "ci_low", "ci_high", "p", "method", "n", "rho", "effect_size")}
    return {f"{prefix}delta": diff.delta,
            f"{prefix}ci_low": "" if diff.interval is None else diff.interval.low,
            f"{prefix}ci_high": "" if diff.interval is None else diff.interval.high,
            f"{prefix}p": "" if diff.p is None else diff.p, f"{prefix}method": diff.method or "untested",
            f"{prefix}n": diff.n, f"{prefix}rho": "" if diff.rho is None else diff.rho,
            f"{prefix}effect_size": "" if diff.effect_size is None else diff.effect_size}


def add_holm(rows: list[dict], p_keys: tuple[str, ...] = ("p",)) -> None:
    """Holm-adjust every p of the table as one family: `{key}_holm` beside each `key`, and `differs_{key}`
    (yes / no at ALPHA on the adjusted p, blank untested)."""
    cells = [(i, k) for i, row in enumerate(rows) for k in p_keys]
    adjusted = holm([rows[i][k] if rows[i].get(k, "") != "" else None for i, k in cells])
    for (i, k), value in zip(cells, adjusted):
        rows[i][f"{k}_holm"] = "" if value is None else value
        rows[i][f"differs_{k}"] = "" if value is None else ("yes" if value < ALPHA else "no")


def comparison_rows(results) -> list[dict]:
    """Each pair once (the baseline against the headline run is the headline against the baseline, mirrored:
    a test counted twice would weigh twice in the family)."""
    rows, pairs = [], set()
    baseline = results.roles.baseline
    for base in [b for b in results.groups if b != baseline] + [b for b in results.groups if b == baseline]:
        for reference in results.roles.references:
            if reference == base or not results.has(reference) or frozenset((base, reference)) in pairs:
                continue
            pairs.add(frozenset((base, reference)))
            for loss in results.comparable_losses(base, reference):
                diff = compare(results.final_by_seed(base, loss), results.final_by_seed(reference, loss))
                whole = compare(results.whole_split_by_seed(base, loss), results.whole_split_by_seed(reference, loss))
                rows.append({"run": base, "arch": results.arch[base], "reference": reference, "loss": loss,
                             "seeds": len(results.groups[base]), **difference_cells(diff),
                             **difference_cells(whole, "whole_")})
    add_holm(rows)
    return rows


def fraction_cells(values: list[float], key: str) -> dict:
    """Per-seed fractions as mean, 95% t-interval and the t-test of "fraction = 1" (two-sided)."""
    finite = [v for v in values if math.isfinite(v)]
    cells = {key: "", f"{key}_ci_low": "", f"{key}_ci_high": "", f"{key}_seeds": ";".join(f"{v:.3f}" for v in values)}
    if not values:
        return cells
    if len(finite) < len(values):  # the baseline's curve starts below the run's final loss: no finite speed
        cells.update({key: float("inf"), f"{key}_ci_high": float("inf")})
        return cells
    interval = t_interval(values)
    cells[key] = float(np.mean(values))
    if interval is not None:
        cells.update({f"{key}_ci_low": interval.low, f"{key}_ci_high": interval.high})
    return cells


def fraction_test(values: list[float]) -> PValue | str:
    x = np.asarray(values, float)
    if len(x) < 2 or not np.all(np.isfinite(x)) or x.std(ddof=1) == 0:
        return ""
    return PValue(stats.ttest_1samp(x, 1.0).pvalue)


def mean_curve(curves: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The seed-mean of several runs' curves, at the evaluation steps they all have."""
    common = sorted(set.intersection(*(set(c["step"].tolist()) for c in curves)))
    return {axis: np.mean([c[axis][np.isin(c["step"], common)] for c in curves], axis=0)
            for axis in ("step", "flops", "time", "loss")}


def paired_fractions(results, base: str, reference: str, loss: str) -> list[dict]:
    """speedup_fractions of each seed of `base` against `reference` of the same seed (seed order)."""
    reference_of = results.run_of_seed(reference)
    return [speedup_fractions(results.curves[reference_of[results.seed_of[n]]][loss], results.curves[n][loss],
                              results.smoothing)
            for n in results.groups.get(base, []) if results.seed_of[n] in reference_of]


def speedup_rows(results) -> list[dict]:
    """Per run and loss: each seed against the baseline of the same seed (the family's test: fraction = 1),
    and, descriptively, against the seed-mean baseline curve."""
    baseline = results.roles.baseline
    if not results.has(baseline):
        return []
    rows = []
    for base, names in results.groups.items():
        if base == baseline:
            continue
        for loss in results.comparable_losses(base, baseline):
            paired = paired_fractions(results, base, baseline, loss)
            baseline_mean = mean_curve([results.curves[n][loss] for n in results.groups[baseline]])
            vs_mean = [speedup_fractions(baseline_mean, results.curves[n][loss], results.smoothing) for n in names]
            row = {"run": base, "loss": loss, "seeds": len(names), "paired_seeds": len(paired),
                   "baseline_seeds": len(results.groups[baseline]),
                   "beyond_end": sum(not r["reached"] for r in paired),
                   "target_loss": float(np.mean([r["target_loss"] for r in paired])) if paired else "",
                   "target_loss_vs_mean": vs_mean[0]["target_loss"]}
            for key in FRACTIONS:
                row.update(fraction_cells([r[key] for r in paired], key))
                row[f"{key}_vs_mean"] = seed_stat([r[key] for r in vs_mean])
                value = paper_value(results.config, results.setting, loss, key) if base == results.roles.headline else None
                row[f"paper_{key}"] = "" if value is None else value
            row["p"] = fraction_test([r["steps_frac"] for r in paired])
            rows.append(row)
    add_holm(rows)
    return rows


def merge_rows(results) -> list[dict]:
    """Leave-one-modality-out: per modality, each merge run's final loss beside the headline run's and the
    baseline's, with its difference to both (one family: both columns of the whole table)."""
    merges = [b for b in results.roles.merges if results.has(b)]
    if not merges:
        return []
    headline, baseline = results.roles.headline, results.roles.baseline
    rows = []
    for m in results.modalities:
        for base in [b for b in (headline, baseline) if results.has(b)] + merges:
            own = results.final_by_seed(base, m)
            row = {"modality": m, "run": base, "parameter_sets": results.shared[base], "seeds": len(own),
                   "val_loss": seed_stat(own.values()) or ""}
            for prefix, reference in (("vs_headline_", headline), ("vs_baseline_", baseline)):
                diff = (None if base == reference or m not in results.comparable_losses(base, reference)
                        else compare(own, results.final_by_seed(reference, m)))
                row.update(difference_cells(diff, prefix))
                row[f"{prefix}se"] = "" if diff is None or diff.se is None else diff.se
            rows.append(row)
    add_holm(rows, ("vs_headline_p", "vs_baseline_p"))
    return rows


def final_metric_rows(results) -> tuple[list[dict], list[str]]:
    """Descriptive: per run, each loss at the curve's last point and on the whole split, and every other
    metric of eval/metrics.json, as mean ± std over seeds (no tests: those are in the comparison tables)."""
    whole = {m: f"{results.whole_splits[m]}/loss_{m}" for m in results.losses}
    loss_keys = set(whole.values())
    others = sorted({k for m in results.metrics.values() for k in m
                     if "/" in k and not k.startswith("over") and k not in loss_keys})
    rows = []
    for base, names in results.groups.items():
        row = {"run": base, "arch": results.arch[base], "seeds": len(names)}
        for m in results.losses:
            row[f"curve/loss_{m}"] = seed_stat(results.final_by_seed(base, m).values()) or ""
            row[whole[m]] = seed_stat(results.whole_split_by_seed(base, m).values()) or ""
        for key in others:
            row[key] = seed_stat(results.metric_values(base, key)) or ""
        rows.append(row)
    columns = [k for m in results.losses for k in (f"curve/loss_{m}", whole[m])] + others
    return rows, columns


def gap_rows(results) -> list[dict]:
    """Δ(t) = headline − baseline validation loss at every evaluation step both have, per loss: the mean of the
    same-seed differences with its 95% t-interval (>= 2 common seeds), so "ahead mid-run, caught up by the end"
    and "no gap at any time" read apart. Descriptive: one point per step, no test."""
    headline, baseline = results.roles.headline, results.roles.baseline
    baseline_of = results.run_of_seed(baseline)
    pairs = [(n, baseline_of[results.seed_of[n]]) for n in results.groups.get(headline, [])
             if results.seed_of[n] in baseline_of]
    rows = []
    for loss in results.comparable_losses(headline, baseline) if pairs else []:
        curves = [(results.curves[h][loss], results.curves[b][loss]) for h, b in pairs]
        steps = sorted(set.intersection(*(set(c["step"].tolist()) for pair in curves for c in pair)))
        for step in steps:
            gaps = [float(h["loss"][h["step"] == step][0] - b["loss"][b["step"] == step][0]) for h, b in curves]
            interval = t_interval(gaps)
            rows.append({"loss": loss, "step": int(step), "seeds": len(gaps), "delta": float(np.mean(gaps)),
                         "ci_low": "" if interval is None else interval.low,
                         "ci_high": "" if interval is None else interval.high})
    return rows


def prompt_rows(results) -> list[dict]:
    """Does each run's generation follow its prompt? Per seed, the CLIP score of its images with their own
    prompts minus with another image's prompt (eval/clip_score − eval/clip_score_shuffled), Holm over the table."""
    keys = ("eval/clip_score", "eval/clip_score_shuffled")
    rows = []
    for base, names in results.groups.items():
        scored = [results.metrics[n] for n in names if all(results.metrics[n].get(k) is not None for k in keys)]
        if scored:
            rows.append({"run": base, "arch": results.arch[base],
                         **prompt_gap([m[keys[0]] for m in scored], [m[keys[1]] for m in scored])})
    add_holm(rows)
    return rows


def prompt_gap(own: list[float], shuffled: list[float]) -> dict:
    """CLIP scores of the same images with their own prompts and with shuffled ones, one pair per seed: the
    paired gap's mean, 95% t-interval and one-sided t-test of "gap <= 0" (the images do not follow the prompts)."""
    gaps = np.subtract(own, shuffled)
    interval = t_interval(gaps.tolist())
    p = (PValue(stats.ttest_1samp(gaps, 0.0, alternative="greater").pvalue)
         if len(gaps) >= 2 and gaps.std(ddof=1) > 0 else "")
    return {"seeds": len(gaps), "clip_score": float(np.mean(own)), "clip_score_shuffled": float(np.mean(shuffled)),
            "gap_seeds": ";".join(f"{g:.2f}" for g in gaps), "gap": float(gaps.mean()),
            "gap_ci_low": "" if interval is None else interval.low,
            "gap_ci_high": "" if interval is None else interval.high, "p": p}
