"""Tokenized splits and the Chameleon sequences built from them.

One vocabulary: text BPE ids first, then the VQ image codes. A sample is an image (its codes)
with several captions; a training sequence is either generation
`<bos> caption <boi> image <eoi> <eos>` or captioning `<bos> <boi> image <eoi> caption <eos>`.
The batch builder also sorts tokens by parameter set on the host (`TokenGroups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from mot.models.plan import TokenGroups, group_tokens, modality_id

IGNORE = -100
TEXT, IMAGE = modality_id("text"), modality_id("image")


@dataclass(frozen=True)
class Vocabulary:
    text_size: int
    image_codes: int
    pad: int
    bos: int
    eos: int
    boi: int
    eoi: int

    @property
    def image_offset(self) -> int:
        return self.text_size

    @property
    def size(self) -> int:
        return self.text_size + self.image_codes

    def modality_of(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens >= self.image_offset).long() * IMAGE + (tokens < self.image_offset).long() * TEXT

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
class Batch:
    tokens: torch.Tensor            # [B, T] inputs
    targets: torch.Tensor           # [B, T] next tokens, IGNORE on padding
    input_modality: torch.Tensor    # [B, T] modality of each input token (chooses its weights)
    target_modality: torch.Tensor   # [B, T] modality of each target (attributes its loss)
    groups: TokenGroups
    target_counts: tuple[int, ...]  # non-ignored targets per modality, host ints

    def to(self, device) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.tokens), move(self.targets), move(self.input_modality),
                     move(self.target_modality), self.groups.to(device), self.target_counts)

    @property
    def n_tokens(self) -> int:
        return self.tokens.numel()


class ChameleonSequences:
    """Builds fixed-length next-token batches from a tokenized split."""

    def __init__(self, split: TokenizedSplit, vocab: Vocabulary, seq_len: int, captioning_fraction: float,
                 group_of_modality: Sequence[int], n_groups: int, caption_dropout: float = 0.0):
        self.split, self.vocab, self.seq_len = split, vocab, seq_len
        self.captioning_fraction, self.caption_dropout = captioning_fraction, caption_dropout
        self.group_of_modality, self.n_groups = tuple(group_of_modality), n_groups

    def sequence(self, index: int, slot: int, captioning: bool, drop_caption: bool = False) -> np.ndarray:
        """drop_caption gives the unconditional generation sequence `<bos> <boi> image <eoi> <eos>` (for CFG)."""
        v = self.vocab
        image = self.split.image_codes[index].astype(np.int64) + v.image_offset
        caption = self.split.caption(index, slot).astype(np.int64)[: 0 if drop_caption else None]
        if captioning:
            parts = ([v.bos, v.boi], image, [v.eoi], caption, [v.eos])
        else:
            parts = ([v.bos], caption, [v.boi], image, [v.eoi, v.eos])
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])

    def collate(self, sequences: list[np.ndarray]) -> Batch:
        width = self.seq_len + 1
        padded = np.full((len(sequences), width), self.vocab.pad, dtype=np.int64)
        valid = np.zeros((len(sequences), width), dtype=bool)
        for row, seq in enumerate(sequences):
            padded[row, : len(seq)] = seq[:width]
            valid[row, : len(seq)] = True
        full = torch.from_numpy(padded)
        tokens, targets = full[:, :-1], full[:, 1:].clone()
        targets[~torch.from_numpy(valid[:, 1:])] = IGNORE
        input_modality = self.vocab.modality_of(tokens)
        target_modality = self.vocab.modality_of(targets.clamp(min=0))
        counted = targets != IGNORE
        counts = tuple(int(((target_modality == m) & counted).sum()) for m in range(3))
        groups = group_tokens(input_modality, self.group_of_modality, self.n_groups)
        return Batch(tokens, targets, input_modality, target_modality, groups, counts)

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The batch of a training step: a pure function of (seed, step), so a resumed run sees the same data."""
        rng = np.random.default_rng([seed, step])
        indices = rng.integers(0, len(self.split), size=batch_size)
        sequences = []
        for index in indices:
            slot = int(rng.integers(0, self.split.n_captions(int(index))))
            captioning = bool(rng.random() < self.captioning_fraction)
            drop = not captioning and bool(rng.random() < self.caption_dropout)
            sequences.append(self.sequence(int(index), slot, captioning, drop))
        return self.collate(sequences)

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """Fixed order: sample i with caption i mod (its captions), directions alternating."""
        n = len(self.split) if limit is None else min(limit, len(self.split))
        for start in range(0, n, batch_size):
            yield self.collate([
                self.sequence(i, i % self.split.n_captions(i), captioning=bool(i % 2))
                for i in range(start, min(n, start + batch_size))
            ])
