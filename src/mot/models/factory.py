"""Config -> model: the one place a run spec becomes a Transformer."""

from __future__ import annotations

from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer


def model_config(run, vocab_size: int, max_seq_len: int, image_patch_dim: int = 0) -> ModelConfig:
    """`run` is a `mot.config.RunSpec` (or anything with modalities/groups/untie/moe/model)."""
    plan = ParameterPlan.from_run(run.modalities, run.groups, run.untie, run.moe)
    return ModelConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, plan=plan, image_patch_dim=image_patch_dim,
                       **run.model)


def build_model(run, vocab_size: int, max_seq_len: int, image_patch_dim: int = 0) -> Transformer:
    return Transformer(model_config(run, vocab_size, max_seq_len, image_patch_dim))
