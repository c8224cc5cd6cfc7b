"""Evaluation references, fitted once in the DAG: the tiny CLIP (CLIP score, and FID features offline) and
the FID reference statistics of the real eval-split images (once per study), and each setting's
random-tokenizer-input FID floor (once per setting; its evaluations read it)."""

from __future__ import annotations

import json
import logging

import torch

from evaluation.clip import TinyClipConfig, retrieval_recall_at_1, train_tiny_clip
from evaluation.clip_score import clip_score
from evaluation.fid import (fid_against_reference, get_feature_extractor, load_statistics, reference_statistics,
                            save_statistics)
from mot.data.shards import load_split_arrays
from mot.paths import StudyPaths
from mot.settings import objective_for

log = logging.getLogger("mot.references")


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
    clip.save(paths.clip)
    return recall


def feature_extractor(config: dict):
    paths = StudyPaths.from_config(config)
    return get_feature_extractor(config["eval"]["fid_extractor"], clip=paths.clip,
                                 inception_weights=config["eval"]["inception_weights"])


def fid_reference(config: dict, logger=None) -> dict:
    """FID statistics of the real eval-split images, and the FID of n held-out real images against them."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    extractor = feature_extractor(config)
    _, images, _ = load_split_arrays(paths.data, config["eval"]["split"])
    stats = reference_statistics(images, extractor)
    n = config["eval"]["images"]["n"]
    # a real-vs-real floor: n held-out real images against the statistics of the whole split
    fid_real = fid_against_reference(images[-n:], stats, extractor)
    summary = {"extractor": extractor.name, "reference_images": int(len(images)), "fid_real_subset": fid_real}
    log.info("FID reference (%s, %d images): real subset %.2f", extractor.name, len(images), fid_real)
    if logger:
        logger.log_metrics({"fid/real_subset": fid_real}, 0)
    paths.references.mkdir(parents=True, exist_ok=True)
    save_statistics(stats, paths.fid_reference(extractor.name))
    paths.fid_summary(extractor.name).write_text(json.dumps(summary, indent=2))
    return summary


def fid_random(config: dict, setting: str, logger=None) -> dict:
    """The FID of the setting's images decoded from random tokenizer inputs (uniform VQ codes, or prior latents):
    the floor a trained generator must beat, as `eval/fid_random` of every run; computed once per setting."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    extractor, images_cfg = feature_extractor(config), config["eval"]["images"]
    objective = objective_for(config, setting)
    n = min(images_cfg["n"], objective.eval_samples(config["eval"]["split"]))  # as many as a run generates
    random_images = objective.random_images(n, images_cfg["seed"])
    fid = fid_against_reference(random_images, load_statistics(paths.fid_reference(extractor.name)), extractor)
    summary = {"setting": setting, "extractor": extractor.name, "images": n, "fid_random": fid}
    log.info("%s: FID of %d images from random tokenizer inputs %.2f (%s)", setting, n, fid, extractor.name)
    if logger:
        logger.log_metrics({"fid/random": fid}, 0)
    paths.fid_random(setting).parent.mkdir(parents=True, exist_ok=True)
    paths.fid_random(setting).write_text(json.dumps(summary, indent=2))
    return summary
