"""Per-study evaluation references, fitted once in the DAG: the tiny CLIP (CLIP score, and FID
features offline) and the FID reference statistics of the real eval-split images, with the
random-codes sanity baseline."""

from __future__ import annotations

import json
import logging

import numpy as np
import torch

from evaluation.clip import TinyClipConfig, retrieval_recall_at_1, train_tiny_clip
from evaluation.clip_score import clip_score
from evaluation.fid import fid_against_reference, get_feature_extractor, reference_statistics, save_statistics
from mot.data.shards import load_split_arrays
from mot.paths import StudyPaths
from mot.tokenizers.image_vq import VQVAE
from mot.tokenizers.stage import IMAGE_TOKENIZER

log = logging.getLogger("mot.references")
CLIP_FILE = "clip.pt"


def clip_config(config: dict, image_size: int) -> TinyClipConfig:
    clip_cfg = config["eval"]["clip"]
    return TinyClipConfig(image_size=image_size, patch_size=clip_cfg["patch_size"],
                          vision_width=clip_cfg["width"], vision_layers=clip_cfg["layers"],
                          vision_heads=clip_cfg["heads"], text_width=clip_cfg["width"],
                          text_layers=clip_cfg["layers"], text_heads=clip_cfg["heads"],
                          embed_dim=clip_cfg["embed_dim"], context_length=clip_cfg["context_length"])


def fit_clip(config: dict, logger=None) -> dict:
    """Contrastive training on the training split; recall@1 on the eval split (vs chance) is logged."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    clip_cfg = config["eval"]["clip"]
    _, images, captions = load_split_arrays(paths.data, "train")
    log_fn = (lambda metrics, step: logger.log_metrics(metrics, step)) if logger else None
    clip = train_tiny_clip(images, captions, clip_config(config, images.shape[1]), clip_cfg["steps"],
                           clip_cfg["batch_size"], clip_cfg["lr"], clip_cfg["seed"], log_fn=log_fn)
    _, eval_images, eval_captions = load_split_arrays(paths.data, config["eval"]["split"])
    n = min(len(eval_images), 512)
    first_captions = [caps[0] for caps in eval_captions[:n]]
    recall = retrieval_recall_at_1(clip, eval_images[:n], first_captions)
    # CLIP score of real eval pairs vs the same images with shuffled captions: the scale eval/clip_score lives on
    recall["score_matched"] = clip_score(clip, eval_images[:n], first_captions)
    recall["score_shuffled"] = clip_score(clip, eval_images[:n], first_captions[1:] + first_captions[:1])
    log.info("tiny CLIP on %d %s pairs: recall@1 image->text %.3f, text->image %.3f (chance %.4f); "
             "CLIP score matched %.1f vs shuffled %.1f", n, config["eval"]["split"], recall["image_to_text_r1"],
             recall["text_to_image_r1"], recall["chance"], recall["score_matched"], recall["score_shuffled"])
    if logger:
        logger.log_metrics({f"clip/{k}": v for k, v in recall.items()}, clip_cfg["steps"])
    paths.references.mkdir(parents=True, exist_ok=True)
    clip.save(paths.references / CLIP_FILE)
    return recall


def feature_extractor(config: dict):
    paths = StudyPaths.from_config(config)
    return get_feature_extractor(config["eval"]["fid_extractor"], clip=paths.references / CLIP_FILE,
                                 inception_weights=config["eval"]["inception_weights"])


def fid_reference(config: dict, logger=None) -> dict:
    """FID statistics of the real eval-split images, and the FID of images decoded from uniformly random
    VQ codes (`eval/fid_random`, the floor a trained model must beat)."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    extractor = feature_extractor(config)
    _, images, _ = load_split_arrays(paths.data, config["eval"]["split"])
    stats = reference_statistics(images, extractor)
    vq = VQVAE.load(paths.tokenizers / IMAGE_TOKENIZER)
    n = config["eval"]["images"]["n"]
    rng = np.random.default_rng(config["eval"]["images"]["seed"])
    random_codes = torch.as_tensor(rng.integers(0, vq.cfg.codebook_size, size=(n, vq.tokens_per_image(images.shape[1]))))
    fid_random = fid_against_reference(vq.decode(random_codes).numpy(), stats, extractor)
    # a real-vs-real floor: n held-out real images against the statistics of the whole split
    fid_real = fid_against_reference(images[-n:], stats, extractor)
    summary = {"extractor": extractor.name, "reference_images": int(len(images)), "fid_random": fid_random,
               "fid_real_subset": fid_real}
    log.info("FID reference (%s, %d images): random codes %.2f, real subset %.2f", extractor.name, len(images),
             fid_random, fid_real)
    if logger:
        logger.log_metrics({"fid/random_codes": fid_random, "fid/real_subset": fid_real}, 0)
    paths.references.mkdir(parents=True, exist_ok=True)
    save_statistics(stats, paths.fid_reference(extractor.name))
    paths.fid_summary(extractor.name).write_text(json.dumps(summary, indent=2))
    return summary
