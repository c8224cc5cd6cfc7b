"""Writing a setting's report where people read it: `report.md` (the tables' Markdown with the text that
says how to read them) and MLflow (a `report` run holding every file as an artifact, the headline and the
claims' verdicts; one nested run per run of the setting, tag `about_run`, holding its numbers)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from evaluation.analysis import FRACTIONS
from evaluation.significance import ALPHA, PValue, SeedStat, seed_stat
from mot.tracking import RunLogger, experiment_name


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def claims_lines(claims: list[dict], claims_md: str) -> list[str]:
    if not claims:
        return ["No claims are declared for this setting (the study config's `claims:`): every comparison below "
                "is exploratory.", ""]
    lines = []
    for c in claims:
        estimate = "no value" if c["estimate"] == "" else (
            f"{c['estimate']:.4f}" if c["ci_low"] == "" else f"{c['estimate']:.4f} [95% CI {c['ci_low']:.4f}, "
                                                              f"{c['ci_high']:.4f}]")
        p = "" if c["p_holm"] == "" else f", one-sided p = {PValue(c['p'])}, Holm p = {PValue(c['p_holm'])}"
        lines.append(f"- **{c['verdict']}**: {c['statement']} (α = {c['alpha']}, {c['n']} of {c['declared_seeds']} "
                     f"declared seeds): {estimate}{p}" + (f". {c['notes']}" if c["notes"] else ""))
    return lines + ["", claims_md]


def holm_verdict(r: dict, interval: str, headline: str, family_size: int) -> str:
    """The headline's verdict on one comparison row: beyond seed noise on the Holm-adjusted p; else not detected,
    said apart where the raw interval already excludes 0 (then it is the family's correction that does not reject)."""
    if r["p_holm"] < ALPHA:
        return "**beyond seed noise**"
    if r["ci_low"] <= 0 <= r["ci_high"]:
        return (f"**not detected** (within seed noise: the interval {interval} holds gains and losses of "
                f"that size alike, so this is no evidence of no gain)")
    side = "worse" if r["ci_low"] > 0 else "better"
    return (f"**not detected after Holm** (the raw 95% interval {interval} lies where {headline} is {side}, but "
            f"the test does not reject over the family's {family_size} tests)")


def headline_lines(comparisons: list[dict], speedup: list[dict], roles, losses, family_size: int) -> list[str]:
    """The headline in words: the headline run against the baseline, per loss, on the Holm-adjusted p."""
    rows = {r["loss"]: r for r in comparisons if r["run"] == roles.headline and r["reference"] == roles.baseline}
    fractions = {r["loss"]: r for r in speedup if r["run"] == roles.headline}
    if not rows:
        return [f"Needs both a {roles.baseline} and a {roles.headline} run.", ""]
    lines = []
    for m in losses:
        r = rows.get(m)
        if r is None:
            continue
        if r["p"] == "":
            text = (f"Δ = {r['delta']:+.4f}, not tested: {r['n']} seed(s) on one side, so seed noise is not measured "
                    f"(give {roles.baseline} and {roles.headline} >= 2 common seeds)")
        else:
            interval = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
            rho = "" if r["rho"] == "" else f", ρ = {r['rho']:.2f}"
            text = (f"Δ = {r['delta']:+.4f} {interval} ({r['method']}, {seeds_text(r['n'])}{rho}), p = {PValue(r['p'])}, "
                    f"Holm p = {PValue(r['p_holm'])} over the {family_size} tests of the comparisons table → ")
            text += holm_verdict(r, interval, roles.headline, family_size)
        f = fractions.get(m)
        if f and f["steps_frac"] != "":
            frac = "∞" if math.isinf(f["steps_frac"]) else f"{f['steps_frac']:.3f}"
            if f["steps_frac_ci_low"] != "":
                frac += f" [{f['steps_frac_ci_low']:.3f}, {f['steps_frac_ci_high']:.3f}]"
            text += f"; steps fraction {frac}"
        lines.append(f"- {m}: {text}")
    return lines + [""]


def method_lines(results) -> list[str]:
    samples = sorted({v for v in results.eval_samples.values()}, key=str)
    where = "the whole split" if samples == [None] else f"the first {', '.join(str(s) for s in samples)} val samples"
    return [
        "How to read this report: a run's final loss in every comparison, claim and speed-up is the last point of "
        f"its validation curve ({where}, `train.eval_samples`; the same samples for every run and seed), the samples "
        "the speed-up target and crossing are measured on: one validation set for the whole verdict. That choice "
        "costs no compute (a whole-split curve every `eval_every` steps costs ~50% of training, "
        "`benchmarks/eval_cost.py`); it costs precision, shown beside each comparison as the whole split's Δ "
        "(`eval/metrics.json`, descriptive). Two runs with >= 2 common seeds are compared seed by seed "
        "(same seed = same batches): Δ = run − reference, its 95% t-interval, the paired t-test, the same-seed "
        "correlation ρ and d_z = mean Δ / sd Δ; Welch's test (Cohen's d) where fewer seeds are common. Each table "
        f"is one family: its p-values are Holm-adjusted together and `differs` uses the adjusted p < {ALPHA}. A "
        "speed-up fraction counts every seed: a seed that does not reach the baseline's final loss gets a fraction "
        "above 1 from its relative speed at its end (its total over the step at which the baseline got down to the "
        "seed's own final loss), so no seed is dropped and the 95% t-interval is over all of them. Rows not "
        "declared as a claim are exploratory.", ""]


def write_markdown(out: Path, results, md: dict[str, str], claims: list[dict], comparisons, speedup, merges, sizes,
                   figures: list[Path], looks: list[dict]) -> Path:
    roles, setting = results.roles, results.setting
    seeds = ", ".join(f"{base} {len(names)}" for base, names in results.groups.items())
    n_tests = sum(r["p"] != "" for r in comparisons)
    lines = [f"# {results.config['study']} / {setting}", "",
             "## Declared claims and their verdicts", "", *claims_lines(claims, md["claims"]),
             f"## Headline: {roles.headline} vs {roles.baseline}", "",
             *headline_lines(comparisons, speedup, roles, results.losses, n_tests),
             f"Seeds per run: {seeds}. Roles: baseline `{roles.baseline}`, headline `{roles.headline}`"
             + (f", merges {', '.join(f'`{m}`' for m in roles.merges)}" if roles.merges else "") + ".", "",
             *method_lines(results)]
    if len(looks) > 1:
        lines += ["Earlier reports of this study saw other seed counts: " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in look["seeds"].items()) for look in looks[:-1])
            + ". Seeds added after a look make these tests post hoc unless the claim declared them.", ""]
    if results.selection:
        split = results.config["eval"]["split"]
        on = (f"the final loss on the {split} split (eval/metrics.json)" if roles.select_on == "whole_split"
              else "the validation curve's last point")
        disjoint = ("disjoint from the curve's val samples the verdicts use" if roles.select_on == "whole_split"
                    and split != "val" else "the verdicts' own samples or a superset of them: the pick favours each "
                    "selection's luckiest candidate there, by as much for one selection as for the other")
        lines += ["## Selection: best against best", "",
                  f"Each selection's candidate with the lowest {on}, summed over the modalities and averaged over "
                  f"seeds, is that role ({disjoint}): "
                  + ", ".join(f"`{name}` → `{run}`" for name, run in roles.picked.items()) + ". Every other "
                  "candidate stays in the tables below as an exploratory run.", "", md["selection"]]
    incomparable = results.incomparable()
    lines += [f"## Comparisons: every run against {roles.headline} and {roles.baseline} (one family)", "",
              *([f"Not compared (the two losses measure different quantities, e.g. another diffusion prediction "
                 f"target): {'; '.join(incomparable)}.", ""] if incomparable else []),
              md["comparisons"],
              f"## Speed-up: fraction of {roles.baseline}'s training to reach {roles.baseline}'s final validation loss "
              "(one family)", "",
              f"Each seed against {roles.baseline} of the same seed, interpolated between evaluation points "
              f"(smoothing window {results.smoothing}); `p (frac = 1)` tests no speed-up. `(mean {roles.baseline})` "
              f"columns: against the seed-mean {roles.baseline} curve (mean ± sd, descriptive). `paper` = the "
              "paper's value at 7B where it gives one.", "", md["speedup"]]
    if md["gap"].count("\n") > 2:
        lines += [f"## Gap along training: {roles.headline} − {roles.baseline} (descriptive)", "",
                  "At every evaluation step, the mean over seeds of the same-seed difference of validation losses with "
                  "its 95% t-interval (figures/gap_vs_step.png): a gap that opens mid-run and closes by the end reads "
                  "apart from no gap at any time.", "", md["gap"]]
    if merges:
        lines += [f"## Leave-one-modality-out: merged parameter sets vs {roles.headline} and {roles.baseline} "
                  "(one family)", "", f"Per modality, each merge run (two modalities share one parameter set) beside "
                  f"{roles.headline} and {roles.baseline}.", "", md["merges"]]
    if sizes:
        lines += ["## Size sweep: MoT's speed-up against model size (one family)", "",
                  "Each size's mot run against the dense run of the same model config, seed by seed: the fraction "
                  "of dense's steps mot needs to reach dense's final loss (every seed counted) and the paired "
                  "difference of the final losses.", "", md["sizes"]]
    if md["prompts"].count("\n") > 2:
        lines += ["## Prompt following: CLIP score with the own prompt vs another sample's (one family)", "",
                  "Each seed's generated images scored with their own prompts and with the next image's prompt (the "
                  "same images: a paired difference); a gap above 0 beyond its interval, after Holm, is a model that "
                  "follows its prompts. The tiny CLIP's scale: real pairs vs shuffled captions in logs/fit_clip.log.",
                  "", md["prompts"]]
    lines += ["## Final metrics (mean ± std over seeds, descriptive)", "",
              "`curve/loss_*` = the curve's last point (the verdict's); `{split}/loss_*` = the whole split it names "
              f"(eval.split: {results.config['eval']['split']}; text_only, where there, has a val split only).", "",
              md["final"], "## Parameters and FLOPs vs the paper's formulas", "", md["accounting"]]
    if results.missing:
        lines += ["## Missing runs", "", "No evaluation (failed or not run): " + ", ".join(results.missing), ""]
    lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures]
    report_md = out / "report.md"
    report_md.write_text("\n".join(lines) + "\n")
    return report_md


