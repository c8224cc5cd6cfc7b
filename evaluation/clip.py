"""A tiny CLIP trained from scratch on the study's own image-caption pairs.

It is open_clip's `CLIP` class at a toy size (random init, nothing downloaded) with open_clip's BPE
tokenizer; images go through our own preprocessing (`images_to_tensor`) instead of open_clip's
PIL transforms. It is the feature network behind CLIP score, retrieval recall and the
"tiny_clip" FID extractor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.loss import ClipLoss
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from tqdm import tqdm

VOCAB_SIZE = 49408  # open_clip's BPE vocabulary, start/end-of-text included
_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)

LogFn = Callable[[dict, int], None]  # e.g. mlflow.log_metrics(metrics, step)


@dataclass
class TinyClipConfig:
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 32
    embed_dim: int = 64


def build_tiny_clip(cfg: TinyClipConfig) -> open_clip.CLIP:
    """Randomly initialised open_clip CLIP of the given size (no named config, no weights)."""
    if cfg.vision_width % cfg.vision_heads or cfg.image_size % cfg.patch_size:
        raise ValueError("vision_width must divide by vision_heads and image_size by patch_size")
    vision = CLIPVisionCfg(layers=cfg.vision_layers, width=cfg.vision_width,
                           head_width=cfg.vision_width // cfg.vision_heads,  # open_clip derives heads from this
                           patch_size=cfg.patch_size, image_size=cfg.image_size)
    text = CLIPTextCfg(context_length=cfg.context_length, vocab_size=VOCAB_SIZE, width=cfg.text_width,
                       heads=cfg.text_heads, layers=cfg.text_layers)
    return open_clip.CLIP(embed_dim=cfg.embed_dim, vision_cfg=vision, text_cfg=text)


def pixels_to_input(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """Float [N,3,H,W] in 0..255 -> CLIP input: bilinear resize to image_size if needed, mean/std normalised."""
    x = pixels.float() / 255.0
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - _MEAN) / _STD


def images_to_tensor(images_uint8, image_size: int = 32) -> torch.Tensor:
    """uint8 [N,H,W,3] (numpy or torch) -> normalised float [N,3,image_size,image_size]."""
    pixels = torch.from_numpy(np.array(images_uint8, dtype=np.uint8))  # a copy: inputs may be read-only
    return pixels_to_input(pixels.permute(0, 3, 1, 2), image_size)


def encode_text(model: open_clip.CLIP, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's `CLIP.encode_text` (unnormalised), run only up to the batch's last end-of-text token.

    Same result as the full context: the mask is causal and pooling reads the end-of-text token, so
    the padding after it never matters; cutting it saves time on batches of short captions.
    """
    eot = ids.argmax(dim=-1)  # end-of-text has the largest id, as in open_clip's 'argmax' pooling
    length = int(eot.max()) + 1
    x = model.token_embedding(ids[:, :length]) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)[torch.arange(len(ids)), eot]
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


class TinyClip:
    """A tiny CLIP with its config and tokenizer; encoders return L2-normalised embeddings."""

    def __init__(self, model: open_clip.CLIP, cfg: TinyClipConfig):
        self.model = model.eval()
        self.cfg = cfg
        self.tokenizer = SimpleTokenizer(context_length=cfg.context_length)
        self._token_cache: dict[str, torch.Tensor] = {}  # each distinct caption is tokenised once, not every step

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, context_length] (too-long texts are truncated, keeping end-of-text)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._token_cache))
        if missing:
            self._token_cache.update(zip(missing, self.tokenizer(missing)))
        return torch.stack([self._token_cache[t] for t in texts])

    @torch.no_grad()
    def encode_images(self, images_uint8, batch_size: int = 256) -> torch.Tensor:
        self.model.eval()
        chunks = [self.model.encode_image(images_to_tensor(images_uint8[i:i + batch_size], self.cfg.image_size))
                  for i in range(0, len(images_uint8), batch_size)]
        return F.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        self.model.eval()
        chunks = [encode_text(self.model, self.tokenize(texts[i:i + batch_size]))
                  for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(chunks), dim=-1)

    def save(self, path: str | Path) -> None:
        torch.save({"config": asdict(self.cfg), "state_dict": self.model.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> TinyClip:
        state = torch.load(path, map_location=map_location, weights_only=True)
        cfg = TinyClipConfig(**state["config"])
        model = build_tiny_clip(cfg)
        model.load_state_dict(state["state_dict"])
        return cls(model, cfg)


def train_tiny_clip(images: np.ndarray, captions: list[list[str]], cfg: TinyClipConfig, steps: int,
                    batch_size: int, lr: float, seed: int, log_fn: LogFn | None = None,
                    log_every: int = 50, weight_decay: float = 0.1, warmup_fraction: float = 0.05) -> TinyClip:
    """Contrastive (InfoNCE) training on uint8 images [N,H,W,3], one random caption per image per step.

    AdamW with linear warmup then cosine decay; deterministic given `seed` (and the thread count).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} caption lists")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clip = TinyClip(build_tiny_clip(cfg), cfg)
    model = clip.model.train()
    # fused AdamW: a tenth of the step time on CPU, most of it the 49408-row token embedding
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps, warmup_fraction))
    loss_fn = ClipLoss()
    batches = _batch_indices(len(images), min(batch_size, len(images)), rng)
    for step in tqdm(range(1, steps + 1), desc="tiny CLIP", unit="step"):
        index = next(batches)
        texts = [caps[rng.integers(len(caps))] for caps in (captions[i] for i in index)]
        image_emb = model.encode_image(images_to_tensor(images[index], cfg.image_size), normalize=True)
        text_emb = F.normalize(encode_text(model, clip.tokenize(texts)), dim=-1)
        loss = loss_fn(image_emb, text_emb, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # open_clip's training cap on the temperature
        if log_fn is not None and (step % log_every == 0 or step == steps):
            log_fn({"clip/loss": loss.item(), "clip/lr": schedule.get_last_lr()[0],
                    "clip/logit_scale": model.logit_scale.exp().item()}, step)
    model.eval()
    return clip


def retrieval_recall_at_1(clip: TinyClip, images, captions: Sequence[str] | Sequence[Sequence[str]]) -> dict:
    """Recall@1 both ways on N paired items (the first caption of each image if given lists).

    Identical captions on different items tie, and a tie counts as a hit for one item only.
    """
    texts = [c if isinstance(c, str) else c[0] for c in captions]
    if len(texts) != len(images):
        raise ValueError(f"{len(images)} images but {len(texts)} captions")
    similarity = clip.encode_images(images) @ clip.encode_texts(texts).T
    truth = torch.arange(len(texts))
    return {"image_to_text_r1": (similarity.argmax(dim=1) == truth).float().mean().item(),
            "text_to_image_r1": (similarity.argmax(dim=0) == truth).float().mean().item(),
            "chance": 1.0 / len(texts)}


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no weight decay on gains, biases and the logit scale."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _warmup_cosine(steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, round(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    return factor


def _batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless epochs of shuffled, full batches."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]
