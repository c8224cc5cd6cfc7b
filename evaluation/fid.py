"""FID through clean-fid, with the feature network chosen by name.

- "tiny_clip": the image tower of a trained TinyClip; features are its *projected, unnormalised*
  image embedding ([N, embed_dim]), i.e. `CLIP.encode_image(x, normalize=False)`.
- "inception": clean-fid's own Inception-V3 torchscript ([N, 2048]), only from a local weights
  file; nothing is ever downloaded.

Both work the same way on arrays (`features`) and through clean-fid's folder pipeline
(`fid_between_folders`): one per-image resize (clean-fid's `custom_fn_resize`) followed by the
network on float pixels in 0..255, so the two paths give the same numbers.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from cleanfid import fid as clean_fid
from cleanfid.resize import build_resizer
from PIL import Image

from evaluation.clip import TinyClip, pixels_to_input

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
EXTRACTORS = ("tiny_clip", "inception")
CPU = torch.device("cpu")


@dataclass
class FeatureExtractor:
    """A feature network plus the per-image resize that must come before it."""

    name: str
    model: torch.nn.Module  # float [N,3,H,W] in 0..255 -> [N, D]; clean-fid's custom_feat_extractor
    fn_resize: Callable[[np.ndarray], np.ndarray]  # HxWx3 image -> float32 HxWx3; clean-fid's custom_fn_resize


class TinyClipFeatures(torch.nn.Module):
    """The TinyClip image tower on 0..255 pixels of any size: it resizes and normalises itself."""

    def __init__(self, clip: TinyClip):
        super().__init__()
        self.visual = clip.model.visual.eval()
        self.image_size = clip.cfg.image_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels_to_input(pixels, self.image_size))


class LocalInception(torch.nn.Module):
    """clean-fid's InceptionV3W (mode "clean") read from a given file, never downloaded."""

    def __init__(self, weights_path: Path):
        super().__init__()
        self.base = torch.jit.load(str(weights_path), map_location="cpu").eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # same scaling and layers as cleanfid.inception_torchscript.InceptionV3W.forward
        return self.base.layers.forward((pixels - 128) / 128).reshape(len(pixels), -1)


def default_inception_path() -> Path:
    """Where clean-fid itself caches the Inception weights."""
    return Path("./" if platform.system() == "Windows" else "/tmp") / INCEPTION_FILE


def get_feature_extractor(name: str, clip: TinyClip | str | Path | None = None,
                          inception_weights: str | Path | None = None) -> FeatureExtractor:
    """The extractor called `name`: "tiny_clip" needs `clip` (a TinyClip or its saved file), "inception" a
    local weights file (`inception_weights`, else clean-fid's own cache path)."""
    if name == "tiny_clip":
        if clip is None:
            raise ValueError("the tiny_clip extractor needs a TinyClip or the path of a saved one")
        clip = clip if isinstance(clip, TinyClip) else TinyClip.load(clip)
        return FeatureExtractor(name, TinyClipFeatures(clip), _as_float32)  # the network resizes itself
    if name == "inception":
        path = Path(inception_weights) if inception_weights else default_inception_path()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found at {path}; fetch {INCEPTION_URL} on a machine "
                                    f"with network and pass its path as inception_weights (nothing is downloaded)")
        return FeatureExtractor(name, LocalInception(path), build_resizer("clean"))  # PIL bicubic to 299, float32
    raise ValueError(f"unknown feature extractor {name!r}; choose from {EXTRACTORS}")


def features(images_uint8, extractor: FeatureExtractor, batch_size: int = 256) -> np.ndarray:
    """Features [N, D] (float64) of uint8 images [N,H,W,3], as clean-fid would compute them."""
    chunks = []
    for start in range(0, len(images_uint8), batch_size):
        batch = np.stack([extractor.fn_resize(np.asarray(image)) for image in images_uint8[start:start + batch_size]])
        with torch.no_grad():
            chunks.append(extractor.model(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy())
    return np.concatenate(chunks).astype(np.float64)


def statistics_of(feats: np.ndarray) -> dict:
    return {"mu": feats.mean(axis=0), "sigma": np.cov(feats, rowvar=False), "n": len(feats)}


def reference_statistics(images_uint8, extractor: FeatureExtractor) -> dict:
    """Mean, covariance and count of a data set's features, plus the extractor's name."""
    return {**statistics_of(features(images_uint8, extractor)), "extractor": extractor.name}


def save_statistics(stats: dict, path: str | Path) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the name
        np.savez(f, **stats)


def load_statistics(path: str | Path) -> dict:
    with np.load(path) as data:
        stats = {key: data[key] for key in data.files}
    stats["n"] = int(stats["n"])
    if "extractor" in stats:
        stats["extractor"] = str(stats["extractor"])
    return stats


def fid_against_reference(images_uint8, reference_stats: dict, extractor: FeatureExtractor) -> float:
    """FID of generated uint8 images against precomputed reference statistics."""
    if reference_stats.get("extractor", extractor.name) != extractor.name:
        raise ValueError(f"reference statistics come from {reference_stats['extractor']!r}, not {extractor.name!r}")
    stats = statistics_of(features(images_uint8, extractor))
    ref_mu, ref_sigma = reference_stats["mu"], reference_stats["sigma"]
    return float(clean_fid.frechet_distance(stats["mu"], stats["sigma"], ref_mu, ref_sigma))


def fid_between_folders(dir_a: str | Path, dir_b: str | Path, extractor: FeatureExtractor,
                        batch_size: int = 256) -> float:
    """FID between two image folders through clean-fid's own loading pipeline, on the CPU."""
    score = clean_fid.compute_fid(str(dir_a), str(dir_b), mode="clean", custom_feat_extractor=extractor.model,
                                  custom_fn_resize=extractor.fn_resize, batch_size=batch_size, device=CPU,
                                  num_workers=0, verbose=False, use_dataparallel=False)
    return float(score)


def write_png_folder(images_uint8, directory: str | Path) -> Path:
    """Write uint8 images [N,H,W,3] as numbered, lossless PNGs (for clean-fid's folder pipeline)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images_uint8):
        Image.fromarray(np.asarray(image)).save(directory / f"{i:06d}.png")
    return directory


def _as_float32(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)
