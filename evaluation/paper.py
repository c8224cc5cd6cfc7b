"""The paper's headline numbers, read through `paper_value` alone (so the table can move without callers
changing): per setting and loss, the fraction of dense's training MoT needs to match dense's final loss
(at 7B). FLOPs per step match between MoT and dense, so a FLOPs fraction is a steps fraction."""

from __future__ import annotations

PAPER = {
    "chameleon": {"image": {"steps_frac": 0.558, "flops_frac": 0.558, "time_frac": 0.472},
                  "text": {"steps_frac": 0.558, "flops_frac": 0.558, "time_frac": 0.756}},
    "chameleon_speech": {"speech": {"steps_frac": 0.372, "flops_frac": 0.372}},
    "transfusion": {"image": {"steps_frac": 1 / 3, "flops_frac": 1 / 3}},
}


def paper_value(setting: str, loss: str, key: str) -> float | None:
    """The paper's value of the headline comparison (MoT vs dense) for this cell, or None where it gives none."""
    return PAPER.get(setting, {}).get(loss, {}).get(key)
