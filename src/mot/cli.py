"""`mot`: one subcommand per pipeline stage (the Snakemake rules call these)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mot.config import ConfigError, find_run, run_specs
from mot.config.inputs import run_fingerprint
from mot.config.load import load_config


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", nargs="+", default=["configs/pipeline.yaml"], metavar="FILE",
                        help="config files, merged in order like `snakemake --configfile` (default: %(default)s)")


def _run_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--setting", required=True, help="e.g. chameleon")
    parser.add_argument("--run", required=True, help="run name, e.g. mot")


def cmd_check(args) -> int:
    config = load_config(args.config)
    for spec in run_specs(config):
        print(f"{spec.setting}/{spec.name}: arch={spec.arch} untie={list(spec.untie)} fingerprint={run_fingerprint(config, spec)}")
    return 0


def cmd_init_tracking(args) -> int:
    from mot.paths import StudyPaths
    from mot.tracking import init_store, tracking_uri

    config = load_config(args.config)
    paths = StudyPaths.from_config(config)
    ids = init_store(config["results_dir"], config["study"], list(config["settings"]))
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.tracking_marker.write_text(json.dumps({"tracking_uri": tracking_uri(config["results_dir"]),
                                                 "experiments": ids}, indent=2))
    return 0


def _data_logger(config, run_name: str):
    from mot.paths import StudyPaths
    from mot.tracking import DATA_EXPERIMENT, RunLogger, experiment_name, flatten

    paths = StudyPaths.from_config(config)
    return RunLogger.start_or_resume(
        config["results_dir"], experiment_name(config["study"], DATA_EXPERIMENT), run_name,
        paths.root / f".mlflow_{run_name}_run_id", {"stage": run_name, "study": config["study"]},
        flatten({k: config[k] for k in ("data", "tokenizers", "sequences")}))


def _log_manifest(config, run_name: str, manifest: dict, manifest_path, count: str = "samples") -> None:
    """A data stage's samples and bad samples (by reason) per split, and its manifest, into `{study}/data`."""
    logger = _data_logger(config, run_name)
    for split, entry in manifest["splits"].items():
        logger.log_metrics({f"{run_name}/{split}_{count}": entry["n_samples"], f"{run_name}/{split}_bad": entry["n_bad"],
                            **{f"{run_name}/{split}_bad_{r}": n for r, n in entry["bad_by_reason"].items()}}, 0)
    logger.log_artifact(manifest_path, None if run_name == "data" else run_name.removesuffix("_data"))
    logger.finish()


def cmd_data(args) -> int:
    from mot.data.stage import build_dataset
    from mot.paths import StudyPaths

    config = load_config(args.config)
    out_dir = StudyPaths.from_config(config).data
    _log_manifest(config, "data", build_dataset(config["data"], out_dir), StudyPaths.manifest(out_dir))
    return 0


def cmd_speech_data(args) -> int:
    from mot.data.stage import build_speech
    from mot.paths import StudyPaths

    config = load_config(args.config)
    out_dir = StudyPaths.from_config(config).speech_data
    _log_manifest(config, "speech_data", build_speech(config, out_dir), StudyPaths.manifest(out_dir))
    return 0


def cmd_text_data(args) -> int:
    from mot.data.stage import build_text
    from mot.paths import StudyPaths

    config = load_config(args.config)
    out_dir = StudyPaths.from_config(config).text_data
    _log_manifest(config, "text_data", build_text(config, out_dir), StudyPaths.manifest(out_dir), count="documents")
    return 0


