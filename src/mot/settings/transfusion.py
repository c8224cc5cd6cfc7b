"""Transfusion: text by next-token prediction, images by diffusion over VAE latent patches, in one
transformer and one sequence (loss = LM loss + λ · diffusion loss).

Sequences: generation `<bos> caption <boi> noisy patches <eoi> <eos>` and captioning
`<bos> <boi> clean patches <eoi> caption <eos>`, mixed by `sequences.captioning_fraction`;
generation drops its caption with `sequences.caption_dropout` (classifier-free guidance).
Attention is causal over the sequence and bidirectional among the patches of one image (an
explicit boolean mask built once per batch on the host). A patch enters through the image
adapters (linear projection + timestep embedding) and is predicted (noise or velocity, per
`diffusion.prediction`) at its own position; the text head predicts the next text token.
Images are sampled by DDIM with classifier-free guidance and decoded by the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from mot.data.sequences import IGNORE, Batch, ImagePatches, TokenizedSplit, target_counts
from mot.grouping import group_tokens
from mot.models.attention import block_mask_from_dense
from mot.models.diffusion import (DiffusionSchedule, cfg_combine, ddim_sample, patchify, squared_error_per_token,
                                  unpatchify, validation_grid)
from mot.settings.base import Objective
from mot.settings.chameleon import next_token_loss_sums
from mot.settings.decoding import TokenStream, batches_by_length, greedy_text, groups_for
from mot.tokenizers.stage import latent_shape_from
from mot.vocabulary import IMAGE, TEXT, Vocabulary, load_vocabulary

IMAGE_SLOT = -1  # marks a patch position while a sequence is laid out


def image_block_mask(image_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] image id per position (-1 = not an image patch) -> [B, 1, T, T] bool attention mask:
    causal, except that the patches of one image see each other (bidirectional inside an image)."""
    seq = image_ids.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    same_image = (image_ids[:, :, None] == image_ids[:, None, :]) & (image_ids[:, :, None] >= 0)
    return (causal[None] | same_image)[:, None]


@dataclass
class SequenceLayout:
    """One sequence as token ids with IMAGE_SLOT where the patches of its image go."""

    items: np.ndarray     # int64, IMAGE_SLOT at patch positions
    noised: bool          # the image is generated (noised, carries the loss) rather than a clean condition


