"""The tiny CLIP (training, retrieval, save/load, determinism) and the CLIP score built on it."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchmetrics.functional.multimodal.clip_score import clip_score as torchmetrics_clip_score

from evaluation.clip import (TinyClip, TinyClipConfig, build_tiny_clip, encode_text, images_to_tensor,
                             retrieval_recall_at_1, train_tiny_clip)
from evaluation.clip_score import clip_score, clip_score_from_embeddings

# Small enough to train in seconds on one thread, big enough to learn 8 colours x 8 places.
SMALL = TinyClipConfig(patch_size=8, vision_width=64, vision_layers=2, vision_heads=2, text_width=64,
                       text_layers=2, text_heads=2, context_length=16, embed_dim=32)
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 220), "yellow": (240, 210, 20),
           "purple": (140, 40, 170), "orange": (245, 130, 20), "cyan": (20, 200, 210), "white": (250, 250, 250)}
PLACES = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "right": (1, 2),
          "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}


def square(colour: str, place: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """An 8-pixel square in one cell of a 3x3 grid on a grey-ish 32x32 image, three paraphrases."""
    image = np.full((32, 32, 3), rng.integers(110, 160), dtype=np.uint8)
    row, col = PLACES[place]
    y, x = 11 * row + rng.integers(0, 3), 11 * col + rng.integers(0, 3)
    image[y:y + 8, x:x + 8] = COLOURS[colour]
    return image, [f"a {colour} square at the {place}", f"the {place} holds a {colour} square",
                   f"{colour} square, {place}"]


def squares(pairs, seed: int) -> tuple[np.ndarray, list[list[str]]]:
    rng = np.random.default_rng(seed)
    images, captions = zip(*(square(colour, place, rng) for colour, place in pairs))
    return np.stack(images), list(captions)


@pytest.fixture(scope="module")
def data():
    """512 random training squares; 64 held-out ones, one of each colour x place so no captions tie."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train_pairs = [(rng.choice(list(COLOURS)), rng.choice(list(PLACES))) for _ in range(512)]
    return squares(train_pairs, seed=1), squares([(c, p) for c in COLOURS for p in PLACES], seed=2)


@pytest.fixture(scope="module")
def trained(data):
    (images, captions), _ = data
    return train_tiny_clip(images, captions, SMALL, steps=200, batch_size=64, lr=2e-3, seed=0)


def test_training_retrieves_far_above_chance(trained, data):
    _, (images, captions) = data
    recall = retrieval_recall_at_1(trained, images, captions)
    assert recall["chance"] == pytest.approx(1 / 64)
    assert recall["image_to_text_r1"] > 5 * recall["chance"]
    assert recall["text_to_image_r1"] > 5 * recall["chance"]


def test_untrained_model_is_near_chance(data):
    _, (images, captions) = data
    torch.manual_seed(0)
    recall = retrieval_recall_at_1(TinyClip(build_tiny_clip(SMALL), SMALL), images, captions)
    assert recall["image_to_text_r1"] < 3 * recall["chance"]


def test_embeddings_are_unit_norm(trained, data):
    _, (images, captions) = data
    for emb in (trained.encode_images(images, batch_size=10), trained.encode_texts([c[0] for c in captions], 10)):
        assert emb.shape == (64, SMALL.embed_dim)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(64))


def test_save_load_gives_identical_embeddings(trained, data, tmp_path):
    _, (images, captions) = data
    trained.save(tmp_path / "clip.pt")
    loaded = TinyClip.load(tmp_path / "clip.pt")
    assert loaded.cfg == SMALL
    assert torch.equal(loaded.encode_images(images), trained.encode_images(images))
    texts = [c[0] for c in captions]
    assert torch.equal(loaded.encode_texts(texts), trained.encode_texts(texts))


