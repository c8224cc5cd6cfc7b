"""AdamW decays the weight matrices of attention and FFNs (MoE experts included) and the output head; norms,
embeddings, biases and the MoE router keep their scale (weight decay 0)."""

import torch

from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer
from mot.train.optim import build_optimizer

TRAIN_CFG = {"lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.1}


def hybrid_moe_model() -> Transformer:
    """One layer of MoT with text's FFN an MoE (the hybrid-text_moe4x plan), layernorm with q/k norms."""
    torch.manual_seed(0)
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), ("attn", "ffn", "norm"),
                                  {"experts": 4, "modalities": ["text"]})
    return Transformer(ModelConfig(vocab_size=50, max_seq_len=16, d_model=16, n_layers=1, n_heads=2,
                                   ffn_hidden=24, norm="layernorm", qk_norm=True, plan=plan))


def group_names(model: Transformer) -> dict[float, set[str]]:
    """weight decay -> the names of the parameters AdamW applies it to."""
    optimizer = build_optimizer(model, TRAIN_CFG)
    name_of = {id(p): name for name, p in model.named_parameters()}
    return {group["weight_decay"]: {name_of[id(p)] for p in group["params"]} for group in optimizer.param_groups}


def test_router_norms_and_embedding_are_not_decayed_and_matrices_are():
    model = hybrid_moe_model()
    groups = group_names(model)
    assert set(groups) == {0.1, 0.0}
    moe, dense = "blocks.0.ffn.blocks.0", "blocks.0.ffn.blocks.1"
    assert groups[0.1] == {
        "blocks.0.qkv.weight", "blocks.0.out.weight",
        f"{moe}.ffn.w_gate", f"{moe}.ffn.w_up", f"{moe}.ffn.w_down",
        f"{dense}.w_gate", f"{dense}.w_up", f"{dense}.w_down",
        "head.weight",
    }
    norms = {f"{prefix}.{kind}" for prefix in ("blocks.0.attn_norm", "blocks.0.ffn_norm", "blocks.0.q_norm",
                                               "blocks.0.k_norm", "final_norm") for kind in ("weight", "bias")}
    assert groups[0.0] == {f"{moe}.router", "embed.weight"} | norms
    # the router is a 2-D matrix: only its name keeps it out of the decayed group
    assert model.get_parameter(f"{moe}.router").dim() == 2


def test_every_parameter_is_in_exactly_one_group():
    model = hybrid_moe_model()
    optimizer = build_optimizer(model, TRAIN_CFG)
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