class TransfusionSequences:
    """Batches of Transfusion sequences from captions (TokenizedSplit) and VAE latents [N, C, h, w]."""

    def __init__(self, split: TokenizedSplit, latents: np.ndarray, vocab: Vocabulary, seq_len: int,
                 captioning_fraction: float, group_of_modality: Sequence[int], n_groups: int, patch_size: int,
                 schedule: DiffusionSchedule, caption_dropout: float = 0.0, val_timesteps: int = 8):
        self.split, self.vocab, self.seq_len = split, vocab, seq_len
        self.patches = patchify(torch.as_tensor(latents, dtype=torch.float32), patch_size)  # [N, P, patch_dim]
        self.captioning_fraction, self.caption_dropout = captioning_fraction, caption_dropout
        self.group_of_modality, self.n_groups = tuple(group_of_modality), n_groups
        self.schedule, self.val_timesteps = schedule, val_timesteps
        self._val_grid = None

    @property
    def patches_per_image(self) -> int:
        return self.patches.shape[1]

    def layout(self, index: int, slot: int, captioning: bool, drop_caption: bool = False) -> SequenceLayout:
        v, image = self.vocab, [IMAGE_SLOT] * self.patches_per_image
        caption = self.split.caption(index, slot).astype(np.int64)[: 0 if drop_caption else None]
        if captioning:
            parts = ([v.bos, v.boi], image, [v.eoi], caption, [v.eos])
        else:
            parts = ([v.bos], caption, [v.boi], image, [v.eoi, v.eos])
        return SequenceLayout(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]), noised=not captioning)

    def collate(self, rows: list[tuple[int, SequenceLayout]], timesteps: torch.Tensor, noise: torch.Tensor) -> Batch:
        """rows = (sample index, layout); timesteps [B] and noise [B, P, patch_dim] for each row's image."""
        batch, seq = len(rows), self.seq_len
        tokens = torch.full((batch, seq), self.vocab.pad, dtype=torch.long)
        targets = torch.full((batch, seq), IGNORE, dtype=torch.long)
        image_ids = torch.full((batch, seq), -1, dtype=torch.long)
        index, clean, row_noise, row_t, noised = [], [], [], [], []
        for b, (sample, laid) in enumerate(rows):
            items = torch.as_tensor(laid.items[: seq + 1])
            is_patch = items == IMAGE_SLOT
            n_in = min(seq, len(items))
            tokens[b, :n_in] = torch.where(is_patch[:n_in], self.vocab.pad, items[:n_in])
            # a text target is the next item when it is text and the current one is not a patch
            nxt = items[1:n_in + 1]
            text_target = ~is_patch[1:n_in + 1] & ~is_patch[:len(nxt)]
            targets[b, :len(nxt)] = torch.where(text_target, nxt, torch.full_like(nxt, IGNORE))
            positions = torch.nonzero(is_patch[:n_in]).squeeze(1)
            image_ids[b, positions] = b
            index.append(b * seq + positions)
            patches = self.patches[sample, : len(positions)]
            clean.append(patches)
            row_noise.append(noise[b, : len(positions)])
            row_t.append(timesteps[b].expand(len(positions)) if laid.noised else torch.zeros(len(positions), dtype=torch.long))
            noised.append(torch.full((len(positions),), laid.noised))
        input_modality = torch.where(image_ids >= 0, IMAGE, TEXT)
        target_modality = torch.full_like(targets, TEXT)
        noised_t = torch.cat(noised)
        image = ImagePatches(torch.cat(index), torch.cat(clean), torch.cat(row_noise), torch.cat(row_t).long(),
                             noised_t, int(noised_t.sum()))
        groups = group_tokens(input_modality, self.group_of_modality, self.n_groups)
        return Batch(tokens, targets, input_modality, target_modality, groups,
                     target_counts(targets, target_modality, image), image,
                     image_block_mask(image_ids))

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """A pure function of (seed, step): samples, directions, timesteps and noise (a resumed run sees the same)."""
        rng = np.random.default_rng([seed, step])
        rows = []
        for _ in range(batch_size):
            index = int(rng.integers(0, len(self.split)))
            slot = int(rng.integers(0, self.split.n_captions(index)))
            captioning = bool(rng.random() < self.captioning_fraction)
            drop = not captioning and bool(rng.random() < self.caption_dropout)
            rows.append((index, self.layout(index, slot, captioning, drop)))
        timesteps = torch.as_tensor(rng.integers(0, self.schedule.num_train_timesteps, size=batch_size))
        noise = torch.as_tensor(rng.standard_normal((batch_size, *self.patches.shape[1:])), dtype=torch.float32)
        return self.collate(rows, timesteps, noise)

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """Fixed order, directions alternating (as Chameleon), and a fixed grid of timesteps with fixed noise:
        the validation diffusion loss is comparable across steps and runs."""
        n = len(self.split) if limit is None else min(limit, len(self.split))
        if self._val_grid is None or len(self._val_grid[0]) < n:
            self._val_grid = validation_grid(len(self.split), tuple(self.patches.shape[1:]), self.val_timesteps, seed=0,
                                             num_train_timesteps=self.schedule.num_train_timesteps)
        grid_t, grid_noise = self._val_grid
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            rows = [(i, self.layout(i, i % self.split.n_captions(i), captioning=bool(i % 2))) for i in idx]
            yield self.collate(rows, grid_t[idx].long(), grid_noise[idx].float())


