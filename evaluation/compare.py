"""One table across studies: each study's speed-up fractions and paired final-loss differences against its
baseline, from its report, with Holm over the printed table (one family).

    python -m evaluation.compare results/tiny_mixture-today results/tiny_mixture-1to1 results/tiny_mixture-2to1
    python -m evaluation.compare results/tiny_scaling --setting chameleon
    python -m evaluation.compare results/tiny_lr results/tiny_lr-2to1 --headline    # best against best only

A study's report (`mot report`) already holds the per-seed statistics (speedup.csv, comparisons.csv,
size_sweep.csv). This reads them back and puts the studies side by side, one row per (study, run, loss): seeds,
the steps fraction with its 95% interval (every seed counted), Δ = run − baseline with its 95% interval, the
paired p, and the p Holm-adjusted over every row of this table. `--headline` keeps each study's headline run
against its baseline (its report's roles.json: with `roles.select`, each selection's pick, so best against best).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from evaluation.significance import PValue, holm


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def with_interval(row: dict, key: str, digits: int, prefix: str | None = None) -> str:
    """`value [low, high]` from a report CSV row; the value alone without an interval, blank without a value."""
    prefix = f"{key}_" if prefix is None else prefix
    value, low, high = row.get(key, ""), row.get(f"{prefix}ci_low", ""), row.get(f"{prefix}ci_high", "")
    if value in ("", None):
        return ""
    signed = "+" if key.endswith("delta") else ""
    text = "∞" if math.isinf(float(value)) else f"{float(value):{signed}.{digits}f}"
    if low in ("", None):
        return text
    return f"{text} [{float(low):.{digits}f}, {float(high):.{digits}f}]"


def study_rows(study: Path, setting: str, headline_only: bool = False) -> list[dict]:
    report = study / setting / "report"
    if not (report / "report.md").exists():
        raise FileNotFoundError(f"{report / 'report.md'}: no report for this study (run its snakemake first)")
    rows = _study_rows(study, report)
    if not headline_only:
        return rows
    roles = json.loads((report / "roles.json").read_text())
    return [r for r in rows if r["run"] == roles["headline"] and r["vs"] == roles["baseline"]]


def _study_rows(study: Path, report: Path) -> list[dict]:
    comparisons = {(r["run"], r["reference"], r["loss"]): r for r in read_csv(report / "comparisons.csv")}
    sweep = read_csv(report / "size_sweep.csv")
    rows = []
    # a size sweep pairs each mot with the dense of its size; the speed-up table pairs every run with the baseline
    for row in [] if sweep else read_csv(report / "speedup.csv"):
        diff = comparisons.get((row["run"], row["reference"], row["loss"]), {})
        rows.append({"study": study.name, "run": row["run"], "vs": row["reference"], "loss": row["loss"],
                     "seeds": row["paired_seeds"], "steps_frac": with_interval(row, "steps_frac", 3),
                     "delta": with_interval(diff, "delta", 4, ""), "p": diff.get("p", "")})
    for row in sweep:  # several sizes: mot against the dense of its size
        rows.append({"study": study.name, "run": f"{row['mot_run']}@{row['size']} "
                                                 f"({int(float(row['non_embedding_mot'])):,} ne)",
                     "vs": row["dense_run"], "loss": row["loss"], "seeds": row["seeds"],
                     "steps_frac": with_interval(row, "steps_frac", 3), "delta": with_interval(row, "delta", 4, ""),
                     "p": row["p"]})
    return rows


def with_holm(rows: list[dict]) -> list[dict]:
    adjusted = holm([float(r["p"]) if r["p"] not in ("", None) else None for r in rows])
    return [{**r, "p_holm": "" if a is None else a} for r, a in zip(rows, adjusted)]


def markdown(rows: list[dict]) -> str:
    columns = ["study", "run", "vs", "loss", "seeds", "steps_frac", "delta", "p", "p_holm"]
    headers = ["study", "run", "vs", "loss", "seeds", "steps_frac [95% CI]", "Δ final loss [95% CI]", "paired p",
               "Holm p (this table)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        shown = {**row, **{k: "" if row[k] in ("", None) else str(PValue(float(row[k]))) for k in ("p", "p_holm")}}
        lines.append("| " + " | ".join(str(shown[c]) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", type=Path, help="results/{study} directories")
    parser.add_argument("--setting", default="chameleon")
    parser.add_argument("--headline", action="store_true", help="only each study's headline run vs its baseline")
    args = parser.parse_args(argv)
    try:
        rows = [row for study in args.studies for row in study_rows(study, args.setting, args.headline)]
    except FileNotFoundError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 1
    print(markdown(with_holm(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
