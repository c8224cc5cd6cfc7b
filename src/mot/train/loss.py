"""Next-token loss, summed per target modality, and the held-out validation loss."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torchmetrics.aggregation import MeanMetric

from mot.data.sequences import IGNORE, Batch
from mot.models.plan import MODALITIES


def modality_loss_sums(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over every target token, per-modality loss sums [n_modalities]) without a host sync."""
    flat_targets = batch.targets.reshape(-1)
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_targets,
                                 ignore_index=IGNORE, reduction="none")
    sums = torch.zeros(len(MODALITIES), device=logits.device).index_add(
        0, batch.target_modality.reshape(-1), token_loss)
    return sums.sum() / max(1, sum(batch.target_counts)), sums


@torch.no_grad()
def validation_loss(model, batches: Iterable[Batch], device, modalities: Iterable[str], autocast=None) -> dict[str, float]:
    """Token-weighted mean loss per modality over the whole split (MeanMetric reduces across ranks)."""
    model.eval()
    means = {m: MeanMetric().to(device) for m in modalities}
    for batch in batches:
        batch = batch.to(device)
        with autocast or torch.autocast(device_type=torch.device(device).type, enabled=False):
            logits = model(batch.tokens, batch.groups)
        _, sums = modality_loss_sums(logits, batch)
        for m in modalities:
            count = batch.target_counts[MODALITIES.index(m)]
            if count:
                means[m].update(sums[MODALITIES.index(m)] / count, weight=count)
    model.train()
    return {m: float(metric.compute()) for m, metric in means.items()}
