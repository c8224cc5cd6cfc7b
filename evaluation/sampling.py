"""Sampler settings swept on trained runs: does a guidance scale, a number of DDIM steps or a temperature make the
generated images follow their prompts? No training: each run's final checkpoint is read, and for every
combination of the values given its images are scored as the evaluate stage scores them (FID; CLIP score with
their own prompts and with another image's prompt, the same images). Per combination, the own − shuffled gap over
the runs given (one per seed: a paired difference per seed) with its 95% interval, and Holm over the table.

    python -m evaluation.sampling --config configs/experiments/tiny_lr-transfusion.yaml --setting transfusion \\
        --runs mot-lr1e-3-s0 mot-lr1e-3-s1 mot-lr1e-3-s2 --values diffusion.cfg_scale=1,3,5,10 \\
        --values diffusion.ddim_steps=25,50

A value is set for the whole study's config before the run's own changes (a run's `diffusion:` still wins).
Writes {study}/{setting}/report/sampling.{csv,md} and the image grids of each combination under
report/sampling/ (a look at the sampler, not a stage: nothing is logged to MLflow, nothing of the runs changes).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from evaluation import tables
from evaluation.analysis import add_holm, prompt_gap
from mot.cli import run_command
from mot.config import ConfigError, find_run
from mot.config.inputs import config_value
from mot.config.load import load_config
from mot.paths import StudyPaths
from mot.settings import objective_for

log = logging.getLogger("mot.sampling")


def parse_values(specs: list[str], config: dict) -> dict[str, list]:
    """`key=v1,v2` → {key: [v1, v2]}, each value of the type the config holds at that dotted key."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise ConfigError(f"--values {spec!r}: expected KEY=V1,V2 (e.g. diffusion.cfg_scale=1,3,5)")
        try:
            current = config_value(config, key)
        except (KeyError, TypeError):
            raise ConfigError(f"--values {key}: no such config key (e.g. diffusion.cfg_scale, eval.images.cfg_scale)") from None
        kind = type(current)
        parse = (lambda v: {"true": True, "false": False}[v.lower()]) if kind is bool else kind
        try:
            grid[key] = [parse(v) for v in values.split(",")]
        except (ValueError, KeyError):
            raise ConfigError(f"--values {key}: expected {kind.__name__} values, got {values!r}") from None
    return grid


def with_values(config: dict, values: dict) -> dict:
    changed = copy.deepcopy(config)
    for key, value in values.items():
        *parents, last = key.split(".")
        section = changed
        for part in parents:
            section = section[part]
        section[last] = value
    return changed


def sweep(config: dict, setting: str, run_names: list[str], grid: dict[str, list]) -> list[dict]:
    from evaluation.stage import Evaluator  # torch, open_clip: only when sampling
    out_dir = StudyPaths.from_config(config).report_dir(setting) / "sampling"
    evaluators = [Evaluator(config, find_run(config, setting, name)) for name in run_names]
    for evaluator in evaluators:  # the final weights, once: sampling changes none of them
        evaluator.load(evaluator.final_state)
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    rows = []
    for values in tqdm(combos, desc=f"sampling {setting}", unit="setting"):
        label = "_".join(f"{k.split('.')[-1]}{v}" for k, v in values.items())
        changed = with_values(config, values)
        own, shuffled, fid = [], [], []
        for evaluator in evaluators:
            evaluator.objective = objective_for(changed, setting, evaluator.run)
            evaluator.out_dir = out_dir / label / evaluator.run.name
            metrics = evaluator.image_metrics(evaluator.final_step, final=False)
            own.append(metrics["eval/clip_score"])
            shuffled.append(metrics["eval/clip_score_shuffled"])
            fid.append(metrics["eval/fid"])
        row = {**values, **prompt_gap(own, shuffled), "fid": sum(fid) / len(fid)}
        log.info("%s: CLIP own %.2f shuffled %.2f gap %.2f FID %.2f", label, row["clip_score"],
                 row["clip_score_shuffled"], row["gap"], row["fid"])
        rows.append(row)
    add_holm(rows)
    return rows


def write(rows: list[dict], grid: dict, out: Path, runs: list[str]) -> str:
    columns = (tables.prompt_columns([tables.col(k) for k in grid])
               + [tables.Column("fid", "FID (mean)", lambda r: f"{r['fid']:.2f}")])
    table = tables.write_table(rows, out / "sampling", columns)
    text = (f"# Sampler settings on {', '.join(runs)}\n\nEvery combination of {', '.join(grid)}; per run (seed) the "
            "CLIP score of its images with their own prompts and with another image's prompt; the gap's 95% interval "
            "over the runs, Holm over this table.\n\n" + table)
    (out / "sampling.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", nargs="+", required=True, metavar="FILE", help="the study's config files")
    parser.add_argument("--setting", required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="trained runs, e.g. the seeds of one run")
    parser.add_argument("--values", action="append", required=True, metavar="KEY=V1,V2",
                        help="a config key and the values to try (repeat for a grid)")
    return run_command(_sweep_command, parser.parse_args(argv))


def _sweep_command(args) -> int:
    config = load_config(args.config)
    grid = parse_values(args.values, config)
    for name in args.runs:
        find_run(config, args.setting, name)
    rows = sweep(config, args.setting, args.runs, grid)
    out = StudyPaths.from_config(config).report_dir(args.setting)
    out.mkdir(parents=True, exist_ok=True)
    print(write(rows, grid, out, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
