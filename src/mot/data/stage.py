"""The ``mot data`` stage: build train/val/test shards and the manifest.

The manifest is written last and atomically, so its presence means every shard
it lists is complete; a failed or interrupted run leaves no manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mot.data.coco import iter_coco_captions
from mot.data.shards import (MANIFEST, DataError, Sample, check_bad_fraction, load_manifest, load_split_arrays,
                             write_manifest, write_split)
from mot.data.speech import build_librispeech_dataset, build_speech_dataset
from mot.data.synthetic import iter_synthetic
from mot.data.text import build_text_dataset, held_out_captions

logger = logging.getLogger("mot.data")


@dataclass
class SplitPlan:
    """What to write for one split."""

    name: str
    samples: Iterable[Sample]
    total: int | None  # for the progress bar; None when unknown up front
    image_size: int | None  # resize target, None keeps source size


def build_dataset(data_cfg: dict, out_dir: Path) -> dict:
    """Write every split of data_cfg["source"] under out_dir; return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous_manifest(out_dir)
    source = data_cfg["source"]
    max_bad_fraction = float(data_cfg["max_bad_fraction"])

    split_entries = {}
    for plan in _plan_splits(data_cfg):
        _remove_stale_shards(out_dir, plan.name)
        entry = write_split(
            plan.samples, out_dir, plan.name, int(data_cfg["shard_size"]), plan.total, plan.image_size
        )
        _log_split(plan.name, entry)
        check_bad_fraction(plan.name, entry, max_bad_fraction)
        split_entries[plan.name] = entry

    manifest = {"source": source, "splits": split_entries, "created_by": "mot data"}
    write_manifest(out_dir, manifest)
    return manifest


def _plan_splits(data_cfg: dict) -> list[SplitPlan]:
    source = data_cfg["source"]
    if source == "synthetic":
        return _synthetic_splits(data_cfg["synthetic"])
    if source == "coco":
        return _coco_splits(data_cfg["coco"])
    raise DataError(f"data.source: unknown source {source!r} (expected 'synthetic' or 'coco')")


def _synthetic_splits(cfg: dict) -> list[SplitPlan]:
    plans = []
    # Distinct seeds and key prefixes keep the three sample streams disjoint.
    for offset, split in enumerate(("train", "val", "test")):
        n = int(cfg[f"n_{split}"])
        samples = iter_synthetic(
            n,
            seed=int(cfg["seed"]) + offset,
            image_size=int(cfg["image_size"]),
            min_shapes=int(cfg["min_shapes"]),
            max_shapes=int(cfg["max_shapes"]),
            captions_per_image=int(cfg["captions_per_image"]),
            key_prefix=f"syn-{split}",
        )
        plans.append(SplitPlan(split, samples, total=n, image_size=None))
    return plans


def _coco_splits(cfg: dict) -> list[SplitPlan]:
    image_size = cfg.get("image_size")
    plans = []
    for split in ("train", "val", "test"):
        captions_json, image_dir = cfg.get(f"{split}_json"), cfg.get(f"{split}_images")
        if split == "test" and captions_json is None:
            continue  # COCO test captions are optional
        if captions_json is None or image_dir is None:
            raise DataError(f"data.coco.{split}_json and data.coco.{split}_images are required")
        samples = iter_coco_captions(Path(captions_json), Path(image_dir))
        plans.append(SplitPlan(split, samples, total=None, image_size=image_size))
    return plans


def _log_split(split: str, entry: dict) -> None:
    logger.info(
        "%s: wrote %d samples in %d shards, %d bad (%s)",
        split, entry["n_samples"], len(entry["shards"]), entry["n_bad"], _format_reasons(entry),
    )


def _format_reasons(entry: dict) -> str:
    reasons = entry["bad_by_reason"]
    return ", ".join(f"{reason}={count}" for reason, count in reasons.items()) or "none"


def _remove_previous_manifest(out_dir: Path) -> None:
    # An old manifest must not vouch for shards this run is about to overwrite.
    (out_dir / MANIFEST).unlink(missing_ok=True)


def _remove_stale_shards(out_dir: Path, split: str) -> None:
    # A previous, larger build could leave extra shards behind.
    for path in out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].tar"):
        path.unlink()


def build_speech(config: dict, out_dir: Path) -> dict:
    """The spoken-caption shards of the chameleon_speech setting under out_dir (data/speech): the image
    captions rendered as audio (synthetic), or LibriSpeech-style folders imported. Returns the manifest."""
    data_cfg, speech = config["data"], config["data"]["speech"]
    common = dict(sample_rate=speech["sample_rate"], audio_format=speech["audio_format"],
                  shard_size=data_cfg["shard_size"], max_bad_fraction=data_cfg["max_bad_fraction"])
    if speech["source"] == "librispeech":
        roots = {split: root for split, root in speech["librispeech"].items() if root}
        return build_librispeech_dataset(roots, out_dir, resample=speech["resample"], **common)
    image_dir = Path(out_dir).parent
    captions_by_split = {}
    for split in load_manifest(image_dir)["splits"]:
        keys, _, captions = load_split_arrays(image_dir, split)
        limit = speech["max_utterances"] or len(keys)
        captions_by_split[split] = (keys[:limit], captions[:limit])
    return build_speech_dataset(captions_by_split, out_dir, renderer=speech["renderer"], seed=speech["seed"],
                                caption_choice=speech["caption_choice"], **common)


def build_text(config: dict, out_dir: Path) -> dict:
    """The text-only documents of `sequences.mixture.text_only` under out_dir (data/text): the synthetic
    corpus, or a folder / JSON-lines import; none contains a caption of the image data's val or test split."""
    data_cfg = config["data"]
    held_out = held_out_captions(Path(out_dir).parent)
    synthetic = data_cfg["synthetic"]
    return build_text_dataset(data_cfg["text_only"], out_dir, held_out, min_shapes=synthetic["min_shapes"],
                              max_shapes=synthetic["max_shapes"], shard_size=data_cfg["shard_size"],
                              max_bad_fraction=data_cfg["max_bad_fraction"])
