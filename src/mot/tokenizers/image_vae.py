"""A continuous KL-regularised image autoencoder for the Transfusion setting.

diffusers' `AutoencoderKL` with a small config: 32x32 RGB images -> 8x8x4 latents by default
(one stride-2 downsample per block after the first). Trained here with reconstruction MSE +
kl_weight * KL; the latents handed to diffusion are the posterior means, shifted and scaled
to zero mean and unit std over the training set, as Stable Diffusion (scale) and SD3 (shift) do.
A pretrained diffusers AutoencoderKL directory is accepted as well (local files only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn
from tqdm import tqdm

from mot.tokenizers.image_vq import _eval_mode, float_to_images, images_to_float

FINAL_METRIC_MAX_IMAGES = 1024
SCALE_FIT_MAX_IMAGES = 2048  # training images whose latents set the shift and scale
ENCODE_CHUNK = 256  # images per forward pass in encode/decode, bounds memory
VAE_JSON = "image_vae.json"  # our side file beside diffusers' config.json and weights


@dataclass
class VAEConfig:
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (8, 16, 32)  # one block per resolution: 3 blocks = /4
    layers_per_block: int = 1
    norm_num_groups: int = 8  # must divide every block width
    mid_attention: bool = False  # diffusers' mid-block self-attention (on in SD's VAE); off keeps it small
    kl_weight: float = 1e-3  # on the KL per latent element, against the per-pixel MSE in [-1, 1]
    # many small steps beat few large ones at equal images seen: 1200 x 16 reconstructs far
    # better than 300 x 64 (MSE 0.0025 vs 0.0067 on the synthetic scenes) for ~50 s vs ~35 s on 1 thread
    steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if not self.block_out_channels:
            raise ValueError("block_out_channels must name at least one block width")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every block width, not {bad}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def build_autoencoder(cfg: VAEConfig) -> AutoencoderKL:
    blocks = len(cfg.block_out_channels)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        mid_block_add_attention=cfg.mid_attention,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def kl_per_element(posterior) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) averaged over the batch and the latent elements (nats per latent element)."""
    return posterior.kl().mean() / posterior.mean[0].numel()


