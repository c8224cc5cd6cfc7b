import math

import numpy as np
import pytest
import torch

from mot.tokenizers.image_vq import EMAQuantizer, VQConfig, VQVAE, codebook_stats, train_vqvae

TINY_CFG = VQConfig(codebook_size=16, code_dim=8, hidden=16)


def coloured_rectangles(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """n uint8 images [n,size,size,3]: one random-coloured rectangle on a grey background."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 128, np.uint8)
    for image in images:
        x0, y0 = rng.integers(0, size - 8, 2)
        width, height = rng.integers(6, 17, 2)
        image[y0 : y0 + height, x0 : x0 + width] = rng.integers(0, 256, 3)
    return images


@pytest.fixture(scope="module")
def rectangles() -> np.ndarray:
    return coloured_rectangles(256)


@pytest.fixture(scope="module")
def trained(rectangles):
    torch.set_num_threads(1)
    logged: list[tuple[dict, int]] = []
    model, metrics = train_vqvae(
        rectangles, VQConfig(codebook_size=32), steps=150, batch_size=32, lr=2e-3, seed=0,
        log_fn=lambda values, step: logged.append((values, step)), log_every=50,
    )
    return model, metrics, logged


# --- codebook_stats -------------------------------------------------------------------------


def test_codebook_stats_two_equally_used_codes_of_four():
    stats = codebook_stats(torch.tensor([0, 0, 1, 1]), codebook_size=4)
    assert stats["perplexity"] == pytest.approx(2.0)
    assert stats["codebook_usage"] == pytest.approx(0.5)


def test_codebook_stats_uniform_and_skewed_usage():
    uniform = codebook_stats(torch.arange(8).view(2, 4), codebook_size=8)
    assert uniform == pytest.approx({"perplexity": 8.0, "codebook_usage": 1.0})
    skewed = codebook_stats(torch.tensor([3, 3, 3, 5]), codebook_size=10)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert skewed == pytest.approx({"perplexity": math.exp(entropy), "codebook_usage": 0.2})


# --- shapes and dtypes ----------------------------------------------------------------------


def test_encode_decode_shapes_and_dtypes():
    torch.manual_seed(0)
    model = VQVAE(TINY_CFG)
    images = coloured_rectangles(5)
    codes = model.encode(images)
    assert codes.dtype == torch.long and codes.shape == (5, model.tokens_per_image(32)) == (5, 64)
    assert 0 <= int(codes.min()) and int(codes.max()) < TINY_CFG.codebook_size
    decoded = model.decode(codes)
    assert decoded.dtype == torch.uint8 and decoded.shape == (5, 32, 32, 3)
    assert torch.equal(model.encode(torch.from_numpy(images)), codes), "numpy and torch input must agree"


def test_forward_shapes_and_encode_keeps_training_mode():
    model = VQVAE(TINY_CFG).train()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    recon, vq_loss, codes = model(x)
    assert recon.shape == x.shape and float(recon.detach().abs().max()) <= 1.0
    assert vq_loss.ndim == 0 and codes.shape == (3, 64)
    model.encode(coloured_rectangles(2))
    assert model.training


def test_tokens_per_image_follows_downsample():
    assert VQVAE(VQConfig(downsample=2, hidden=16)).tokens_per_image(32) == 256
    assert VQVAE(VQConfig(downsample=8, hidden=16)).tokens_per_image(32) == 16
    with pytest.raises(ValueError):
        VQConfig(downsample=3)


# --- quantiser mechanics --------------------------------------------------------------------


def test_straight_through_gradient_reaches_encoder():
    model = VQVAE(TINY_CFG).train()
    recon, _, _ = model(torch.rand(4, 3, 32, 32) * 2 - 1)
    recon.pow(2).mean().backward()  # reconstruction only: no commitment-loss path to the encoder
    first_conv = model.encoder[0]
    assert first_conv.weight.grad is not None and float(first_conv.weight.grad.abs().sum()) > 0
    assert not any(True for _ in model.quantizer.parameters()), "codebook is EMA-updated, not learned"


def test_dead_codes_are_restarted_from_encoder_outputs():
    torch.manual_seed(0)
    quantizer = EMAQuantizer(codebook_size=4, code_dim=2, decay=0.99, commitment=0.25, dead_code_steps=5).train()
    data = torch.randn(2, 2, 8, 8)
    quantizer(data)  # first batch initialises the codebook
    quantizer.codebook[3] = torch.tensor([1e3, 1e3])  # move code 3 far from every input: it goes unused
    quantizer.embed_sum[3] = quantizer.codebook[3]
    for _ in range(5):
        quantizer(data)
    assert float(quantizer.codebook[3].abs().max()) < 10, "dead code should be re-seeded from the batch"
    assert int(quantizer.steps_unused[3]) == 0


# --- training -------------------------------------------------------------------------------


def test_training_beats_mean_image_and_uses_codebook(trained, rectangles):
    model, metrics, _ = trained
    pixels = rectangles / 255.0
    mean_image_mse = float(((pixels - pixels.mean(0)) ** 2).mean())
    assert metrics["recon_mse"] < 0.5 * mean_image_mse
    assert metrics["codebook_usage"] > 0.25
    assert 1.0 < metrics["perplexity"] <= 32
    assert not model.training


def test_decode_of_encode_matches_reported_recon_mse(trained, rectangles):
    model, metrics, _ = trained
    roundtrip = model.decode(model.encode(rectangles)).numpy() / 255.0
    assert float(((roundtrip - rectangles / 255.0) ** 2).mean()) == pytest.approx(metrics["recon_mse"], rel=0.05)


def test_log_fn_called_every_log_every_steps(trained):
    _, _, logged = trained
    assert [step for _, step in logged] == [50, 100, 150]
    assert set(logged[0][0]) == {"vq/recon_mse", "vq/perplexity", "vq/codebook_usage"}


def test_same_seed_gives_identical_codes(rectangles):
    def train(seed: int) -> torch.Tensor:
        model, _ = train_vqvae(rectangles[:64], TINY_CFG, steps=10, batch_size=16, lr=2e-3, seed=seed)
        return model.encode(rectangles[:16])

    first = train(seed=1)
    assert torch.equal(first, train(seed=1))
    assert not torch.equal(first, train(seed=2))


def test_save_load_gives_identical_codes(trained, rectangles, tmp_path):
    model, _, _ = trained
    path = tmp_path / "nested" / "vqvae.pt"
    model.save(path)
    loaded = VQVAE.load(path)
    assert loaded.cfg == model.cfg and not loaded.training
    assert torch.equal(loaded.encode(rectangles[:32]), model.encode(rectangles[:32]))
    codes = model.encode(rectangles[:4])
    assert torch.equal(loaded.decode(codes), model.decode(codes))
