"""CLIP score with the tiny CLIP: mean over pairs of 100 * max(cos(image, text), 0).

This is the CLIPScore of Hessel et al. (2021) with weight 100, as torchmetrics documents it.
Note torchmetrics' code clamps the *mean* instead (max(mean(100 * cos), 0)); the two agree
whenever no pair has a negative cosine, which is the usual case for a trained CLIP.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from evaluation.clip import TinyClip


def clip_score_from_embeddings(image_emb, text_emb) -> float:
    """Mean of 100 * max(cos, 0) over rows of two [N, D] arrays (need not be normalised)."""
    image_emb, text_emb = torch.as_tensor(image_emb).double(), torch.as_tensor(text_emb).double()
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"embedding shapes differ: {tuple(image_emb.shape)} vs {tuple(text_emb.shape)}")
    cosine = (F.normalize(image_emb, dim=-1) * F.normalize(text_emb, dim=-1)).sum(dim=-1)
    return (100 * cosine.clamp(min=0)).mean().item()


def clip_score(clip: TinyClip, images_uint8, prompts: Sequence[str], batch_size: int = 256) -> float:
    """CLIP score of uint8 images [N,H,W,3] against their prompts, pair i with prompt i."""
    if len(images_uint8) != len(prompts):
        raise ValueError(f"{len(images_uint8)} images but {len(prompts)} prompts")
    return clip_score_from_embeddings(clip.encode_images(images_uint8, batch_size),
                                      clip.encode_texts(list(prompts), batch_size))