def predict_patches(model, batch: Batch, schedule: DiffusionSchedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text logits [B, T, V], patch predictions [N, patch_dim], the diffusion targets [N, patch_dim])."""
    image = batch.image
    t = image.timesteps
    noisy = schedule.add_noise(image.clean, image.noise, t)
    inputs = torch.where(image.noised[:, None], noisy, image.clean)
    embeds = model.image.embed(inputs, t)
    # on a GPU the image-block mask runs as a flex-attention block mask (a dense mask loses the fused kernels)
    mask = block_mask_from_dense(batch.attn_mask) if batch.attn_mask.is_cuda else batch.attn_mask
    hidden = model.hidden(batch.tokens, batch.groups, attn_mask=mask, image_embeds=(image.index, embeds))
    logits = model.head(hidden).view(*batch.tokens.shape, -1)
    return logits, model.image.patch_out(hidden[image.index]), schedule.target(image.clean, image.noise, t)


def transfusion_loss(model, batch: Batch, schedule: DiffusionSchedule, loss_weight: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """LM loss over text targets + loss_weight · diffusion loss over noised patches; per-modality sums
    (text: cross-entropy, image: squared error per patch) for logging, without a host sync."""
    logits, prediction, target = predict_patches(model, batch, schedule)
    _, sums = next_token_loss_sums(logits, batch)
    per_patch = squared_error_per_token(prediction, target) * batch.image.noised.float()
    sums = sums.index_add(0, torch.tensor([IMAGE], device=sums.device), per_patch.sum()[None])
    counts = batch.target_counts
    return sums[TEXT] / max(1, counts[TEXT]) + loss_weight * sums[IMAGE] / max(1, counts[IMAGE]), sums


class TransfusionObjective(Objective):
    name = "transfusion"
    modalities = ("text", "image")
    tokenizers = ("text", "image_vq", "image_vae")  # the captions' BPE is fitted beside the VQ-VAE
    token_files = ("tokens_stats", "latents_stats")
    config_sections = ("diffusion",)
    paper = {"image": {"steps_frac": 1 / 3, "flops_frac": 1 / 3}}  # 7B: dense image quality at 1/3

    # the image loss is the squared error of the prediction target on a fixed grid of timesteps and patches
    IMAGE_LOSS_KEYS = ("prediction", "schedule", "timesteps", "val_timesteps", "patch_size")

    @classmethod
    def loss_definition(cls, config: dict, loss: str) -> tuple:
        return tuple(config["diffusion"][key] for key in cls.IMAGE_LOSS_KEYS) if loss == "image" else ()

    @classmethod
    def external_paths(cls, config: dict):
        if config["tokenizers"]["image_vae"]["pretrained"]:
            yield ["tokenizers", "image_vae", "pretrained"], config["tokenizers"]["image_vae"]["pretrained"]

    def __init__(self, config: dict, setting: str):
        super().__init__(config, setting)
        self.dcfg = config["diffusion"]
        self.schedule = DiffusionSchedule(self.dcfg["timesteps"], self.dcfg["schedule"], self.dcfg["prediction"])
        self._latents: dict[str, np.ndarray] = {}
        self._vae = None

    # --- the model ---------------------------------------------------------------------------

    def load_vocabulary(self) -> Vocabulary:
        return load_vocabulary(self.paths.vocab).with_parts(image_codes=0)  # images are continuous

    def expected_vocab_size(self) -> int:
        return self.config["tokenizers"]["text"]["vocab_size"]

    def latent_shape(self) -> tuple[int, int, int]:
        return latent_shape_from(self.config, self.image_size())

    def image_size(self) -> int:
        data = self.config["data"]
        return data["coco"]["image_size"] if data["source"] == "coco" else data["synthetic"]["image_size"]

    def image_patch_dim(self) -> int:
        channels, _, _ = self.latent_shape()
        return channels * self.dcfg["patch_size"] ** 2

    # --- data and loss -------------------------------------------------------------------------

    def latents(self, name: str) -> np.ndarray:
        if name not in self._latents:
            self._latents[name] = np.load(self.paths.split_latents(name))
        return self._latents[name]

    def sequences(self, split: str, model) -> TransfusionSequences:
        seq, plan = self.sequences_cfg, model.cfg.plan
        return TransfusionSequences(self.split(split), self.latents(split), self.vocab, self.seq_len,
                                    seq["captioning_fraction"], plan.group_of_modality, plan.n_groups,
                                    self.dcfg["patch_size"], self.schedule,
                                    seq["caption_dropout"] if split == "train" else 0.0, self.dcfg["val_timesteps"])

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return transfusion_loss(model, batch, self.schedule, self.dcfg["loss_weight"])

    # --- samplers ------------------------------------------------------------------------------

    @property
    def vae(self):
        if self._vae is None:
            from mot.tokenizers.image_vae import ImageVAE  # diffusers: seconds to import, only when sampling
            self._vae = ImageVAE.load(self.paths.image_vae)
        return self._vae

    @torch.no_grad()
    def captions(self, model, split: str, n: int, max_tokens: int, batch_size: int, device) -> list[list[int]]:
        """Greedy captions after `<bos> <boi> clean patches <eoi>` (prefilled with the image mask, then a KV cache)."""
        model.eval()
        patches = patchify(torch.as_tensor(self.latents(split)[:n], dtype=torch.float32), self.dcfg["patch_size"])
        v, n_patches = self.vocab, patches.shape[1]
        captions: list[list[int]] = []
        for start in range(0, n, batch_size):
            chunk = patches[start:start + batch_size].to(device)
            rows = chunk.shape[0]
            prefix = torch.tensor([v.bos, v.boi] + [v.pad] * n_patches + [v.eoi]).expand(rows, -1)
            stream = ImagePrefixStream(model, v, prefix, max_tokens, device, chunk, first_patch=2)
            captions += greedy_text(stream, v, max_tokens)
        return captions

    @torch.no_grad()
    def images(self, model, prompts: list[list[int]], batch_size: int, device) -> np.ndarray:
        """DDIM from `<bos> caption <boi>` with classifier-free guidance against `<bos> <boi>`; VAE decode."""
        model.eval()
        channels, height, width = self.latent_shape()
        patch, steps, scale = self.dcfg["patch_size"], self.dcfg["ddim_steps"], self.dcfg["cfg_scale"]
        generator = torch.Generator().manual_seed(self.config["eval"]["images"]["seed"])
        latents = torch.zeros(len(prompts), channels, height, width)
        v = self.vocab
        for chunk in batches_by_length(prompts, batch_size):
            prefixes = [torch.tensor([[v.bos, *prompts[i], v.boi] for i in chunk])]
            if scale != 1.0:
                prefixes.append(torch.tensor([[v.bos, v.boi]]).expand(len(chunk), 2))
            denoisers = [PatchDenoiser(model, v, prefix, patch, (channels, height, width), device) for prefix in prefixes]

            def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                outputs = [d(x_t, t) for d in denoisers]
                return outputs[0] if len(outputs) == 1 else cfg_combine(outputs[0], outputs[1], scale)

            shape = (len(chunk), channels, height, width)
            latents[chunk] = ddim_sample(predict, shape, self.schedule, steps, generator).cpu().float()
        return self.vae.decode(latents).numpy()

    def random_images(self, n: int, seed: int) -> np.ndarray:
        """Images decoded from standard-normal latents (the scaled latent space's prior)."""
        generator = torch.Generator().manual_seed(seed)
        return self.vae.decode(torch.randn(n, *self.latent_shape(), generator=generator)).numpy()


class ImagePrefixStream(TokenStream):
    """A token stream whose prefix holds one clean image's patches (from `first_patch` on): the first call
    runs the prefix with the patch embeddings and the bidirectional image mask, then the KV cache decodes."""

    def __init__(self, model, vocab, prefix: torch.Tensor, max_new: int, device, patches: torch.Tensor, first_patch: int):
        super().__init__(model, vocab, prefix, max_new, device, use_cache=True)
        self.patches, self.first_patch = patches, first_patch

    def logits(self) -> torch.Tensor:
        if self.cache.length:
            return super().logits()
        rows, seq = self.sequence.shape
        n_patches = self.patches.shape[1]
        image_ids = torch.full((rows, seq), -1, dtype=torch.long)
        image_ids[:, self.first_patch:self.first_patch + n_patches] = torch.arange(rows)[:, None]
        modality = torch.where(image_ids >= 0, IMAGE, TEXT)
        index = (torch.arange(rows)[:, None] * seq + torch.arange(self.first_patch, self.first_patch + n_patches)).reshape(-1)
        timesteps = torch.zeros(rows * n_patches, dtype=torch.long, device=self.device)
        embeds = self.model.image.embed(self.patches.reshape(rows * n_patches, -1), timesteps)
        hidden = self.model.hidden(self.sequence.to(self.device), groups_for(self.model, modality).to(self.device),
                                   cache=self.cache, attn_mask=image_block_mask(image_ids).to(self.device),
                                   image_embeds=(index.to(self.device), embeds))
        return self.model.head(hidden.view(rows, seq, -1)[:, -1])


class PatchDenoiser:
    """The model as a DDIM denoiser for one batch of prompts: the prompt is prefilled into a KV cache
    once; each call runs all patches of x_t at timestep t against it (bidirectional among patches)."""

    def __init__(self, model, vocab: Vocabulary, prefix: torch.Tensor, patch: int, latent_shape, device):
        self.model, self.patch, self.latent_shape, self.device = model, patch, latent_shape, device
        rows = prefix.shape[0]
        channels, height, width = latent_shape
        self.n_patches = (height // patch) * (width // patch)
        self.cache = model.new_cache(rows, prefix.shape[1] + self.n_patches)
        model.hidden(prefix.to(device), groups_for(model, vocab.modality_of(prefix)).to(device), cache=self.cache)
        self.prefix_len = prefix.shape[1]
        self.placeholder = torch.full((rows, self.n_patches), vocab.pad, device=device)
        modality = torch.full((rows, self.n_patches), IMAGE)
        self.groups = groups_for(model, modality).to(device)
        self.index = torch.arange(rows * self.n_patches, device=device)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rows = x_t.shape[0]
        patches = patchify(x_t.to(self.device).float(), self.patch).reshape(rows * self.n_patches, -1)
        timesteps = torch.as_tensor(t, device=self.device).reshape(-1).expand(rows).repeat_interleave(self.n_patches)
        embeds = self.model.image.embed(patches, timesteps)
        self.cache.length = self.prefix_len  # every step attends to the prompt and to this step's patches only
        hidden = self.model.hidden(self.placeholder, self.groups, cache=self.cache, image_embeds=(self.index, embeds))
        prediction = self.model.image.patch_out(hidden).reshape(rows, self.n_patches, -1)
        return unpatchify(prediction, self.patch, *self.latent_shape)


OBJECTIVE = TransfusionObjective
