"""Tokenized splits and the batch every setting's sequence builder produces.

A sample is an image (its VQ codes or VAE latents) with several captions (and, with speech, a
spoken caption). Each setting builds its own sequences from them (`mot.settings`); the batch
carries the host-side token grouping (`TokenGroups`), so the model never syncs to route.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mot.grouping import MODALITIES, TokenGroups, group_tokens

IGNORE = -100


@dataclass
class TokenizedSplit:
    """image_codes [N, L] (code ids, no offset); captions [N, C, Lc] text ids padded with -1."""

    image_codes: np.ndarray
    captions: np.ndarray
    caption_lengths: np.ndarray  # [N, C], 0 = no caption in that slot
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.image_codes)

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image_codes=self.image_codes, captions=self.captions,
                            caption_lengths=self.caption_lengths, keys=self.keys)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "TokenizedSplit":
        with np.load(path) as f:
            return cls(f["image_codes"], f["captions"], f["caption_lengths"], f["keys"])

    def caption(self, index: int, slot: int) -> np.ndarray:
        return self.captions[index, slot, : self.caption_lengths[index, slot]]

    def n_captions(self, index: int) -> int:
        return int((self.caption_lengths[index] > 0).sum())



@dataclass
class TextChunks:
    """Text-only rows: each document as `<bos> ids <eos>`, cut into rows of at most W tokens (W = seq_len + 1,
    the inputs and their next tokens); ids [N, W] padded with -1."""

    ids: np.ndarray        # [N, W] int32
    lengths: np.ndarray    # [N]
    documents: np.ndarray  # [N] the document each row was cut from

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, index: int) -> np.ndarray:
        return self.ids[index, : self.lengths[index]].astype(np.int64)

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[int]], width: int) -> "TextChunks":
        """Rows of `width` tokens from each document's ids (specials included); a last piece of one token
        (nothing to predict) is dropped."""
        pieces = [(d, doc[start:start + width]) for d, doc in enumerate(documents)
                  for start in range(0, len(doc), width) if len(doc) - start >= 2]
        ids = np.full((len(pieces), width), -1, dtype=np.int32)
        for row, (_, piece) in enumerate(pieces):
            ids[row, : len(piece)] = piece
        return cls(ids, np.array([len(p) for _, p in pieces], dtype=np.int32),
                   np.array([d for d, _ in pieces], dtype=np.int32))

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, ids=self.ids, lengths=self.lengths, documents=self.documents)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "TextChunks":
        with np.load(path) as f:
            return cls(f["ids"], f["lengths"], f["documents"])


@dataclass
class SpeechTokens:
    """Per sample of a split (same order as its images): speech unit ids and the spoken transcript's text ids."""

    units: np.ndarray              # [N, Lu] unit ids (no offset), padded with -1
    unit_lengths: np.ndarray       # [N]
    transcripts: np.ndarray        # [N, Lt] text ids, padded with -1
    transcript_lengths: np.ndarray  # [N]
    keys: np.ndarray

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **self.__dict__)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SpeechTokens":
        with np.load(path) as f:
            return cls(**{k: f[k] for k in ("units", "unit_lengths", "transcripts", "transcript_lengths", "keys")})

    def unit_ids(self, index: int) -> np.ndarray:
        return self.units[index, : self.unit_lengths[index]]

    def transcript(self, index: int) -> np.ndarray:
        return self.transcripts[index, : self.transcript_lengths[index]]


