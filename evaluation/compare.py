"""One table across studies: each study's speed-up fractions and final losses against dense, from its report.

    python -m evaluation.compare results/tiny_mixture-today results/tiny_mixture-1to1 results/tiny_mixture-2to1
    python -m evaluation.compare results/tiny_scaling --setting chameleon

A study of the mixture experiment is one `results/{study}/`; its report (`mot report`) already holds the per-seed
statistics (speedup.csv, final_metrics.csv, size_sweep.csv). This reads them back and puts the studies side by
side, one row per (study, run, modality): seeds, how many reached dense's final loss, the steps fraction
(mean ± std over seeds), the final losses and Welch's p against dense.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def pm(row: dict, key: str, digits: int = 4) -> str:
    value, std = row.get(key, ""), row.get(f"{key}_std", "")
    if value in ("", None) or value == "not reached":
        return value or ""
    text = f"{float(value):.{digits}f}"
    return f"{text} ± {float(std):.{digits}f}" if std not in ("", None) else text


def study_rows(study: Path, setting: str) -> list[dict]:
    report = study / setting / "report"
    if not (report / "report.md").exists():
        raise FileNotFoundError(f"{report / 'report.md'}: no report for this study (run its snakemake first)")
    final = {r["run"]: r for r in read_csv(report / "final_metrics.csv")}
    sweep = read_csv(report / "size_sweep.csv")
    rows = []
    # a size sweep pairs each mot with the dense of its size; the speed-up table pairs every run with `dense`
    for row in [] if sweep else read_csv(report / "speedup.csv"):
        m = row["modality"]
        run, dense = final.get(row["run"], {}), final.get("dense", {})
        rows.append({"study": study.name, "run": row["run"], "modality": m, "seeds": row["seeds"],
                     "reached": row["reached"], "steps_frac": pm(row, "steps_frac", 3),
                     "run final": pm(run, f"val/loss_{m}"), "dense final": pm(dense, f"val/loss_{m}"),
                     "p vs dense": run.get(f"p vs dense ({m})", "")})
    for row in sweep:  # several sizes: mot against the dense of its size
        rows.append({"study": study.name, "run": f"mot@{row['size']} ({int(float(row['non_embedding mot'])):,} ne)",
                     "modality": row["modality"], "seeds": row["seeds"], "reached": row["reached"],
                     "steps_frac": pm(row, "steps_frac", 3), "run final": pm(row, "mot final"),
                     "dense final": pm(row, "dense final"), "p vs dense": row["p mot vs dense"]})
    return rows


def markdown(rows: list[dict]) -> str:
    columns = ["study", "run", "modality", "seeds", "reached", "steps_frac", "run final", "dense final", "p vs dense"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        p = row["p vs dense"]
        shown = "" if p in ("", None) else f"{float(p):.4f}" if float(p) >= 1e-4 else f"{float(p):.1e}"
        row = {**row, "p vs dense": shown}
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", type=Path, help="results/{study} directories")
    parser.add_argument("--setting", default="chameleon")
    args = parser.parse_args(argv)
    try:
        rows = [row for study in args.studies for row in study_rows(study, args.setting)]
    except FileNotFoundError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 1
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
