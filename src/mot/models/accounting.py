"""Parameter and FLOP accounting, from the config (analytic) and from a built model (counted).

FLOPs count matmuls and attention (2 per multiply-add), as in nanoGPT / the Chinchilla appendix:
forward = 2 * (active matmul parameters) + 4 * n_layers * seq_len * d_model; training = 3 x forward.
"""

from __future__ import annotations

from collections import defaultdict

from torch import nn

from mot.grouping import modality_id
from mot.models.factory import model_config
from mot.models.transformer import ModelConfig

COMPONENT_OF_MODULE = {"qkv": "attn", "out": "attn", "q_norm": "attn", "k_norm": "attn",
                       "attn_norm": "norm", "ffn_norm": "norm", "final_norm": "norm",
                       "ffn": "ffn", "embed": "embedding", "head": "head", "image": "adapters"}


def norm_params(cfg: ModelConfig, dim: int) -> int:
    return dim * (2 if cfg.norm == "layernorm" else 1)


def attn_params(cfg: ModelConfig) -> int:
    d = cfg.d_model
    return 4 * d * d + (2 * norm_params(cfg, cfg.head_dim) if cfg.qk_norm else 0)


def ffn_params(cfg: ModelConfig, moe: bool = False) -> int:
    dense = 3 * cfg.d_model * cfg.ffn_hidden
    if not moe:
        return dense
    experts = cfg.plan.moe.experts
    return experts * dense + cfg.d_model * experts  # experts + router


def layer_norm_params(cfg: ModelConfig) -> int:
    return 2 * norm_params(cfg, cfg.d_model)


def analytic_parameters(cfg: ModelConfig) -> dict:
    """Parameter counts implied by the config alone (checked against the built model in tests)."""
    plan = cfg.plan
    per_layer = {
        "attn": plan.n_sets("attn") * attn_params(cfg),
        "ffn": sum(ffn_params(cfg, plan.ffn_is_moe(g)) for g in range(plan.n_sets("ffn"))),
        "norm": plan.n_sets("norm") * layer_norm_params(cfg),
    }
    components = {k: cfg.n_layers * v for k, v in per_layer.items()}
    components["norm"] += plan.n_sets("norm") * norm_params(cfg, cfg.d_model)  # final norm
    components["embedding"] = cfg.vocab_size * cfg.d_model
    components["head"] = cfg.vocab_size * cfg.d_model
    if cfg.image_patch_dim:  # Transfusion: patch in (+bias), timestep MLP (2 layers), patch out (+bias)
        p, d = cfg.image_patch_dim, cfg.d_model
        components["adapters"] = (p * d + d) + 2 * (d * d + d) + (d * p + p)
    non_embedding = components["attn"] + components["ffn"] + components["norm"]
    return {"total": sum(components.values()), "non_embedding": non_embedding, "components": components}


def active_matmul_parameters(cfg: ModelConfig, modality: str) -> int:
    """Matmul parameters one token of `modality` passes through (router + one expert for MoE)."""
    plan = cfg.plan
    ffn_set = plan.group_of_modality[modality_id(modality)] if plan.n_sets("ffn") > 1 else 0
    moe = plan.ffn_is_moe(ffn_set)
    ffn = 3 * cfg.d_model * cfg.ffn_hidden + (cfg.d_model * plan.moe.experts if moe else 0)
    return cfg.n_layers * (4 * cfg.d_model * cfg.d_model + ffn) + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int, modality: str = "text") -> dict:
    forward = 2 * active_matmul_parameters(cfg, modality) + 4 * cfg.n_layers * seq_len * cfg.d_model
    return {"forward": forward, "train": 3 * forward}


def paper_formulas(cfg: ModelConfig, n_modalities: int) -> dict:
    """The paper's extra-parameter formulas, in its D^2 form and with this model's real FFN width."""
    d, k, layers = cfg.d_model, n_modalities, cfg.n_layers
    experts = cfg.plan.moe.experts if cfg.plan.moe else 4
    return {
        "mot_extra_paper": layers * 7 * (k - 1) * d * d,
        "mot_extra_real": layers * (k - 1) * (attn_params(cfg) + 3 * d * cfg.ffn_hidden),
        "mot_extra_real_with_norms": (k - 1) * (layers * (attn_params(cfg) + 3 * d * cfg.ffn_hidden
                                                          + layer_norm_params(cfg)) + norm_params(cfg, d)),
        "moe_extra_paper": layers * ((experts - 1) * 3 * d * d + experts * d),
        "moe_extra_real": layers * ((experts - 1) * 3 * d * cfg.ffn_hidden + experts * d),
    }