@dataclass
class ImagePatches:
    """Continuous image tokens of a batch (Transfusion): which flat positions of the [B, T] batch are
    latent patches, their clean values, the noise and timestep each one is trained at."""

    index: torch.Tensor       # [N] flat (b*T + t) positions of the patch tokens, sequence order
    clean: torch.Tensor       # [N, patch_dim] clean latent patches x0
    noise: torch.Tensor       # [N, patch_dim] Gaussian noise
    timesteps: torch.Tensor   # [N] diffusion timestep per patch (0 and no loss for a clean, conditioning image)
    noised: torch.Tensor      # [N] bool: this patch is noised and carries the diffusion loss
    n_noised: int             # host int: patches that carry the loss

    def to(self, device) -> "ImagePatches":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return ImagePatches(move(self.index), move(self.clean), move(self.noise), move(self.timesteps),
                            move(self.noised), self.n_noised)

    def rows(self, start: int, stop: int, seq_len: int) -> "ImagePatches":
        """The patches of batch rows [start, stop), their positions relative to row `start`."""
        keep = (self.index >= start * seq_len) & (self.index < stop * seq_len)
        noised = self.noised[keep]
        return ImagePatches(self.index[keep] - start * seq_len, self.clean[keep], self.noise[keep],
                            self.timesteps[keep], noised, int(noised.sum()))


@dataclass
class Batch:
    tokens: torch.Tensor            # [B, T] inputs (a placeholder id where a continuous patch enters)
    targets: torch.Tensor           # [B, T] next tokens, IGNORE on padding and non-text targets of Transfusion
    input_modality: torch.Tensor    # [B, T] modality of each input token (chooses its weights)
    target_modality: torch.Tensor   # [B, T] modality of each target (attributes its loss)
    groups: TokenGroups
    target_counts: tuple[int, ...]  # non-ignored targets per modality, host ints
    image: ImagePatches | None = None      # Transfusion's latent patches
    attn_mask: torch.Tensor | None = None  # [B, 1, T, T] bool, True = may attend (None = causal)

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.tokens), move(self.targets), move(self.input_modality),
                     move(self.target_modality), self.groups.to(device), self.target_counts,
                     None if self.image is None else self.image.to(device), move(self.attn_mask))

    @property
    def n_tokens(self) -> int:
        return self.tokens.numel()

    def rows(self, start: int, stop: int, group_of_modality, n_groups: int) -> "Batch":
        """Rows [start, stop) of a host batch, regrouped by modality on the host (no device sync in the model),
        with the rows' own target counts; latent patches follow their rows."""
        slice_ = lambda t: None if t is None else t[start:stop]  # noqa: E731
        image = None if self.image is None else self.image.rows(start, stop, self.tokens.shape[1])
        input_modality, targets, target_modality = map(slice_, (self.input_modality, self.targets,
                                                                self.target_modality))
        return Batch(self.tokens[start:stop], targets, input_modality, target_modality,
                     group_tokens(input_modality, group_of_modality, n_groups),
                     target_counts(targets, target_modality, image), image, slice_(self.attn_mask))




def collate_token_rows(sequences: list[np.ndarray], seq_len: int, pad: int, modality_of,
                       group_of_modality: Sequence[int], n_groups: int) -> Batch:
    """Next-token batch from token rows: inputs are a row's first seq_len tokens, targets the next ones."""
    width = seq_len + 1
    padded = np.full((len(sequences), width), pad, dtype=np.int64)
    valid = np.zeros((len(sequences), width), dtype=bool)
    for row, seq in enumerate(sequences):
        padded[row, : len(seq)] = seq[:width]
        valid[row, : len(seq)] = True
    full = torch.from_numpy(padded)
    tokens, targets = full[:, :-1], full[:, 1:].clone()
    targets[~torch.from_numpy(valid[:, 1:])] = IGNORE
    input_modality = modality_of(tokens)
    target_modality = modality_of(targets.clamp(min=0))
    counts = target_counts(targets, target_modality)
    groups = group_tokens(input_modality, group_of_modality, n_groups)
    return Batch(tokens, targets, input_modality, target_modality, groups, counts)


def target_counts(targets: torch.Tensor, target_modality: torch.Tensor,
                  image: ImagePatches | None = None) -> tuple[int, ...]:
    """What each modality's loss is averaged over, as host ints (no device sync): its non-ignored targets;
    with continuous image patches, the image count is the noised patches (the diffusion loss is theirs)."""
    counted = targets != IGNORE
    counts = [int(((target_modality == m) & counted).sum()) for m in range(len(MODALITIES))]
    if image is not None:
        counts[MODALITIES.index("image")] = image.n_noised
    return tuple(counts)
