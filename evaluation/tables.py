"""How the report's rows read: each table is a list of Columns (a stable key, a header a person reads, and
how a cell is shown), written as CSV (keys as headers, numbers; a `_std` column beside each seed summary)
and Markdown (headers, formatted cells). Headers may name runs (from the roles); keys never do."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from evaluation.significance import PValue, SeedStat


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (SeedStat, PValue)):
        return str(value)
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def p_text(value) -> str:
    return "" if value in ("", None) else str(PValue(value))


def interval_prefix(key: str) -> str:
    """Where a value's interval bounds live: `x` → `x_ci_low`; `{prefix}delta` and `estimate` → `{prefix}ci_low`."""
    if key == "estimate":
        return ""
    return key[: -len("delta")] if key.endswith("delta") else f"{key}_"


def with_interval(key: str, digits: int = 4) -> Callable[[dict], str]:
    """`value [low, high]` from the row's `key` and its interval bounds (interval_prefix)."""
    prefix = interval_prefix(key)

    def show(row: dict) -> str:
        value, low, high = row.get(key, ""), row.get(f"{prefix}ci_low", ""), row.get(f"{prefix}ci_high", "")
        if value == "":
            return ""
        if math.isinf(value):
            return "∞"
        text = f"{value:+.{digits}f}" if key.endswith("delta") else f"{value:.{digits}f}"
        if low == "":
            return text
        high_text = "∞" if math.isinf(high) else f"{high:.{digits}f}"
        return f"{text} [{low:.{digits}f}, {high_text}]"
    return show


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    show: Callable[[dict], str] | None = None
    csv_keys: tuple[str, ...] = ()    # extra keys written to the CSV beside `key` (e.g. the interval bounds)

    def cell(self, row: dict) -> str:
        return self.show(row) if self.show else fmt(row.get(self.key, ""))


def col(key: str, header: str | None = None) -> Column:
    return Column(key, header or key)


def interval_col(key: str, header: str, digits: int = 4) -> Column:
    prefix = interval_prefix(key)
    return Column(key, header, with_interval(key, digits), (f"{prefix}ci_low", f"{prefix}ci_high"))


def p_col(key: str, header: str) -> Column:
    return Column(key, header, lambda row: p_text(row.get(key, "")))


def _csv_value(value):
    if isinstance(value, SeedStat):
        return value.mean
    if isinstance(value, PValue):
        return float(value)
    return value


