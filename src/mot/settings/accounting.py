"""The parameter and FLOP table of a study's runs (`mot params`, the report): the models' accounting
(mot.models.accounting) at each setting's vocabulary and sequence length, from the config alone."""

from __future__ import annotations

from mot.config.grid import run_specs
from mot.models.accounting import run_accounting
from mot.settings.registry import objective_for


def accounting_table(config: dict) -> list[dict]:
    rows = []
    for run in run_specs(config):
        objective = objective_for(config, run.setting)
        rows.append(run_accounting(run, objective.expected_vocab_size(), objective.seq_len,
                                   objective.image_patch_dim()))
    return rows
