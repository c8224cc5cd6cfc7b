"""Study report of one setting, under results/{study}/{setting}/report/ and in MLflow. One job per module:

- evaluation.results   loads the runs (MLflow curves, eval/metrics.json) and the run roles;
- evaluation.analysis  the statistics of each table (paired Δ with intervals, speed-up with intervals, Holm);
- evaluation.claims    the declared claims' verdicts and power;
- evaluation.tables / evaluation.plots   how the tables read (CSV + Markdown) and the figures;
- evaluation.publish   report.md and the MLflow report runs.

The report opens with the declared claims and their verdicts, then the headline comparison in words.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from evaluation import analysis, plots, tables
from evaluation.claims import claims_for, evaluate_claims, read_looks, record_look
from evaluation.publish import log_to_mlflow, write_markdown
from evaluation.results import SettingResults
from evaluation.scaling import plot_size_sweep, size_sweep_rows
from mot.settings.accounting import accounting_table

log = logging.getLogger("mot.report")


def accounting_rows(results) -> list[dict]:
    base_of = {s.name: s.base_name for s in results.specs}
    rows, seen = [], set()
    for row in accounting_table(results.config):
        if row["setting"] != results.setting or base_of.get(row["run"]) in seen | {None}:
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


def label_status(rows: list[dict], claims, metric_of_row, roles) -> None:
    """`status` of each row: the declared claim it tests, else exploratory (one seed: no test at all)."""
    for row in rows:
        declared = [c.name for c in claims
                    if (roles.resolve(c.run), roles.resolve(c.reference), c.loss)
                    == (row["run"], row.get("reference", roles.resolve(c.reference)), row["loss"])
                    and metric_of_row(c.metric)]
        if declared:
            row["status"] = "declared: " + ", ".join(declared)
        else:
            row["status"] = "exploratory" + (" (one seed)" if row["p"] == "" else "")


class SettingReport:
    def __init__(self, config: dict, setting: str):
        self.results = SettingResults(config, setting)
        self.out = self.results.paths.report_dir(setting)
        self.figures = self.out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)

    def write(self) -> Path:
        results, out = self.results, self.out
        roles = results.roles
        looks = read_looks(out)
        claims = evaluate_claims(results, looks)
        declared = claims_for(results.config, results.setting)
        comparisons = analysis.comparison_rows(results)
        label_status(comparisons, declared, lambda metric: metric == "delta", roles)
        speedup = analysis.speedup_rows(results)
        for row in speedup:
            row["reference"] = roles.baseline
        label_status(speedup, declared, lambda metric: metric != "delta", roles)
        merges = analysis.merge_rows(results)
        final_rows, final_columns = analysis.final_metric_rows(results)
        sizes = size_sweep_rows(results)
        gap = analysis.gap_rows(results)
        prompts = analysis.prompt_rows(results)
        accounting = accounting_rows(results)

        md = {
            "claims": tables.write_table(claims, out / "claims", tables.claim_columns()),
            "comparisons": tables.write_table(comparisons, out / "comparisons", tables.comparison_columns(roles)),
            "speedup": tables.write_table(speedup, out / "speedup", tables.speedup_columns(roles)),
            "final": tables.write_table(final_rows, out / "final_metrics",
                                        [tables.col(c) for c in ["run", "arch", "seeds", *final_columns]]),
            "accounting": tables.write_table(accounting, out / "accounting",
                                             [tables.col(c) for c in (list(accounting[0]) if accounting else ["run"])]),
            # header only without merges / a size sweep (the HTML report lists every table for every setting)
            "merges": tables.write_table(merges, out / "merges", tables.merge_columns(roles)),
            "sizes": tables.write_table(sizes, out / "size_sweep", tables.size_sweep_columns()),
            "gap": tables.write_table(gap, out / "gap", tables.gap_columns(roles)),
            "prompts": tables.write_table(prompts, out / "prompt_following",
                                          tables.prompt_columns([tables.col("run"), tables.col("arch")])),
            "selection": tables.write_table(results.selection, out / "selection",
                                            tables.selection_columns(results.modalities)),
        }
        figures = (plots.plot_losses(results, self.figures) + plots.plot_eval_curves(results, self.figures)
                   + plots.plot_final_losses(results, final_rows, comparisons, self.figures)
                   + plots.plot_merges(results, merges, self.figures) + plots.plot_gap(results, gap, self.figures)
                   + plots.plot_selection(results.selection, results.setting, self.figures))
        sweep_figure = plot_size_sweep(sizes, results.modalities, results.setting, self.figures / "speedup_vs_size.png")
        figures += [sweep_figure] if sweep_figure else []
        record_look(out, looks, {base: len(names) for base, names in results.groups.items()})
        (out / "roles.json").write_text(json.dumps({"baseline": roles.baseline, "headline": roles.headline,
                                                    "picked": roles.picked}, indent=1) + "\n")
        report_md = write_markdown(out, results, md, claims, comparisons, speedup, merges, sizes, figures,
                                   read_looks(out))
        log_to_mlflow(results, out, comparisons, speedup, claims)
        log.info("report for %s written to %s (%d runs, %d missing)", results.setting, report_md,
                 len(results.curves), len(results.missing))
        return report_md


def report(config: dict, setting: str) -> Path:
    return SettingReport(config, setting).write()