def cmd_mixture(args) -> int:
    from mot.settings import objective_for
    from mot.settings.mixture import realised_mixture

    config = load_config(args.config)
    run = run_specs(config, args.setting)[0]  # what a builder draws does not depend on the run
    objective = objective_for(config, args.setting)
    sequences = objective.sequences("train", _ConfigOnlyModel(objective, run))
    if not hasattr(sequences, "draw_with_kind"):
        print(f"{args.setting}: its sequence builder has no mixture of kinds to measure", file=sys.stderr)
        return 2
    realised = realised_mixture(sequences, args.batches, run.train["batch_size"], run.seed)
    if args.json:
        print(json.dumps(realised, indent=2))
        return 0
    print(f"{args.setting}: {args.batches} training batches of {run.train['batch_size']} (seed {run.seed})")
    for kind, weight in realised["configured"].items():
        tokens = ", ".join(f"{m} {n}" for m, n in realised["tokens"][kind].items())
        print(f"  {kind:15s} weight {weight:.3f}  drawn {realised['kind_fractions'][kind]:.3f}  target tokens: {tokens}")
    print(f"  text:image target tokens = {realised['text_image_ratio']:.3f} : 1")
    return 0


class _ConfigOnlyModel:
    """A model stand-in for building sequences: the builders read only the model config's parameter plan."""

    def __init__(self, objective, run):
        from mot.models.factory import model_config
        self.cfg = model_config(run, objective.vocab.size, objective.seq_len)


def _logged_stage(args, run_name: str, stage) -> int:
    """Run a study-level stage `stage(config, logger)` logging into the `{study}/data` experiment."""
    config = load_config(args.config)
    logger = _data_logger(config, run_name)
    stage(config, logger)
    logger.finish()
    return 0


def cmd_fit_tokenizers(args) -> int:
    from mot.tokenizers.stage import fit_tokenizers
    return _logged_stage(args, "tokenizers", fit_tokenizers)


def cmd_tokenize(args) -> int:
    from mot.tokenizers.stage import tokenize_splits
    return _logged_stage(args, "tokenize", tokenize_splits)


def cmd_tokenize_text(args) -> int:
    from mot.tokenizers.stage import tokenize_text
    return _logged_stage(args, "tokenize_text", tokenize_text)


def cmd_shard_tokens(args) -> int:
    from mot.tokenizers.stage import shard_tokens
    return _logged_stage(args, f"token_shards_{args.source}", lambda config, logger: shard_tokens(config, args.source, logger))


def cmd_fit_image_vae(args) -> int:
    from mot.tokenizers.stage import fit_image_vae
    return _logged_stage(args, "image_vae", fit_image_vae)


def cmd_fit_speech_units(args) -> int:
    from mot.tokenizers.stage import fit_speech_units
    return _logged_stage(args, "speech_units", fit_speech_units)


def cmd_fit_clip(args) -> int:
    from evaluation.references import fit_clip
    return _logged_stage(args, "clip", fit_clip)


def cmd_fid_reference(args) -> int:
    from evaluation.references import fid_reference
    return _logged_stage(args, "fid_reference", fid_reference)


def cmd_fid_random(args) -> int:
    from evaluation.references import fid_random
    return _logged_stage(args, f"fid_random_{args.setting}", lambda config, logger: fid_random(config, args.setting, logger))


def cmd_train(args) -> int:
    from mot.train.loop import train

    config = load_config(args.config)
    train(config, find_run(config, args.setting, args.run))
    return 0


def cmd_evaluate(args) -> int:
    from evaluation.stage import evaluate

    config = load_config(args.config)
    evaluate(config, find_run(config, args.setting, args.run))
    return 0


def cmd_report(args) -> int:
    from evaluation.report import report

    config = load_config(args.config)
    report(config, args.setting)
    return 0


def cmd_power(args) -> int:
    from evaluation.claims import power_table

    config = load_config(args.config, check_paths=False)  # sizing a study needs no data on this machine
    print(power_table(config))
    return 0


