"""What a sequence mixture realises: the kinds a builder draws and the tokens each modality gets.

The config gives weights per sequence kind; what a model learns from is tokens. An image–text
sequence is 64 image tokens and a short caption, a text-only row up to seq_len text tokens, so the
text:image token ratio follows from the weights and the data. `realised_mixture` draws training
batches exactly as training does (`rows_with_kind`, iid or streams) and counts the tokens that
carry a loss (the targets: a row's tokens after its first, cut to seq_len + 1).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

import numpy as np
import torch

from mot.grouping import MODALITIES


class DrawsKinds(Protocol):
    kinds: tuple[str, ...]
    mixture: np.ndarray  # normalised weights of `kinds`
    seq_len: int
    vocab: object

    def rows_with_kind(self, step: int, batch_size: int, seed: int): ...  # (kind, row) of each row of a batch


def realised_mixture(sequences: DrawsKinds, n_batches: int, batch_size: int, seed: int = 0) -> dict:
    """The kinds and target tokens of training batches 0..n_batches-1 of `seed`:
    {"configured": kind -> weight, "sequences": kind -> count, "kind_fractions": kind -> fraction,
     "tokens": kind -> modality -> targets, "totals": modality -> targets, "text_image_ratio": text / image}."""
    sequences_by_kind: Counter[str] = Counter()
    tokens = {kind: Counter() for kind in sequences.kinds}
    for step in range(n_batches):
        for kind, row in sequences.rows_with_kind(step, batch_size, seed):  # the rows train_batch collates
            targets = row[1: sequences.seq_len + 1]
            modality = sequences.vocab.modality_of(torch.from_numpy(np.asarray(targets, dtype=np.int64))).numpy()
            sequences_by_kind[kind] += 1
            tokens[kind].update({MODALITIES[m]: int(n) for m, n in zip(*np.unique(modality, return_counts=True))})
    totals = Counter()
    for counts in tokens.values():
        totals.update(counts)
    n = sum(sequences_by_kind.values())
    return {
        "configured": {k: float(w) for k, w in zip(sequences.kinds, sequences.mixture)},
        "sequences": {k: sequences_by_kind[k] for k in sequences.kinds},
        "kind_fractions": {k: sequences_by_kind[k] / n for k in sequences.kinds},
        "tokens": {k: {m: tokens[k][m] for m in MODALITIES if tokens[k][m]} for k in sequences.kinds},
        "totals": {m: totals[m] for m in MODALITIES if totals[m]},
        "text_image_ratio": totals["text"] / totals["image"] if totals["image"] else float("inf"),
    }


def mixture_metrics(realised: dict) -> dict[str, float]:
    """Flat MLflow metrics of a realised mixture (`mixture/...`)."""
    metrics = {f"mixture/fraction_{k}": v for k, v in realised["kind_fractions"].items()}
    total = sum(realised["totals"].values())
    metrics.update({f"mixture/token_fraction_{m}": n / total for m, n in realised["totals"].items()})
    if np.isfinite(realised["text_image_ratio"]):
        metrics["mixture/text_image_token_ratio"] = realised["text_image_ratio"]
    return metrics
