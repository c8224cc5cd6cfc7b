"""A small VQ-VAE that turns 32x32 RGB images into a grid of discrete codes.

Encoder: stride-2 convs + a residual block -> (H/ds)x(W/ds) grid of `code_dim` vectors.
Quantiser: nearest codebook vector, EMA codebook updates (no codebook gradient),
straight-through gradient to the encoder, commitment loss, dead-code restart.
Decoder: mirror of the encoder with transposed convs, tanh output in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

FINAL_METRIC_MAX_IMAGES = 1024
ENCODE_CHUNK = 512  # images per forward pass in encode/decode, bounds memory


@dataclass
class VQConfig:
    codebook_size: int = 64
    code_dim: int = 32
    hidden: int = 64
    downsample: int = 4  # power of 2: the encoder has log2(downsample) stride-2 convs
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_code_steps: int = 20  # training steps without use before a code is re-initialised

    def __post_init__(self) -> None:
        if self.downsample < 2 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of 2 >= 2, got {self.downsample}")


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Perplexity (exp of code-usage entropy) and fraction of codes used at least once."""
    counts = torch.bincount(codes.flatten().long(), minlength=codebook_size).double()
    probs = counts[counts > 0] / counts.sum()
    entropy = -(probs * probs.log()).sum()
    return {
        "perplexity": float(entropy.exp()),
        "codebook_usage": float((counts > 0).double().mean()),
    }


def images_to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float32 [N,3,H,W] in [-1, 1]."""
    pixels = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N,H,W,3], got {pixels.dtype} {tuple(pixels.shape)}")
    return pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def float_to_images(x: torch.Tensor) -> torch.Tensor:
    """float [N,3,H,W] in [-1, 1] -> uint8 [N,H,W,3]."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class ResBlock(nn.Module):
    """Pre-activation residual block with a 3x3 bottleneck conv (cheap on CPU)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage_widths(cfg: VQConfig) -> list[int]:
    """Channel width after each stride-2 conv: half width early (large maps), full width last."""
    n_down = int(math.log2(cfg.downsample))
    return [cfg.hidden // 2] * (n_down - 1) + [cfg.hidden]


def build_encoder(cfg: VQConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for width in _stage_widths(cfg):
        layers += [nn.Conv2d(in_ch, width, 4, stride=2, padding=1), nn.ReLU()]
        in_ch = width
    layers += [ResBlock(cfg.hidden), nn.ReLU(), nn.Conv2d(cfg.hidden, cfg.code_dim, 1)]
    return nn.Sequential(*layers)


def build_decoder(cfg: VQConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.hidden, 3, padding=1), ResBlock(cfg.hidden)]
    widths = _stage_widths(cfg)[::-1] + [3]
    for in_ch, out_ch in zip(widths[:-1], widths[1:]):
        layers += [nn.ReLU(), nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]
    layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def kmeans_plus_plus(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """Pick k rows of `vectors`, each new one with probability proportional to squared distance."""
    centers = [vectors[torch.randint(len(vectors), (1,))]]
    dist2 = (vectors - centers[0]).pow(2).sum(1)
    for _ in range(k - 1):
        if dist2.sum() > 0:
            pick = torch.multinomial(dist2, 1)
        else:  # every vector already coincides with a center
            pick = torch.randint(len(vectors), (1,))
        centers.append(vectors[pick])
        dist2 = torch.minimum(dist2, (vectors - centers[-1]).pow(2).sum(1))
    return torch.cat(centers)


class EMAQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser whose codebook follows an EMA of its assigned vectors."""

    def __init__(self, codebook_size: int, code_dim: int, decay: float, commitment: float, dead_code_steps: int):
        super().__init__()
        self.decay = decay
        self.commitment = commitment
        self.dead_code_steps = dead_code_steps
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim))
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def nearest_codes(self, flat: torch.Tensor) -> torch.Tensor:
        # |z|^2 is the same for every code, so argmin of -2 z.e + |e|^2 is the nearest code.
        scores = self.codebook.pow(2).sum(1) - 2 * flat @ self.codebook.t()
        return scores.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [N,D,h,w] -> (quantised z with straight-through grad, commitment loss, codes [N,h,w])."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_codebook(flat.detach())
        codes = self.nearest_codes(flat.detach())
        quantized = self.codebook[codes]
        if self.training:
            self._ema_update(flat.detach(), codes)
        commit_loss = self.commitment * F.mse_loss(flat, quantized.detach())
        quantized = flat + (quantized - flat).detach()  # straight-through: decoder grad flows to encoder
        quantized = quantized.view(n, h, w, d).permute(0, 3, 1, 2)
        return quantized, commit_loss, codes.view(n, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [N,h,w] -> code vectors [N,D,h,w]."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        self.codebook.copy_(kmeans_plus_plus(flat, self.codebook_size))
        self.embed_sum.copy_(self.codebook)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
        self.cluster_size.lerp_(counts, 1 - self.decay)
        self.embed_sum.lerp_(sums, 1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + self.codebook_size * 1e-5) * total
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))
        self._restart_dead_codes(flat, counts)

    def _restart_dead_codes(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.steps_unused >= self.dead_code_steps).nonzero().squeeze(1)
        if len(dead) == 0:
            return
        replacements = flat[torch.randint(len(flat), (len(dead),))]
        self.codebook[dead] = replacements
        self.embed_sum[dead] = replacements
        self.cluster_size[dead] = 1.0
        self.steps_unused[dead] = 0