def write_table(rows: list[dict], path_stem: Path, columns: list[Column]) -> str:
    """Write rows as CSV and Markdown; return the Markdown."""
    seed_keys = {c.key for c in columns if any(isinstance(row.get(c.key), SeedStat) for row in rows)}
    csv_columns = []
    for c in columns:
        csv_columns += [c.key] + ([f"{c.key}_std"] if c.key in seed_keys else []) + list(c.csv_keys)
    csv_columns = list(dict.fromkeys(csv_columns))
    with open(path_stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {k: _csv_value(row.get(k, "")) for k in csv_columns}
            for k in seed_keys:
                stat = row.get(k)
                cells[f"{k}_std"] = stat.std if isinstance(stat, SeedStat) and stat.std is not None else ""
            writer.writerow(cells)
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    path_stem.with_suffix(".md").write_text(markdown)
    return markdown


# --- the report's table layouts (headers name the runs of the roles) -----------------------------------------

def comparison_columns(roles) -> list[Column]:
    return [col("run"), col("arch"), col("reference", "vs"), col("loss"), col("n", "seeds used"), col("method"),
            interval_col("delta", "Δ [95% CI]"), p_col("p", "p"), p_col("p_holm", "Holm p"),
            col("differs_p", "differs (Holm)"), Column("rho", "ρ", lambda r: "" if r["rho"] == "" else f"{r['rho']:.2f}"),
            Column("effect_size", "effect size", lambda r: "" if r["effect_size"] == "" else f"{r['effect_size']:+.2f}"),
            interval_col("whole_delta", "whole split Δ [95% CI]"), p_col("whole_p", "whole split p"),
            col("status")]


def speedup_columns(roles) -> list[Column]:
    b = roles.baseline
    return [col("run"), col("reference", "vs"), col("loss"), col("seeds"), col("paired_seeds", f"paired {b} seeds"),
            col("target_loss", f"target ({b} final)"), col("steps_frac_seeds", "steps_frac per seed"),
            interval_col("steps_frac", "steps_frac [95% CI]", 3), p_col("p", "p (frac = 1)"),
            p_col("p_holm", "Holm p"), col("paper_steps_frac", "paper"),
            interval_col("flops_frac", "flops_frac [95% CI]", 3), col("paper_flops_frac", "paper flops"),
            interval_col("time_frac", "time_frac [95% CI]", 3), col("paper_time_frac", "paper time"),
            col("beyond_end", f"seeds past {b}'s end"), col("baseline_seeds", f"{b} seeds"),
            col("target_loss_vs_mean", f"target (mean {b})"), col("steps_frac_vs_mean", f"steps_frac (mean {b})"),
            col("flops_frac_vs_mean", f"flops_frac (mean {b})"), col("time_frac_vs_mean", f"time_frac (mean {b})"),
            col("status")]


def merge_columns(roles) -> list[Column]:
    h, b = roles.headline, roles.baseline
    return [col("modality"), col("run"), col("parameter_sets", "parameter sets"), col("seeds"), col("val_loss"),
            interval_col("vs_headline_delta", f"Δ {h} [95% CI]"), p_col("vs_headline_p", f"p vs {h}"),
            p_col("vs_headline_p_holm", "Holm p"), col("differs_vs_headline_p", f"differs from {h} (Holm)"),
            interval_col("vs_baseline_delta", f"Δ {b} [95% CI]"), p_col("vs_baseline_p", f"p vs {b}"),
            p_col("vs_baseline_p_holm", "Holm p"), col("vs_headline_se", "se"), col("vs_headline_method", "method")]


def size_sweep_columns() -> list[Column]:
    return [col("size"), col("loss"), col("non_embedding_dense", "non-embedding dense"),
            col("non_embedding_mot", "non-embedding mot"), col("seeds"), col("steps_frac_seeds", "steps_frac per seed"),
            interval_col("steps_frac", "steps_frac [95% CI]", 3), col("dense_final", "dense final"),
            col("mot_final", "mot final"), interval_col("delta", "Δ mot − dense [95% CI]"), p_col("p", "paired p"),
            p_col("p_holm", "Holm p"), Column("rho", "ρ", lambda r: "" if r["rho"] == "" else f"{r['rho']:.2f}")]


def claim_columns() -> list[Column]:
    return [col("claim"), col("statement"), col("verdict"), col("n", "seeds used"), col("declared_seeds", "declared"),
            interval_col("estimate", "estimate [95% CI]"), p_col("p", "one-sided p"), p_col("p_holm", "Holm p"),
            col("alpha", "α"), col("paper"), col("sd", "per-seed sd"), col("sd_from", "sd from"),
            col("detectable_effect", "detectable effect (80%)"), col("detectable_at", "at seeds"),
            col("seeds_needed", "seeds for observed effect"), col("notes")]


def selection_columns(modalities) -> list[Column]:
    return [col("selection"), col("run"), col("lr"), col("seeds"),
            *[col(f"loss_{m}", f"{m} loss (seed mean)") for m in modalities],
            col("score", "score (sum, seed mean)"), col("picked")]


def prompt_columns(leading: list[Column]) -> list[Column]:
    """The prompt-following gap's columns after `leading` (what a row is: a run, or a sampler setting)."""
    return [*leading, col("seeds"),
            Column("clip_score", "CLIP score", lambda r: f"{r['clip_score']:.2f}"),
            Column("clip_score_shuffled", "shuffled prompts", lambda r: f"{r['clip_score_shuffled']:.2f}"),
            col("gap_seeds", "own − shuffled per seed"), interval_col("gap", "own − shuffled [95% CI]", 2),
            p_col("p", "p (gap ≤ 0)"), p_col("p_holm", "Holm p"), col("differs_p", "follows its prompt (Holm)")]


def gap_columns(roles) -> list[Column]:
    return [col("loss"), col("step"), col("seeds"),
            interval_col("delta", f"{roles.headline} − {roles.baseline} [95% CI]")]
