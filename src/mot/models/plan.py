"""The per-modality parameter plan (the token grouping it implies is built in `mot.grouping`).

A plan says which components (attention, FFN, norms) are untied, over which partition of the
modalities, and which parameter sets' FFN is a mixture of experts. Dense, MoT, MoE-4x, hybrids
and every ablation are plans of the one transformer in `transformer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mot.grouping import COMPONENTS, MODALITIES, modality_id  # noqa: F401  (re-exported)


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
