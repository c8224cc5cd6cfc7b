"""The tiny CLIP on the study's own captioned scenes: held-out matched pairs score higher than
shuffled ones, as the pipeline's eval/clip_score vs eval/clip_score_shuffled relies on."""

import numpy as np

from evaluation.clip import TinyClipConfig, retrieval_recall_at_1, train_tiny_clip
from evaluation.clip_score import clip_score
from mot.data.synthetic import iter_synthetic

SMALL = TinyClipConfig(patch_size=8, vision_width=64, vision_layers=2, vision_heads=2, text_width=64,
                       text_layers=2, text_heads=2, context_length=40, embed_dim=32)


def scenes(n, seed):
    samples = list(iter_synthetic(n, seed=seed, image_size=32))
    return np.stack([s.image for s in samples]), [s.captions for s in samples]


def test_matched_val_pairs_beat_shuffled_pairs():
    train_images, train_captions = scenes(768, seed=10)
    val_images, val_captions = scenes(64, seed=11)  # the val split is drawn the same way, another seed
    clip = train_tiny_clip(train_images, train_captions, SMALL, steps=150, batch_size=64, lr=2e-3, seed=0)
    prompts = [caps[0] for caps in val_captions]
    matched = clip_score(clip, val_images, prompts)
    shuffled = clip_score(clip, val_images, prompts[1:] + prompts[:1])
    assert matched > shuffled + 5, (matched, shuffled)
    recall = retrieval_recall_at_1(clip, val_images, prompts)
    assert recall["image_to_text_r1"] > 3 * recall["chance"]