class ImageVAE(nn.Module):
    """uint8 images <-> diffusion-ready latents (posterior mean, shifted and scaled)."""

    def __init__(self, autoencoder: AutoencoderKL, cfg: VAEConfig | None = None):
        super().__init__()
        self.autoencoder = autoencoder
        self.cfg = cfg  # None for a pretrained autoencoder we did not train

    @property
    def scaling_factor(self) -> float:
        return float(self.autoencoder.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(self.autoencoder.config.shift_factor or 0.0)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        weight = next(self.autoencoder.parameters())  # a pretrained VAE may run in half precision on a GPU
        return x.to(weight.device, weight.dtype)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents of a square image_size x image_size image."""
        if image_size % self.downsample:
            raise ValueError(f"image_size {image_size} is not divisible by the VAE's downsample {self.downsample}")
        side = image_size // self.downsample
        return (self.latent_channels, side, side)

    def set_latent_stats(self, shift: float, scale: float) -> None:
        # kept in diffusers' own config, so the saved directory also works in a diffusers pipeline
        self.autoencoder.register_to_config(shift_factor=float(shift), scaling_factor=float(scale))

    def posterior(self, x: torch.Tensor):
        """x float [N,3,H,W] in [-1, 1] -> diffusers' DiagonalGaussianDistribution over raw latents."""
        return self.autoencoder.encode(x).latent_dist

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """raw (unscaled) latents -> float images [N,3,H,W], roughly in [-1, 1]."""
        return self.autoencoder.decode(z).sample

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images [N,H,W,3] -> float32 latents [N,C,h,w] = (posterior mean - shift) * scale."""
        x = images_to_float(images)
        with _eval_mode(self):
            chunks = [self.posterior(self._to_model(chunk)).mean.float().cpu() for chunk in x.split(ENCODE_CHUNK)]
        return (torch.cat(chunks) - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [N,C,h,w] as `encode` returns them -> uint8 images [N,H,W,3]."""
        raw = latents.float() / self.scaling_factor + self.shift_factor
        with _eval_mode(self):
            chunks = [float_to_images(self.decode_raw(self._to_model(chunk)).float().cpu())
                      for chunk in raw.split(ENCODE_CHUNK)]
        return torch.cat(chunks)

    def save(self, directory: str | Path) -> None:
        """diffusers' save_pretrained (config.json + safetensors) and our json beside it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.autoencoder.save_pretrained(directory)
        side = {"config": asdict(self.cfg) if self.cfg else None,
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}
        (directory / VAE_JSON).write_text(json.dumps(side, indent=2))

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> ImageVAE:
        """Our saved VAE, or any local diffusers AutoencoderKL directory (or a pipeline with a vae/ folder)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file() and (directory / "vae" / "config.json").is_file():
            directory = directory / "vae"
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: no diffusers AutoencoderKL (config.json) here")
        autoencoder = AutoencoderKL.from_pretrained(directory, local_files_only=True).to(map_location)
        side_file = directory / VAE_JSON
        cfg = None
        if side_file.is_file():
            side = json.loads(side_file.read_text())
            saved = side.get("config") or {}
            if saved:
                cfg = VAEConfig(**{f.name: saved[f.name] for f in fields(VAEConfig) if f.name in saved})
            # our json is the record of the fitted latent stats; it wins over a hand-edited config.json
            autoencoder.register_to_config(scaling_factor=side["scaling_factor"], shift_factor=side["shift_factor"])
        return cls(autoencoder, cfg).eval()


@torch.no_grad()
def fit_latent_stats(vae: ImageVAE, images: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Set shift = mean and scale = 1/std of the posterior-mean latents of `images` (one scalar each)."""
    vae.set_latent_stats(0.0, 1.0)
    latents = vae.encode(images[:SCALE_FIT_MAX_IMAGES]).double()
    shift, std = float(latents.mean()), float(latents.std())
    vae.set_latent_stats(shift, 1.0 / std)
    return {"latent_shift": shift, "latent_std": std, "scaling_factor": 1.0 / std}


@torch.no_grad()
def evaluate_vae(vae: ImageVAE, images: np.ndarray | torch.Tensor) -> dict[str, float]:
    """recon_mse ([0,1] pixel scale) of decode(posterior mean) and KL per latent element over `images`."""
    x = images_to_float(images)
    squared_error, kl, n = 0.0, 0.0, 0
    with _eval_mode(vae):
        for chunk in x.split(ENCODE_CHUNK):
            chunk = chunk.to(vae.device)
            posterior = vae.posterior(vae._to_model(chunk))
            recon = vae.decode_raw(posterior.mean).float().clamp(-1, 1)
            squared_error += float(F.mse_loss(recon, chunk, reduction="sum"))
            kl += float(kl_per_element(posterior)) * len(chunk)
            n += len(chunk)
    # x lives in [-1, 1]; dividing by 4 reports MSE on the [0, 1] pixel scale
    return {"recon_mse": squared_error / x.numel() / 4, "kl": kl / n}


def train_vae(
    images: np.ndarray,
    cfg: VAEConfig,
    log_fn: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 50,
) -> tuple[ImageVAE, dict[str, float]]:
    """Train the VAE on uint8 images [N,H,W,3]; fit the latent shift/scale; return (model in eval mode, metrics)."""
    torch.manual_seed(cfg.seed)  # model init
    batch_generator = torch.Generator().manual_seed(cfg.seed)
    posterior_generator = torch.Generator().manual_seed(cfg.seed + 1)
    data = images_to_float(images)
    vae = ImageVAE(build_autoencoder(cfg), cfg).train()
    optimizer = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    for step in tqdm(range(1, cfg.steps + 1), desc="vae", mininterval=2.0):
        x = data[torch.randint(len(data), (cfg.batch_size,), generator=batch_generator)]
        posterior = vae.posterior(x)
        recon = vae.decode_raw(posterior.sample(generator=posterior_generator))
        recon_loss, kl = F.mse_loss(recon, x), kl_per_element(posterior)
        loss = recon_loss + cfg.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log_fn is not None and step % log_every == 0:
            log_fn({"vae/recon_mse": recon_loss.item() / 4, "vae/kl": kl.item()}, step)
    vae.eval()
    stats = fit_latent_stats(vae, images)
    return vae, {**evaluate_vae(vae, images[:FINAL_METRIC_MAX_IMAGES]), **stats}
