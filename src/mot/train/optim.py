"""AdamW with decoupled weight decay on matrices only, and a warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


# norms, embeddings and MoE routers keep their scale (a router's weight is a matrix, so shape alone is not enough)
NO_DECAY_NAMES = ("norm", "embed", "router")


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether AdamW decays this parameter: weight matrices do; biases, norms, embeddings and routers do not."""
    return param.dim() >= 2 and not any(part in name for part in NO_DECAY_NAMES)


def build_optimizer(model: nn.Module, train_cfg: dict) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if decays(name, p) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all parameters, on a GPU and on CPU alike (4-7x the foreach step on 2 CPU cores at
    # 25-50M parameters; the optimizer step is the one cost that grows with MoT's parameter count)
    devices = {p.device.type for p in model.parameters()}
    fused = len(devices) == 1 and devices <= {"cuda", "cpu"}
    return torch.optim.AdamW(groups, lr=train_cfg["lr"], betas=tuple(train_cfg["betas"]), fused=fused or None)


def lr_at(step: int, train_cfg: dict) -> float:
    """Linear warmup to lr, then cosine decay to lr * min_lr_ratio at the last step."""
    peak, steps, warmup = train_cfg["lr"], train_cfg["steps"], train_cfg["warmup_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    floor = peak * train_cfg["min_lr_ratio"]
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