def test_training_is_deterministic_given_seed(data):
    (images, captions), _ = data
    logs = []
    runs = [train_tiny_clip(images, captions, SMALL, steps=4, batch_size=32, lr=1e-3, seed=seed,
                            log_fn=lambda metrics, step: logs.append((step, metrics)), log_every=2)
            for seed in (7, 7, 8)]
    states = [run.model.state_dict() for run in runs]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])
    assert [step for step, _ in logs] == [2, 4] * 3
    assert set(logs[0][1]) == {"clip/loss", "clip/lr", "clip/logit_scale"}


def test_trimmed_text_encoder_matches_open_clip():
    torch.manual_seed(0)
    clip = TinyClip(build_tiny_clip(SMALL), SMALL)
    ids = clip.tokenize(["red", "a blue square at the top left", "x " * 40])  # the last is truncated
    with torch.no_grad():
        torch.testing.assert_close(encode_text(clip.model, ids), clip.model.encode_text(ids), atol=1e-5, rtol=0)


def test_images_to_tensor_normalises_and_resizes():
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    images = np.broadcast_to(np.round(mean * 255).astype(np.uint8), (2, 64, 48, 3))
    x = images_to_tensor(images, image_size=32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x.abs().max() < 0.01  # the CLIP mean maps to ~0 after normalisation


# --- CLIP score ---------------------------------------------------------------------


def test_clip_score_formula_clamps_each_pair():
    image = [[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]
    text = [[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]]  # cosines 1, -1 (clamped to 0), 1/sqrt(2)
    assert clip_score_from_embeddings(image, text) == pytest.approx(100 * (1 + 0 + 2 ** -0.5) / 3)
    assert clip_score_from_embeddings(image[:1], [[-1.0, 0.0]]) == 0.0


def test_matched_pairs_score_higher_than_shuffled(trained, data):
    _, (images, captions) = data
    prompts = [c[0] for c in captions]
    matched = clip_score(trained, images, prompts)
    order = np.random.default_rng(0).permutation(64)
    partner = np.empty(64, dtype=int)
    partner[order] = np.roll(order, 1)  # one random 64-cycle: no image keeps its own caption
    shuffled = clip_score(trained, images, [prompts[i] for i in partner])
    assert 0 <= shuffled < matched - 10 < 90


class _EmbeddingModel(torch.nn.Module):
    """A torchmetrics-compatible "CLIP model" that returns given embeddings by index."""

    def __init__(self, image_emb, text_emb):
        super().__init__()
        self.image_emb, self.text_emb = torch.as_tensor(image_emb), torch.as_tensor(text_emb)
        self.config = SimpleNamespace()  # torchmetrics probes config.text_config

    def get_image_features(self, pixel_values):
        return self.image_emb[pixel_values]

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text_emb[input_ids]


def _index_processor(images=None, text=None, **_):
    if images is not None:
        return {"pixel_values": torch.arange(len(images))}
    return {"input_ids": torch.arange(len(text)), "attention_mask": torch.ones(len(text))}


def _torchmetrics_score(image_emb, text_emb) -> float:
    n = len(image_emb)
    model = _EmbeddingModel(image_emb, text_emb)
    return torchmetrics_clip_score(torch.zeros(n, 3, 2, 2), [str(i) for i in range(n)],
                                   model_name_or_path=lambda: (model, _index_processor)).item()


def test_clip_score_matches_torchmetrics_on_shared_embeddings(trained, data):
    _, (images, captions) = data
    image_emb, text_emb = trained.encode_images(images), trained.encode_texts([c[0] for c in captions])
    assert ((image_emb * text_emb).sum(-1) > 0).all()  # where torchmetrics' clamp-after-mean is the same
    assert clip_score_from_embeddings(image_emb, text_emb) == pytest.approx(_torchmetrics_score(image_emb, text_emb),
                                                                            rel=1e-5)


def test_torchmetrics_clamps_the_mean_where_we_clamp_each_pair():
    image, text = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert _torchmetrics_score(image, text) == pytest.approx(0.0)  # max(mean(100, -100), 0)
    assert clip_score_from_embeddings(image, text) == pytest.approx(50.0)  # mean(100, 0)
