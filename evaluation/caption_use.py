"""How much does a Transfusion model's denoising use the caption? For trained runs, the diffusion loss of the eval
split's images at fixed timesteps, with each image's own caption, with another image's caption, and with none
(the classifier-free-guidance branch): the same images, noise and timesteps, so the differences are the caption's
share of the denoising at each noise level. A model that ignores its prompt has equal losses with the own and a
shuffled caption; its samples then cannot follow the prompt whatever the guidance scale.

    python -m evaluation.caption_use --config configs/experiments/tiny_transfusion-objective.yaml \\
        --runs dense mot dense-v mot-v --timesteps 50 200 400 600 800 950

The loss is in each run's own prediction target (ε or v), so compare the three captions within a run, not
losses across prediction targets. Writes {study}/transfusion/report/caption_use.{csv,md}; nothing of the runs
changes.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from tqdm import tqdm

from evaluation import tables
from mot.cli import run_command
from mot.config import ConfigError, find_run
from mot.config.load import load_config
from mot.paths import StudyPaths
from mot.settings.transfusion import transfusion_loss
from mot.vocabulary import IMAGE

log = logging.getLogger("mot.caption_use")
CAPTIONS = ("own", "shuffled", "none")
SETTING = "transfusion"


@torch.no_grad()
def image_loss(model, sequences, objective, t: int, captions: str, n: int, batch_size: int, seed: int) -> float:
    """Mean diffusion loss per patch of the first n images at timestep t; `captions` = own, shuffled (image i with
    image i+1's caption) or none. Each image's noise is drawn from (seed, its index): the same for the three captions
    and for any batch size."""
    total, count = 0.0, 0
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        rows = [(i, sequences.layout((i + 1) % n if captions == "shuffled" else i, 0, captioning=False,
                                     drop_caption=captions == "none")) for i in idx]
        noise = torch.stack([torch.randn(sequences.patches.shape[1:], generator=torch.Generator().manual_seed(
            seed * 1_000_003 + i)) for i in idx])
        batch = sequences.collate(rows, torch.full((len(idx),), t), noise)
        _, sums = transfusion_loss(model, batch, objective.schedule, 1.0)
        total, count = total + float(sums[IMAGE]), count + int(batch.target_counts[IMAGE])
    return total / count


def caption_use(config: dict, run_names: list[str], timesteps: list[int], n: int) -> list[dict]:
    from evaluation.stage import Evaluator  # torch models and the eval data: only when measuring
    rows = []
    for name in run_names:
        evaluator = Evaluator(config, find_run(config, SETTING, name))
        evaluator.load(evaluator.final_state)
        objective = evaluator.objective
        sequences = objective.sequences(config["eval"]["split"], evaluator.model)
        n_images = min(n, len(sequences.split))
        for t in tqdm(timesteps, desc=f"caption use {name}", unit="t"):
            losses = {c: image_loss(evaluator.model, sequences, objective, t, c, n_images, config["eval"]["batch_size"], 0)
                      for c in CAPTIONS}
            rows.append({"run": name, "prediction": objective.dcfg["prediction"], "t": t, "images": n_images,
                         **{f"loss_{c}": v for c, v in losses.items()},
                         "shuffled_over_own": losses["shuffled"] / losses["own"] - 1,
                         "none_over_own": losses["none"] / losses["own"] - 1})
            log.info("%s t=%d: own %.4f shuffled %.4f none %.4f", name, t, *losses.values())
    return rows


def columns() -> list[tables.Column]:
    number = lambda key, header, digits: tables.Column(key, header, lambda r: f"{r[key]:.{digits}f}")
    share = lambda key, header: tables.Column(key, header, lambda r: f"{100 * r[key]:+.1f}%")
    return [tables.col("run"), tables.col("prediction"), tables.col("t"), tables.col("images"),
            number("loss_own", "loss, own caption", 4), number("loss_shuffled", "another image's caption", 4),
            number("loss_none", "no caption", 4), share("shuffled_over_own", "shuffled / own − 1"),
            share("none_over_own", "none / own − 1")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", nargs="+", required=True, metavar="FILE", help="the study's config files")
    parser.add_argument("--runs", nargs="+", required=True, help="trained transfusion runs")
    parser.add_argument("--timesteps", nargs="+", type=int, default=[50, 200, 400, 600, 800, 950])
    parser.add_argument("--images", type=int, default=512, help="eval-split images (default: %(default)s)")
    return run_command(_caption_use_command, parser.parse_args(argv))


def _caption_use_command(args) -> int:
    config = load_config(args.config)
    if SETTING not in config["settings"]:
        raise ConfigError(f"settings.{SETTING}: the study has no Transfusion setting (caption use is its diagnostic)")
    for name in args.runs:
        find_run(config, SETTING, name)
    bad = [t for t in args.timesteps if not 0 <= t < config["diffusion"]["timesteps"]]
    if bad:
        raise ConfigError(f"--timesteps {bad[0]}: expected 0 <= t < diffusion.timesteps ({config['diffusion']['timesteps']})")
    rows = caption_use(config, args.runs, args.timesteps, args.images)
    out = StudyPaths.from_config(config).report_dir(SETTING)
    out.mkdir(parents=True, exist_ok=True)
    print(tables.write_table(rows, out / "caption_use", columns()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