def counted_parameters(model: nn.Module, cfg: ModelConfig) -> dict:
    """Count the model's nn.Parameters by component and by parameter set's modalities."""
    components: dict[str, int] = defaultdict(int)
    per_modality: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        parts = name.split(".")
        component = next(COMPONENT_OF_MODULE[part] for part in parts if part in COMPONENT_OF_MODULE)
        components[component] += p.numel()
        if component in ("embedding", "head", "adapters"):
            continue
        # a grouped parameter's leading axis is its parameter sets; shared ones count for every modality
        n_sets = cfg.plan.n_sets(component)
        for m in cfg.plan.modalities:
            if n_sets == 1:
                per_modality[m] += p.numel()
            elif component == "ffn" and parts[parts.index("ffn") + 1] == "blocks":
                set_index = int(parts[parts.index("ffn") + 2])  # blocks.{layer}.ffn.blocks.{set}...
                if m in cfg.plan.groups[set_index]:
                    per_modality[m] += p.numel()
            else:
                per_modality[m] += p.numel() // n_sets
    total = sum(components.values())
    non_embedding = components["attn"] + components["ffn"] + components["norm"]
    return {"total": total, "non_embedding": non_embedding, "components": dict(components),
            "per_modality": dict(per_modality)}


def run_accounting(run, vocab_size: int, seq_len: int, image_patch_dim: int = 0) -> dict:
    """Everything `mot params` prints for one run (from the config alone)."""
    cfg = model_config(run, vocab_size, seq_len, image_patch_dim)
    params = analytic_parameters(cfg)
    per_modality = {m: active_matmul_parameters(cfg, m) for m in cfg.plan.modalities}
    return {
        "setting": run.setting, "run": run.name, "untie": list(run.untie), "moe": bool(run.moe),
        "params_total": params["total"], "params_non_embedding": params["non_embedding"],
        "params_by_component": params["components"],
        "active_matmul_params_per_token": per_modality,
        "flops_per_token": {m: flops_per_token(cfg, seq_len, m) for m in cfg.plan.modalities},
        # K = parameter sets (a merge of two modalities has one set fewer than modalities)
        "paper_formulas": paper_formulas(cfg, len(cfg.plan.groups)),
    }


def _formula_for(row: dict) -> tuple[str, int | None, int | None]:
    """Which of the paper's formulas describes this run's extra parameters over dense, if any."""
    f = row["paper_formulas"]
    if not row["moe"] and set(row["untie"]) == {"attn", "ffn", "norm"}:
        return "MoT: 7(K-1)D^2 per layer", f["mot_extra_paper"], f["mot_extra_real_with_norms"]
    if row["moe"] and not row["untie"]:
        return "MoE: (E-1)|ffn|+ED per layer", f["moe_extra_paper"], f["moe_extra_real"]
    return "-", None, None


def format_table(rows: list[dict]) -> str:
    dense = {r["setting"]: r["params_total"] for r in rows if r["run"] == "dense"}
    header = (f"{'setting/run':36} {'total':>10} {'non-emb':>10} {'attn':>9} {'ffn':>9} {'norm':>6} "
              f"{'FLOPs/tok (train)':>17} {'Δ dense':>10} {'paper formula':>28} {'D^2 form':>9} {'real widths':>11}")
    lines = [header, "-" * len(header)]
    for row in rows:
        comp = row["params_by_component"]
        flops = max(v["train"] for v in row["flops_per_token"].values())
        name, paper, real = _formula_for(row)
        delta = row["params_total"] - dense[row["setting"]] if row["setting"] in dense else None
        lines.append(f"{row['setting'] + '/' + row['run']:36} {row['params_total']:>10,} {row['params_non_embedding']:>10,} "
                     f"{comp['attn']:>9,} {comp['ffn']:>9,} {comp['norm']:>6,} {flops:>17,} "
                     f"{'' if delta is None else format(delta, ','):>10} {name:>28} "
                     f"{'' if paper is None else format(paper, ','):>9} {'' if real is None else format(real, ','):>11}")
    lines.append("FLOPs: 2 x active matmul params + 4·L·T·D attention, x3 for training (max over modalities). "
                 "'real widths' = the formula with this model's FFN width and norms (= Δ dense exactly); "
                 "'D^2 form' = the paper's |attn|=4D^2, |ffn|=3D^2. Vocabulary = the config's BPE budget + codebook.")
    return "\n".join(lines)
