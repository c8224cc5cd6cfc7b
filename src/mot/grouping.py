"""Modalities and the host-side token grouping: below both the data pipeline (which builds the
groups while collating a batch) and the models (which apply one parameter set per group)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

MODALITIES = ("text", "image", "speech")  # global modality ids are positions in this tuple
COMPONENTS = ("attn", "ffn", "norm")  # what a parameter plan can untie per modality


def modality_id(name: str) -> int:
    return MODALITIES.index(name)


class PermuteRows(torch.autograd.Function):
    """x[perm] whose backward is a gather with the inverse permutation, not an atomic scatter-add."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)  # index_select: a row gather, faster on CPU than x[perm]

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


@dataclass
class TokenGroups:
    """Tokens of a [B, T] batch sorted by parameter set: built on the host by the batch builder,
    so the model never reads device data to route (no host-device sync)."""

    sizes: tuple[int, ...]                 # tokens per parameter set, host ints
    perm: torch.Tensor | None = None       # sorted position -> flat (b*T + t) index; None = identity
    inv_perm: torch.Tensor | None = None   # flat index -> sorted position
    offsets: torch.Tensor | None = None    # cumulative sizes (int32), for grouped GEMMs on the device

    def to_sorted(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of x [B*T, ...] from sequence order to parameter-set order."""
        return x if self.perm is None else PermuteRows.apply(x, self.perm, self.inv_perm)

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of x from parameter-set order back to sequence order."""
        return x if self.perm is None else PermuteRows.apply(x, self.inv_perm, self.perm)

    def to(self, device, non_blocking: bool = True) -> "TokenGroups":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return TokenGroups(self.sizes, move(self.perm), move(self.inv_perm), move(self.offsets))


def group_tokens(modality_ids: torch.Tensor, group_of_modality: Sequence[int], n_groups: int) -> TokenGroups:
    """Stable sort of the flattened tokens by parameter set; call on CPU tensors (data loader)."""
    n_tokens = modality_ids.numel()
    if n_groups == 1:
        return TokenGroups(sizes=(n_tokens,))
    assert modality_ids.device.type == "cpu", "group tokens on the host, before moving the batch"
    set_ids = torch.tensor(group_of_modality, dtype=torch.long)[modality_ids.reshape(-1).long()]
    perm = torch.argsort(set_ids, stable=True)
    inv_perm = torch.empty_like(perm)
    inv_perm[perm] = torch.arange(n_tokens)
    counts = torch.bincount(set_ids, minlength=n_groups)
    return TokenGroups(sizes=tuple(counts.tolist()), perm=perm, inv_perm=inv_perm,
                       offsets=torch.cumsum(counts, 0).to(torch.int32))