def cmd_params(args) -> int:
    from mot.settings.accounting import accounting_table

    config = load_config(args.config_file, check_paths=False)  # sizes need no data on this machine
    rows = accounting_table(config)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from mot.models.accounting import format_table
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mot", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "check": (cmd_check, _config_arg, "validate the config and list every run of the grid"),
        "init-tracking": (cmd_init_tracking, _config_arg, "create the MLflow store and the study's experiments"),
        "data": (cmd_data, _config_arg, "build webdataset shards (synthetic or imported) with a manifest"),
        "fit-tokenizers": (cmd_fit_tokenizers, _config_arg, "fit the text BPE and the image VQ-VAE on train"),
        "tokenize": (cmd_tokenize, _config_arg, "encode every split into token arrays"),
        "speech-data": (cmd_speech_data, _config_arg, "spoken-caption shards (synthetic or LibriSpeech-style) for chameleon_speech"),
        "text-data": (cmd_text_data, _config_arg,
                      "text-only document shards (synthetic, or a .txt folder / JSON-lines import) for mixture.text_only"),
        "tokenize-text": (cmd_tokenize_text, _config_arg,
                          "encode the text-only documents with the caption BPE into seq_len rows"),
        "shard-tokens": (cmd_shard_tokens,
                         lambda p: (_config_arg(p), p.add_argument("--source", required=True,
                                                                   choices=["image_text", "text_only", "speech"])),
                         "the train split's rows of one token source as webdataset token shards (sequences.store: shards)"),
        "fit-image-vae": (cmd_fit_image_vae, _config_arg,
                          "fit the image VAE (Transfusion) on train and save every split's scaled latents"),
        "fit-speech-units": (cmd_fit_speech_units, _config_arg,
                             "fit k-means speech units on train audio and encode every split (chameleon_speech)"),
        "fit-clip": (cmd_fit_clip, _config_arg, "train the tiny CLIP used for CLIP score (and offline FID features)"),
        "fid-reference": (cmd_fid_reference, _config_arg, "FID statistics of the real eval images"),
        "fid-random": (cmd_fid_random, lambda p: (_config_arg(p), p.add_argument("--setting", required=True)),
                       "a setting's FID floor: images from random tokenizer inputs (read by its evaluations)"),
        "train": (cmd_train, _run_args, "train one run (resumes from its last checkpoint)"),
        "evaluate": (cmd_evaluate, _run_args, "evaluate one trained run (val loss, CIDEr, FID, CLIP score; also at snapshots)"),
        "report": (cmd_report, lambda p: (_config_arg(p), p.add_argument("--setting", required=True)),
                   "study report of one setting: plots and tables, logged to MLflow"),
        "power": (cmd_power, _config_arg,
                  "per declared claim: the seed spread (measured in the study's results, else the claim's "
                  "planning_sd), the effect its seeds detect at 80% power and the seeds the observed effect needs"),
    }
    for name, (func, add_args, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(func=func)
    p = sub.add_parser("params", help="parameter counts and FLOPs per token of every run, beside the paper's formulas",
                       description="parameter counts and FLOPs per token of every run, beside the paper's formulas")
    p.add_argument("config_file", metavar="CONFIG", nargs="+", help="config files, merged in order (e.g. a setting's "
                   "paper config and a size from configs/experiments/sizes/)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_params)
    help_text = ("the sequence kinds and per-modality target tokens that a setting's training mixture realises "
                 "(text:image token ratio), from its tokenized data")
    p = sub.add_parser("mixture", help=help_text, description=help_text)
    _config_arg(p)
    p.add_argument("--setting", required=True, help="e.g. chameleon")
    p.add_argument("--batches", type=int, default=200, help="training batches drawn (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_mixture)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, args.verbose)


def run_command(func, args, verbose: bool = False) -> int:
    """One command with the command line's logging and one-line errors (config error: exit 2, data error: 3);
    also the entry of the `python -m evaluation.*` tools."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from mot.tracking import quiet_mlflow
    quiet_mlflow()
    try:
        return func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from mot.data.shards import DataError
        if isinstance(err, DataError):
            print(f"data error: {err}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
