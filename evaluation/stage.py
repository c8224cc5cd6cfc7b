"""The evaluate stage of one trained run: final per-modality validation loss and captioning
(CIDEr against every reference caption, beside a constant-caption baseline). Results go to
`eval/metrics.json` and into the run's MLflow training run at its final step."""

from __future__ import annotations

import json
import logging

import torch

from evaluation.captioning import (caption_scores_from_files, cider_from_files, constant_predictions,
                                   most_frequent_caption, write_coco_predictions, write_coco_references)
from evaluation.sampling import greedy_captions
from mot.config import RunSpec
from mot.data.sequences import TokenizedSplit
from mot.data.shards import load_split_arrays
from mot.models.factory import build_model
from mot.paths import StudyPaths
from mot.tokenizers.stage import TEXT_TOKENIZER
from mot.tokenizers.text_bpe import TextTokenizer
from mot.tracking import RunLogger
from mot.train.loop import autocast_for, load_vocabulary, pick_device, sequences_for
from mot.train.loss import validation_loss

log = logging.getLogger("mot.evaluate")


def load_trained(config: dict, run: RunSpec, device):
    paths = StudyPaths.from_config(config)
    state = torch.load(paths.final_checkpoint(run.setting, run.name), map_location=device, weights_only=False)
    model = build_model(run, load_vocabulary(paths).size, state["seq_len"]).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), state["step"]


def evaluate(config: dict, run: RunSpec) -> dict:
    paths = StudyPaths.from_config(config)
    ecfg = config["eval"]
    torch.set_num_threads(run.train["threads"])
    device = pick_device(run.train["device"])
    model, step = load_trained(config, run, device)
    vocab = load_vocabulary(paths)
    out_dir = paths.eval_dir(run.setting, run.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    autocast = autocast_for(device, run.train["precision"])

    metrics = {f"val/loss_{m}": v for m, v in validation_loss(
        model, sequences_for("val", paths, config, model).eval_batches(ecfg["batch_size"]), device,
        run.modalities, autocast).items()}
    metrics.update(caption_metrics(config, model, vocab, out_dir, device))
    (out_dir / "metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=2))

    logger = RunLogger.attach(config["results_dir"], paths.run_id_file(run.setting, run.name))
    logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("eval/")}, step)
    logger.log_artifacts(out_dir, "eval")
    log.info("%s/%s: %s", run.setting, run.name, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics


def caption_metrics(config: dict, model, vocab, out_dir, device) -> dict:
    """Greedy captions of the first `eval.caption_images` images of the eval split, scored by CIDEr."""
    paths = StudyPaths.from_config(config)
    ecfg = config["eval"]
    split = TokenizedSplit.load(paths.tokens / f"{ecfg['split']}.npz")
    _, _, references = load_split_arrays(paths.data, ecfg["split"])
    n = min(ecfg["caption_images"], len(split))
    text = TextTokenizer.load(paths.tokenizers / TEXT_TOKENIZER)
    generated = greedy_captions(model, vocab, split.image_codes[:n], ecfg["max_caption_tokens"],
                                ecfg["batch_size"], device)
    refs_path, preds_path = out_dir / "captions_ref.json", out_dir / "captions_pred.json"
    write_coco_references({i: references[i] for i in range(n)}, refs_path)
    write_coco_predictions({i: text.decode(ids) for i, ids in enumerate(generated)}, preds_path)
    scores = caption_scores_from_files(refs_path, preds_path)

    _, _, train_captions = load_split_arrays(paths.data, "train")
    constant = most_frequent_caption(c for caps in train_captions for c in caps)
    constant_path = out_dir / "captions_constant.json"
    write_coco_predictions(constant_predictions(range(n), constant), constant_path)
    cider_constant, _ = cider_from_files(refs_path, constant_path)
    return {**{f"eval/{k}": v for k, v in scores.items()}, "eval/cider_constant": cider_constant,
            "eval/caption_images": float(n)}
