"""Diffusion over VAE latent patches (the image objective of the Transfusion setting).

The transformer sees an image as (h/p)*(w/p) patch tokens of C*p*p latent values, gets the
diffusion timestep as a sinusoidal embedding, and predicts per patch token either the noise
(epsilon) or the velocity (v). The forward process and the DDIM sampler are diffusers'
DDPMScheduler and DDIMScheduler built from one beta schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler

PREDICTIONS = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


# --- latents <-> patch tokens ---------------------------------------------------------------


def patchify(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """[N,C,h,w] -> [N, (h/p)*(w/p), C*p*p]: row-major patches, each flattened channel-first."""
    n, c, h, w = latents.shape
    if h % patch or w % patch:
        raise ValueError(f"latent grid {h}x{w} is not divisible by patch size {patch}")
    x = latents.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """[N, (h/p)*(w/p), C*p*p] -> [N,C,h,w]; the exact inverse of `patchify`."""
    n = patches.shape[0]
    x = patches.reshape(n, height // patch, width // patch, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(n, channels, height, width)


def tokens_per_image(latent_shape: tuple[int, int, int], patch: int) -> int:
    _, h, w = latent_shape
    return (h // patch) * (w // patch)


# --- timestep input --------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (integer or fractional) timesteps t [N] -> [N, dim], as in DDPM/DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


# --- forward process and loss ----------------------------------------------------------------


class DiffusionSchedule:
    """The noise schedule, the model's prediction type, and the training-time forward process."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                 prediction: str = "epsilon"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction = prediction
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                       prediction_type=prediction, clip_sample=False)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.clone()  # float32 [T], on the CPU

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t), shaped to broadcast against `like` [N, ...]."""
        alpha_bar = self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return alpha_bar.sqrt().view(shape), (1 - alpha_bar).sqrt().view(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, per sample t [N]."""
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model learns to output: the noise (epsilon) or the velocity (v)."""
        if self.prediction == "epsilon":
            return noise
        return self.scheduler.get_velocity(x0, noise, t)

    def predicted_x0(self, x_t: torch.Tensor, output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean sample implied by a model output at x_t (for monitoring and guidance tricks)."""
        signal, noise_level = self._coefficients(t, x_t)
        if self.prediction == "epsilon":
            return (x_t - noise_level * output) / signal
        return signal * x_t - noise_level * output

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        """n training timesteps, uniform over the schedule (drawn on the CPU, so one generator serves any device)."""
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator).to(device)

    def training_example(self, x0: torch.Tensor, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, target) for clean latents x0 [N, ...]: a fresh timestep and noise per image."""
        t = self.sample_timesteps(len(x0), generator, x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        return self.add_noise(x0, noise, t), t, self.target(x0, noise, t)

    @staticmethod
    def loss_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error per image [N], over latents [N,C,h,w] or patch tokens [N,L,D] alike."""
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)

    def __repr__(self) -> str:
        return (f"DiffusionSchedule(num_train_timesteps={self.num_train_timesteps}, "
                f"beta_schedule={self.beta_schedule!r}, prediction={self.prediction!r})")


def squared_error_per_token(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., D] predictions and targets -> [...] mean squared error of each patch token.

    Summing this over a batch's image tokens and dividing by their count gives the diffusion
    loss; per image, its mean over the image's tokens equals `loss_per_image`.
    """
    return (pred.float() - target.float()).pow(2).mean(-1)


def validation_grid(n_images: int, latent_shape: tuple[int, ...], n_timesteps: int = 8, seed: int = 0,
                    num_train_timesteps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed (timesteps [n_images], noise [n_images, *latent_shape]) for the validation diffusion loss.

    Timesteps are the midpoints of n_timesteps equal bins of the schedule, cycled over the images,
    so every evaluation (and every run) averages the same noise levels with the same noise.
    """
    grid = ((torch.arange(n_timesteps, dtype=torch.float64) + 0.5) * num_train_timesteps / n_timesteps).long()
    timesteps = grid[torch.arange(n_images) % n_timesteps]
    noise = torch.randn((n_images, *latent_shape), generator=torch.Generator().manual_seed(seed))
    return timesteps, noise


# --- sampling --------------------------------------------------------------------------------


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (scale 1 = conditional only)."""
    return uncond + scale * (cond - uncond)


def ddim_scheduler(schedule: DiffusionSchedule, steps: int, timestep_spacing: str | None = None) -> DDIMScheduler:
    """diffusers' DDIMScheduler over the same betas and prediction type, set to `steps` steps.

    Default spacing: "leading" (+1 offset, as Stable Diffusion) for epsilon, whose x0 estimate at
    the cosine schedule's last timestep (alpha_bar ~ 2e-9) would amplify any error ~1e4 times;
    "trailing" for v, which is well-conditioned there and so starts from pure noise.
    """
    spacing = timestep_spacing or ("leading" if schedule.prediction == "epsilon" else "trailing")
    scheduler = DDIMScheduler(
        num_train_timesteps=schedule.num_train_timesteps, beta_schedule=schedule.beta_schedule,
        prediction_type=schedule.prediction, clip_sample=False, set_alpha_to_one=True,
        timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0,
    )
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def ddim_sample(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    schedule: DiffusionSchedule,
    steps: int,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    timestep_spacing: str | None = None,
) -> torch.Tensor:
    """Sample x0 of `shape` from pure noise with DDIM (eta 0: deterministic given the generator).

    predict(x_t, t [N]) returns the model output in the schedule's prediction type; classifier-free
    guidance is the caller's: run both branches inside `predict` and return `cfg_combine(...)`.
    Noise is drawn on the CPU from `generator`, so a seed gives the same samples on any device.
    """
    scheduler = ddim_scheduler(schedule, steps, timestep_spacing)
    x = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    for t in scheduler.timesteps:
        output = predict(x, torch.full((shape[0],), int(t), dtype=torch.long, device=device))
        variance_noise = torch.randn(shape, generator=generator, dtype=dtype).to(device) if eta > 0 else None
        x = scheduler.step(output.to(dtype), int(t), x, eta=eta, variance_noise=variance_noise).prev_sample
    return x