class VQVAE(nn.Module):
    def __init__(self, cfg: VQConfig | None = None):
        super().__init__()
        self.cfg = cfg or VQConfig()
        self.encoder = build_encoder(self.cfg)
        self.quantizer = EMAQuantizer(
            self.cfg.codebook_size, self.cfg.code_dim, self.cfg.ema_decay, self.cfg.commitment, self.cfg.dead_code_steps
        )
        self.decoder = build_decoder(self.cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x float [N,3,H,W] in [-1,1] -> (recon in [-1,1], vq loss, codes [N, (H/ds)*(W/ds)])."""
        quantized, vq_loss, codes = self.quantizer(self.encoder(x))
        return self.decoder(quantized), vq_loss, codes.flatten(1)

    def tokens_per_image(self, image_size: int) -> int:
        if image_size % self.cfg.downsample:
            raise ValueError(f"image_size {image_size} is not divisible by downsample {self.cfg.downsample}")
        return (image_size // self.cfg.downsample) ** 2

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images [N,H,W,3] -> codes [N, (H/ds)*(W/ds)] in row-major raster order."""
        x = images_to_float(images)
        with _eval_mode(self):
            chunks = [self.quantizer(self.encoder(chunk))[2].flatten(1) for chunk in x.split(ENCODE_CHUNK)]
        return torch.cat(chunks)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [N, L] (L a square) -> uint8 images [N,H,W,3]."""
        side = math.isqrt(codes.shape[1])
        if side * side != codes.shape[1]:
            raise ValueError(f"code length {codes.shape[1]} is not a square grid")
        with _eval_mode(self):
            chunks = [
                float_to_images(self.decoder(self.quantizer.lookup(chunk.long().view(-1, side, side))))
                for chunk in codes.split(ENCODE_CHUNK)
            ]
        return torch.cat(chunks)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(self.cfg), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> VQVAE:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(VQConfig(**checkpoint["config"]))
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()


class _eval_mode:
    """Context manager: eval mode inside, previous train/eval mode restored after."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc) -> None:
        self.module.train(self.was_training)


def _batch_metrics(model: VQVAE, recon: torch.Tensor, x: torch.Tensor, codes: torch.Tensor) -> dict[str, float]:
    # x and recon live in [-1, 1]; dividing by 4 reports MSE on the [0, 1] pixel scale.
    stats = codebook_stats(codes, model.cfg.codebook_size)
    return {"recon_mse": float(F.mse_loss(recon, x)) / 4, **stats}


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, images: np.ndarray | torch.Tensor) -> dict[str, float]:
    """recon_mse ([0,1] scale), perplexity and codebook_usage over `images` (uint8 [N,H,W,3])."""
    x = images_to_float(images)
    with _eval_mode(model):
        outputs = [model(chunk) for chunk in x.split(ENCODE_CHUNK)]
    recon = torch.cat([out[0] for out in outputs])
    codes = torch.cat([out[2] for out in outputs])
    return _batch_metrics(model, recon, x, codes)


def train_vqvae(
    images: np.ndarray,
    cfg: VQConfig,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log_fn: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 50,
) -> tuple[VQVAE, dict[str, float]]:
    """Train a VQ-VAE on uint8 images [N,H,W,3]; returns the model (eval mode) and final metrics."""
    torch.manual_seed(seed)  # model init, codebook init and dead-code restarts
    batch_generator = torch.Generator().manual_seed(seed)
    data = images_to_float(images)
    model = VQVAE(cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in tqdm(range(1, steps + 1), desc="vqvae", mininterval=2.0):
        x = data[torch.randint(len(data), (batch_size,), generator=batch_generator)]
        recon, vq_loss, codes = model(x)
        loss = F.mse_loss(recon, x) + vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log_fn is not None and step % log_every == 0:
            metrics = _batch_metrics(model, recon.detach(), x, codes)
            log_fn({f"vq/{name}": value for name, value in metrics.items()}, step)
    model.eval()
    return model, evaluate_vqvae(model, images[:FINAL_METRIC_MAX_IMAGES])
