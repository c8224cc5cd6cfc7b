import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from mot.tokenizers.image_vae import (
    VAE_JSON,
    ImageVAE,
    VAEConfig,
    build_autoencoder,
    evaluate_vae,
    train_vae,
)
from mot.data.synthetic import iter_synthetic

TINY_CFG = VAEConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, steps=60, batch_size=16, lr=5e-3)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def synthetic_scenes(n: int) -> np.ndarray:
    """n of the study's synthetic scenes (shapes on varied backgrounds), uint8 [n,32,32,3]."""
    return np.stack([sample.image for sample in iter_synthetic(n, seed=5)])


@pytest.fixture(scope="module")
def scenes() -> np.ndarray:
    return synthetic_scenes(128)


@pytest.fixture(scope="module")
def trained(scenes):
    torch.set_num_threads(1)
    logged: list[tuple[dict, int]] = []
    vae, metrics = train_vae(scenes, TINY_CFG, log_fn=lambda values, step: logged.append((values, step)),
                             log_every=20)
    return vae, metrics, logged


def untrained(cfg: VAEConfig = TINY_CFG) -> ImageVAE:
    torch.manual_seed(cfg.seed)
    return ImageVAE(build_autoencoder(cfg), cfg).eval()


# --- config and shapes -----------------------------------------------------------------------


def test_default_config_maps_32px_images_to_8x8x4_latents():
    cfg = VAEConfig()
    assert cfg.downsample == 4 and cfg.latent_channels == 4
    assert untrained(cfg).latent_shape(32) == (4, 8, 8)


def test_config_rejects_norm_groups_that_do_not_divide_the_widths():
    with pytest.raises(ValueError, match="norm_num_groups"):
        VAEConfig(block_out_channels=(12, 16), norm_num_groups=8)


def test_encode_decode_shapes_and_dtypes():
    vae = untrained()
    images = synthetic_scenes(5)
    latents = vae.encode(images)
    assert latents.dtype == torch.float32 and latents.shape == (5, *vae.latent_shape(32))
    decoded = vae.decode(latents)
    assert decoded.dtype == torch.uint8 and decoded.shape == (5, 32, 32, 3)
    assert torch.equal(vae.encode(torch.from_numpy(images)), latents), "numpy and torch input must agree"
    assert torch.equal(vae.encode(images), latents), "encode is the posterior mean: deterministic"
    with pytest.raises(ValueError, match="divisible"):
        vae.latent_shape(30)


def test_encode_keeps_training_mode():
    vae = untrained().train()
    vae.encode(synthetic_scenes(2))
    assert vae.training


def test_kl_is_finite_and_positive():
    metrics = evaluate_vae(untrained(), synthetic_scenes(8))
    assert np.isfinite(metrics["kl"]) and metrics["kl"] > 0
    assert 0 < metrics["recon_mse"] < 1


# --- training --------------------------------------------------------------------------------


def test_training_lowers_recon_mse_below_the_mean_image(trained, scenes):
    vae, metrics, _ = trained
    before = evaluate_vae(untrained(), scenes)
    pixels = scenes / 255.0
    mean_image_mse = float(((pixels - pixels.mean(0)) ** 2).mean())
    assert metrics["recon_mse"] < 0.25 * before["recon_mse"]
    assert metrics["recon_mse"] < 0.75 * mean_image_mse
    assert np.isfinite(metrics["kl"]) and metrics["kl"] > 0
    assert not vae.training


def test_scale_factor_makes_training_latents_zero_mean_unit_std(trained, scenes):
    vae, metrics, _ = trained
    latents = vae.encode(scenes).double()
    assert float(latents.std()) == pytest.approx(1.0, abs=1e-3)
    assert float(latents.mean()) == pytest.approx(0.0, abs=1e-3)
    assert vae.scaling_factor == pytest.approx(1 / metrics["latent_std"])
    assert vae.shift_factor == pytest.approx(metrics["latent_shift"])


def test_decode_of_encode_matches_reported_recon_mse(trained, scenes):
    vae, metrics, _ = trained
    roundtrip = vae.decode(vae.encode(scenes)).numpy() / 255.0
    assert float(((roundtrip - scenes / 255.0) ** 2).mean()) == pytest.approx(metrics["recon_mse"], rel=0.05)


def test_log_fn_called_every_log_every_steps(trained):
    _, _, logged = trained
    assert [step for _, step in logged] == [20, 40, 60]
    assert set(logged[0][0]) == {"vae/recon_mse", "vae/kl"}


def test_same_seed_gives_identical_latents(scenes):
    def train(seed: int) -> torch.Tensor:
        cfg = VAEConfig(**{**TINY_CFG.__dict__, "steps": 3, "seed": seed})
        return train_vae(scenes[:32], cfg)[0].encode(scenes[:8])

    first = train(seed=1)
    assert torch.equal(first, train(seed=1))
    assert not torch.equal(first, train(seed=2))


# --- save / load -----------------------------------------------------------------------------


def test_save_load_gives_identical_encodings_and_decodings(trained, scenes, tmp_path):
    vae, _, _ = trained
    directory = tmp_path / "nested" / "image_vae"
    vae.save(directory)
    loaded = ImageVAE.load(directory)
    assert loaded.cfg == vae.cfg and not loaded.training
    assert (loaded.scaling_factor, loaded.shift_factor) == (vae.scaling_factor, vae.shift_factor)
    assert torch.equal(loaded.encode(scenes[:16]), vae.encode(scenes[:16]))
    latents = vae.encode(scenes[:4])
    assert torch.equal(loaded.decode(latents), vae.decode(latents))
    # the directory is a plain diffusers model too, with the fitted latent stats in its config
    plain = AutoencoderKL.from_pretrained(directory, local_files_only=True)
    assert plain.config.scaling_factor == pytest.approx(vae.scaling_factor)
    assert json.loads((directory / VAE_JSON).read_text())["config"]["block_out_channels"] == [8, 16, 16]


@pytest.mark.parametrize("subfolder", ["", "vae"])
def test_load_accepts_a_pretrained_diffusers_autoencoder_without_our_json(tmp_path, scenes, subfolder):
    torch.manual_seed(0)
    autoencoder = build_autoencoder(TINY_CFG)
    autoencoder.register_to_config(scaling_factor=0.5, shift_factor=None)
    autoencoder.save_pretrained(tmp_path / subfolder)
    vae = ImageVAE.load(tmp_path)
    assert vae.cfg is None and vae.scaling_factor == 0.5 and vae.shift_factor == 0.0
    assert vae.latent_shape(32) == (4, 8, 8)
    raw_mean = ImageVAE(autoencoder).eval().posterior(torch.from_numpy(scenes[:4]).permute(0, 3, 1, 2)
                                                      .float().div(127.5).sub(1)).mean
    assert torch.allclose(vae.encode(scenes[:4]), raw_mean * 0.5, atol=1e-6)


def test_load_names_the_directory_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ImageVAE.load(tmp_path)