def _number(value) -> float | None:
    if value in ("", None):
        return None
    value = float(value.mean if isinstance(value, SeedStat) else value)
    return value if math.isfinite(value) else None


def run_metrics(results, comparisons, speedup) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per run: (metrics, tags) of its nested report run. Keys: `final/loss_{m}`, `delta/loss_{m}_vs_{ref}`
    (`_ci_low`, `_ci_high`), `signif/p_loss_{m}` / `p_holm_...` / `rho_...` (suffix `_vs_{ref}` except against the
    baseline), `speedup/{steps,flops,time}_frac_{m}` (`_ci_low`, `_ci_high`, `_vs_mean_{baseline}`)."""
    roles = results.roles
    metrics: dict[str, dict] = defaultdict(dict)
    tags: dict[str, dict] = defaultdict(dict)
    for base, names in results.groups.items():
        tags[base]["seeds"] = ",".join(str(results.seed_of[n]) for n in names)
        metrics[base]["seeds"] = len(names)
        for m in results.losses:
            stat = seed_stat(results.final_by_seed(base, m).values())
            if stat is not None:
                metrics[base][f"final/loss_{m}"] = stat.mean
                if stat.std is not None:
                    metrics[base][f"final/loss_{m}_std"] = stat.std
            whole = seed_stat(results.whole_split_by_seed(base, m).values())
            if whole is not None:
                metrics[base][f"final/loss_{m}_whole_split"] = whole.mean
    for r in comparisons:
        base, ref, m = r["run"], r["reference"], r["loss"]
        suffix = "" if ref == roles.baseline else f"_vs_{ref}"
        for key, name in (("delta", f"delta/loss_{m}_vs_{ref}"), ("ci_low", f"delta/loss_{m}_vs_{ref}_ci_low"),
                          ("ci_high", f"delta/loss_{m}_vs_{ref}_ci_high"), ("p", f"signif/p_loss_{m}{suffix}"),
                          ("p_holm", f"signif/p_holm_loss_{m}{suffix}"), ("rho", f"signif/rho_loss_{m}{suffix}")):
            if _number(r[key]) is not None:
                metrics[base][name] = _number(r[key])
        tags[base][f"differs_from_{ref}_{m}"] = r["differs_p"] or "untested (one seed)"
    for r in speedup:
        for key in FRACTIONS:
            for column, name in ((key, f"speedup/{key}_{r['loss']}"), (f"{key}_ci_low", f"speedup/{key}_{r['loss']}_ci_low"),
                                 (f"{key}_ci_high", f"speedup/{key}_{r['loss']}_ci_high"),
                                 (f"{key}_vs_mean", f"speedup/{key}_{r['loss']}_vs_mean_{roles.baseline}")):
                if _number(r[column]) is not None:
                    metrics[r["run"]][name] = _number(r[column])
    return metrics, tags


def log_to_mlflow(results, out: Path, comparisons, speedup, claims: list[dict]) -> None:
    config, setting, client = results.config, results.setting, results.client
    experiment = experiment_name(config["study"], setting)
    run_id_file = out / "mlflow_run_id"
    if run_id_file.exists():  # a rerun replaces the previous report runs instead of appending to them
        old = run_id_file.read_text().strip()
        for child in client.search_runs([client.get_run(old).info.experiment_id],
                                        filter_string=f"tags.mlflow.parentRunId = '{old}'"):
            client.delete_run(child.info.run_id)
        client.delete_run(old)
        run_id_file.unlink()
    parent = RunLogger.start_or_resume(config["results_dir"], experiment, "report", run_id_file,
                                       {"setting": setting, "arch": "report"}, {})
    by_run, tags_by_run = run_metrics(results, comparisons, speedup)
    for run, metrics in by_run.items():
        child_file = out / f".mlflow_run_id_{run}"
        child_file.unlink(missing_ok=True)
        child = RunLogger.start_or_resume(config["results_dir"], experiment, f"report/{run}", child_file,
                                          {"setting": setting, "arch": "report", "about_run": run,
                                           "mlflow.parentRunId": parent.run_id, **tags_by_run[run]}, {})
        child.log_metrics(metrics, 0)
        child.finish()
        child_file.unlink()
    headline = results.roles.headline
    claim_metrics = {f"claims/{c['claim']}/{key}": _number(c[key]) for c in claims
                     for key in ("estimate", "ci_low", "ci_high", "p", "p_holm", "detectable_effect")
                     if _number(c[key]) is not None}
    parent.log_metrics({**{k: v for k, v in by_run.get(headline, {}).items() if k != "seeds"}, **claim_metrics}, 0)
    parent.set_tags({"missing_runs": ",".join(results.missing) or "none",
                     "seeds": ",".join(f"{b}:{len(n)}" for b, n in results.groups.items()),
                     "roles": f"baseline={results.roles.baseline},headline={headline}",
                     **{f"selected/{name}": run for name, run in results.roles.picked.items()},
                     **{f"claim/{c['claim']}": c["verdict"] for c in claims},
                     **{k: v for k, v in tags_by_run.get(headline, {}).items() if k.startswith("differs_")}})
    parent.log_artifacts(out, "report")
    parent.finish()
