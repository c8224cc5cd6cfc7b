"""The per-modality parameter plan, and the host-side token grouping it implies.

A plan says which components (attention, FFN, norms) are untied, over which partition of the
modalities, and which parameter sets' FFN is a mixture of experts. Dense, MoT, MoE-4x, hybrids
and every ablation are plans of the one transformer in `transformer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

MODALITIES = ("text", "image", "speech")  # global modality ids are positions in this tuple
COMPONENTS = ("attn", "ffn", "norm")


def modality_id(name: str) -> int:
    return MODALITIES.index(name)


@dataclass(frozen=True)
class MoEConfig:
    experts: int = 4
    modalities: tuple[str, ...] = MODALITIES
    routing: str = "top1"  # or "expert_choice"
    aux_loss_weight: float = 0.01
    capacity_factor: float = 1.0


@dataclass(frozen=True)
class ParameterPlan:
    modalities: tuple[str, ...] = ("text", "image")
    groups: tuple[tuple[str, ...], ...] = (("text",), ("image",))
    untie: frozenset[str] = frozenset()
    moe: MoEConfig | None = None

    @classmethod
    def from_run(cls, modalities, groups, untie, moe: dict | None) -> "ParameterPlan":
        moe_cfg = None
        if moe is not None:
            moe_cfg = MoEConfig(**{**moe, "modalities": tuple(moe.get("modalities") or modalities)})
        return cls(tuple(modalities), tuple(tuple(g) for g in groups), frozenset(untie), moe_cfg)

    @property
    def n_groups(self) -> int:
        """Parameter sets of every untied component (1 when nothing is untied)."""
        return len(self.groups) if self.untie else 1

    def n_sets(self, component: str) -> int:
        return self.n_groups if component in self.untie else 1

    @property
    def group_of_modality(self) -> tuple[int, ...]:
        """Global modality id -> parameter-set index (modalities absent from the setting map to 0)."""
        lookup = [0] * len(MODALITIES)
        if self.n_groups > 1:
            for index, group in enumerate(self.groups):
                for name in group:
                    lookup[modality_id(name)] = index
        return tuple(lookup)

    def modalities_of_set(self, component: str, set_index: int) -> tuple[str, ...]:
        return self.groups[set_index] if self.n_sets(component) > 1 else self.modalities

    def ffn_is_moe(self, set_index: int) -> bool:
        if self.moe is None:
            return False
        return any(m in self.moe.modalities for m in self.modalities_of_set("ffn", set_index))


class PermuteRows(torch.autograd.Function):
    """x[perm] whose backward is a gather with the inverse permutation, not an atomic scatter-add."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x[perm]

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad[inverse], None, None


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
