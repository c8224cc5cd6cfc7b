"""The paper's headline numbers, read through `paper_value` alone: they are declared on each setting's
Objective (`paper`: per loss, the fraction of dense's training MoT needs to match dense's final loss, at 7B;
FLOPs per step match between MoT and dense, so a FLOPs fraction is a steps fraction)."""

from __future__ import annotations

from mot.settings import objective_class


def paper_value(config: dict, setting: str, loss: str, key: str) -> float | None:
    """The paper's value of the headline comparison (MoT vs dense) for this cell, or None where it gives none."""
    return objective_class(config, setting).paper.get(loss, {}).get(key)
