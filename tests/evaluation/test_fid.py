"""FID: the feature extractors, reference statistics, and clean-fid's folder pipeline agreeing with ours."""

import socket

import numpy as np
import pytest
import torch
from cleanfid import fid as clean_fid
from cleanfid.downloads_helper import check_download_inception

import evaluation.fid as fid_module
from evaluation.clip import TinyClip, TinyClipConfig, build_tiny_clip
from evaluation.fid import (INCEPTION_FILE, features, fid_against_reference, fid_between_folders,
                            get_feature_extractor, load_statistics, reference_statistics, save_statistics,
                            write_png_folder)

TINY = TinyClipConfig(patch_size=8, vision_width=64, vision_layers=2, vision_heads=2, text_width=32,
                      text_layers=1, text_heads=2, context_length=8, embed_dim=32)


def shapes(n: int, seed: int) -> np.ndarray:
    """1-2 random coloured squares of random size on a grey-ish background."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for image in images:
        image[:] = rng.integers(100, 170)
        for _ in range(rng.integers(1, 3)):
            size = rng.integers(5, 13)
            y, x = rng.integers(0, 32 - size, size=2)
            image[y:y + size, x:x + size] = rng.integers(0, 256, size=3)
    return images


def add_noise(images: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    noisy = images + np.random.default_rng(seed).normal(0, std, images.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip() -> TinyClip:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return TinyClip(build_tiny_clip(TINY), TINY)  # random weights are a fine, fixed feature map for these checks


@pytest.fixture(scope="module")
def extractor(clip):
    return get_feature_extractor("tiny_clip", clip=clip)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network touched")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_fid_of_a_set_against_itself_is_zero(extractor):
    images = shapes(200, seed=0)
    stats = reference_statistics(images, extractor)
    assert stats["n"] == 200 and stats["mu"].shape == (TINY.embed_dim,)
    assert stats["sigma"].shape == (TINY.embed_dim, TINY.embed_dim)
    assert abs(fid_against_reference(images, stats, extractor)) < 1e-3 * np.trace(stats["sigma"])


def test_fid_grows_with_pixel_noise(extractor):
    reference = reference_statistics(shapes(300, seed=0), extractor)
    generated = shapes(300, seed=1)
    scores = [fid_against_reference(add_noise(generated, std), reference, extractor) for std in (0, 10, 30, 80)]
    assert scores == sorted(scores) and len(set(scores)) == 4, scores
    assert scores[-1] > 10 * scores[0] > 0


def test_statistics_round_trip_and_guard_the_extractor(extractor, tmp_path):
    stats = reference_statistics(shapes(50, seed=0), extractor)
    save_statistics(stats, tmp_path / "ref.stats")
    loaded = load_statistics(tmp_path / "ref.stats")
    assert loaded["n"] == 50 and loaded["extractor"] == "tiny_clip"
    np.testing.assert_array_equal(loaded["mu"], stats["mu"])
    np.testing.assert_array_equal(loaded["sigma"], stats["sigma"])
    with pytest.raises(ValueError, match="inception"):
        fid_against_reference(shapes(50, seed=1), {**loaded, "extractor": "inception"}, extractor)


def test_clean_fid_folder_pipeline_matches_direct_features(extractor, tmp_path):
    images_a, images_b = shapes(80, seed=0), add_noise(shapes(80, seed=1), 20)
    dir_a, dir_b = write_png_folder(images_a, tmp_path / "a"), write_png_folder(images_b, tmp_path / "b")
    feats_a, feats_b = features(images_a, extractor, batch_size=32), features(images_b, extractor)
    folder_feats = clean_fid.get_folder_features(str(dir_a), extractor.model, num_workers=0, device=torch.device("cpu"),
                                                 custom_fn_resize=extractor.fn_resize, verbose=False)
    np.testing.assert_allclose(folder_feats, feats_a, rtol=1e-4, atol=1e-4)
    direct = clean_fid.frechet_distance(feats_a.mean(0), np.cov(feats_a, rowvar=False),
                                        feats_b.mean(0), np.cov(feats_b, rowvar=False))
    assert direct > 0
    assert fid_between_folders(dir_a, dir_b, extractor) == pytest.approx(direct, rel=1e-3)


def test_tiny_clip_extractor_loads_a_saved_clip(clip, extractor, tmp_path):
    clip.save(tmp_path / "clip.pt")
    images = shapes(8, seed=0)
    np.testing.assert_array_equal(features(images, get_feature_extractor("tiny_clip", clip=tmp_path / "clip.pt")),
                                  features(images, extractor))
    with pytest.raises(ValueError, match="TinyClip"):
        get_feature_extractor("tiny_clip")
    with pytest.raises(ValueError, match="unknown"):
        get_feature_extractor("dino")


def test_inception_without_local_weights_fails_fast_offline(no_network, monkeypatch, tmp_path):
    with pytest.raises(AssertionError, match="network touched"):  # the guard does catch clean-fid's own download
        check_download_inception(str(tmp_path))
    monkeypatch.setattr(fid_module, "default_inception_path", lambda: tmp_path / INCEPTION_FILE)
    for weights in (None, tmp_path / "elsewhere.pt"):
        with pytest.raises(FileNotFoundError, match="inception_weights") as error:
            get_feature_extractor("inception", inception_weights=weights)
        assert "\n" not in str(error.value)


class _FakeInception(torch.nn.Module):
    """Stands in for clean-fid's torchscript Inception: a `layers` module giving 2048 features."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 2048))

    def forward(self, x):
        return self.layers(x)


def test_inception_from_local_weights_resizes_to_299_on_both_paths(no_network, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "weights" / INCEPTION_FILE
    weights.parent.mkdir()
    torch.jit.script(_FakeInception()).save(str(weights))
    inception = get_feature_extractor("inception", inception_weights=weights)
    assert inception.fn_resize(shapes(1, seed=0)[0]).shape == (299, 299, 3)
    images = shapes(6, seed=0)
    folder = write_png_folder(images, tmp_path / "images")
    folder_feats = clean_fid.get_folder_features(str(folder), inception.model, num_workers=0,
                                                 device=torch.device("cpu"), custom_fn_resize=inception.fn_resize,
                                                 verbose=False)
    direct = features(images, inception)
    assert direct.shape == (6, 2048)
    np.testing.assert_allclose(folder_feats, direct, rtol=1e-4, atol=1e-4)
