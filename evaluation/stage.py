"""The evaluate stage of one trained run. At the final step: per-modality loss on the whole eval split,
captioning (CIDEr, BLEU-4, ROUGE-L, METEOR; constant-caption baseline) and text-to-image
generation (FID, CLIP score; shuffled-prompt baseline). CIDEr, FID and CLIP score are also
measured at the snapshots kept during training (`eval.over_training`), logged with their
training step so MLflow draws them beside the losses. Results go to `eval/metrics.json`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from evaluation.captioning import (caption_scores_from_files, cider_from_files, constant_predictions,
                                   write_coco_predictions, write_coco_references)
from evaluation.clip import TinyClip
from evaluation.clip_score import clip_score
from evaluation.fid import fid_against_reference, load_statistics
from evaluation.references import feature_extractor
from mot.config import RunSpec
from mot.data.shards import encode_png, load_split_arrays
from mot.paths import StudyPaths
from mot.runtime import autocast_for, pick_device
from mot.settings import objective_for
from mot.tokenizers.text_bpe import TextTokenizer
from mot.tracking import RunLogger

log = logging.getLogger("mot.evaluate")


class Evaluator:
    """Everything one run's evaluation needs, loaded once; `at_step` scores the model's current weights."""

    def __init__(self, config: dict, run: RunSpec):
        self.config, self.run, self.eval_cfg = config, run, config["eval"]
        self.paths = paths = StudyPaths.from_config(config)
        torch.set_num_threads(run.train["threads"])
        self.device = pick_device(run.train["device"])
        self.objective = objective_for(config, run.setting, run)
        final = torch.load(paths.final_checkpoint(run.setting, run.name), map_location=self.device, weights_only=False)
        self.final_step, self.final_state = final["step"], final["model"]
        self.model = self.objective.build_model(run).to(self.device).eval()
        self.text = TextTokenizer.load(paths.text_tokenizer)
        self.n_samples = self.objective.eval_samples(self.eval_cfg["split"])
        _, self.images, self.references = load_split_arrays(paths.data, self.eval_cfg["split"])
        self.clip = TinyClip.load(paths.clip)
        self.extractor = feature_extractor(config)
        self.fid_stats = load_statistics(paths.fid_reference(self.extractor.name))
        self.fid_random = json.loads(paths.fid_random(run.setting).read_text())["fid_random"]  # the setting's floor
        self.out_dir = paths.eval_dir(run.setting, run.name)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state)
        self.model.eval()

    def caption_metrics(self, step: int, final: bool) -> dict:
        n = min(self.eval_cfg["caption_images"], self.n_samples)
        generated = self.objective.captions(self.model, self.eval_cfg["split"], n, self.eval_cfg["max_caption_tokens"],
                                            self.eval_cfg["batch_size"], self.device)
        refs_path = self.out_dir / "captions_ref.json"
        preds_path = self.out_dir / ("captions_pred.json" if final else f"captions_pred_step{step}.json")
        write_coco_references({i: self.references[i] for i in range(n)}, refs_path)
        write_coco_predictions({i: self.text.decode(ids) for i, ids in enumerate(generated)}, preds_path)
        if not final:
            return {"eval/cider": cider_from_files(refs_path, preds_path)[0]}
        return {f"eval/{k}": v for k, v in caption_scores_from_files(refs_path, preds_path).items()}

    def image_metrics(self, step: int, final: bool) -> dict:
        n = min(self.eval_cfg["images"]["n"], self.n_samples)
        prompts = [self.references[i][0] for i in range(n)]
        images = self.objective.images(self.model, [self.text.encode(p) for p in prompts], self.eval_cfg["batch_size"],
                                       self.device)
        shuffled = [prompts[(i + 1) % n] for i in range(n)]  # every image paired with another image's prompt
        save_image_grid(images[:32], prompts[:32], self.out_dir / "images" / f"grid_step{step:07d}.png")
        if final:
            write_images(images, self.out_dir / "images" / "final")
        return {"eval/fid": fid_against_reference(images, self.fid_stats, self.extractor),
                "eval/clip_score": clip_score(self.clip, images, prompts),
                "eval/clip_score_shuffled": clip_score(self.clip, images, shuffled),
                "eval/fid_random": self.fid_random}

    def at_step(self, step: int, final: bool) -> dict:
        metrics = {**self.caption_metrics(step, final), **self.image_metrics(step, final)}
        log.info("%s/%s step %d: %s", self.run.setting, self.run.name, step,
                 " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics


def evaluate(config: dict, run: RunSpec) -> dict:
    evaluator = Evaluator(config, run)
    paths = evaluator.paths
    logger = RunLogger.attach(config["results_dir"], paths.run_id_file(run.setting, run.name), revisable=True)
    eval_params = {"eval.fid_extractor": evaluator.extractor.name, "eval.split": evaluator.eval_cfg["split"]}
    logger.log_params(eval_params)
    logger.set_tags(eval_params)  # the current values, should a re-evaluation change them
    curve = {}
    for step in run.snapshot_steps(config):
        evaluator.load(torch.load(paths.snapshot(run.setting, run.name, step), map_location=evaluator.device)["model"])
        curve[step] = evaluator.at_step(step, final=False)
        logger.log_metrics(curve[step], step)
    evaluator.load(evaluator.final_state)
    autocast = autocast_for(evaluator.device, run.train["precision"])

    def score(batches, modalities):
        return evaluator.objective.validation_loss(evaluator.model, batches, evaluator.device, modalities, autocast)

    metrics, loss_splits = final_losses(evaluator, score)
    metrics.update(evaluator.at_step(evaluator.final_step, final=True))
    constant = json.loads(paths.fit_summary.read_text())["most_frequent_caption"]
    metrics["eval/cider_constant"] = constant_caption_cider(evaluator.out_dir, constant)
    metrics["eval/caption_images"] = float(min(evaluator.eval_cfg["caption_images"], evaluator.n_samples))
    paths.eval_metrics(run.setting, run.name).write_text(json.dumps(
        {"step": evaluator.final_step, **metrics, "loss_splits": loss_splits,
         "over_training": {str(k): v for k, v in curve.items()}}, indent=2))
    logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("eval/")}, evaluator.final_step)
    logger.log_artifacts(evaluator.out_dir, "eval")
    return metrics


def final_losses(evaluator: Evaluator, score) -> tuple[dict[str, float], dict[str, str]]:
    """The final model's loss per modality on the whole `eval.split` (`{split}/loss_{m}`: with `eval.split: test`
    none of it is a sample of the validation curve), and the setting's extra losses (e.g. text_only, whose data has
    a val split only) as `val/loss_{name}`; with the split of each, written to metrics.json as `loss_splits`."""
    split, batch_size = evaluator.eval_cfg["split"], evaluator.eval_cfg["batch_size"]
    losses = score(evaluator.objective.sequences(split, evaluator.model).eval_batches(batch_size),
                   evaluator.run.modalities)
    extra = evaluator.objective.extra_validation(evaluator.model, batch_size, score)
    metrics = {f"{split}/loss_{name}": v for name, v in losses.items()} | {
        f"val/loss_{name}": v for name, v in extra.items()}
    return metrics, {name: split for name in losses} | {name: "val" for name in extra}


def constant_caption_cider(out_dir: Path, constant: str) -> float:
    """CIDEr of one caption (the most frequent training caption) for every image: the floor captioning must beat."""
    refs_path, constant_path = out_dir / "captions_ref.json", out_dir / "captions_constant.json"
    n = len(json.loads(refs_path.read_text())["images"])
    write_coco_predictions(constant_predictions(range(n), constant), constant_path)
    return cider_from_files(refs_path, constant_path)[0]


def write_images(images: np.ndarray, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        (directory / f"{i:05d}.png").write_bytes(encode_png(image))


def save_image_grid(images: np.ndarray, prompts: list[str], path: Path, columns: int = 8) -> None:
    """Samples with their prompts, for a person to look at (MLflow artifact)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.9))
    for ax, image, prompt in zip(np.atleast_1d(axes).flat, images, prompts):
        ax.imshow(image, interpolation="nearest")
        ax.set_title("\n".join(prompt[i:i + 24] for i in range(0, min(len(prompt), 72), 24)), fontsize=5)
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
