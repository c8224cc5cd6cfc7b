"""The one transformer: MoT equals a naive per-token reference, dense is MoT with tied weights,
the parameter counts follow the paper's formula, and decoding with a KV cache changes nothing."""

import copy
import math

import pytest
import torch

from mot.models.accounting import analytic_parameters, counted_parameters, paper_formulas
from mot.grouping import group_tokens
from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer

ALL = ("attn", "ffn", "norm")
VOCAB, IMAGE_FROM = 50, 30  # tokens >= 30 are "image" tokens in these tests


def make_model(untie=ALL, dtype=torch.float64, seed=0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), untie, None)
    kwargs = dict(vocab_size=VOCAB, max_seq_len=32, d_model=16, n_layers=2, n_heads=2, ffn_hidden=24, plan=plan)
    model = Transformer(ModelConfig(**{**kwargs, **overrides})).to(dtype)
    with torch.no_grad():  # norms start at exactly 1; perturb them so untying them matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(seed=1, b=3, t=12):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (b, t), generator=g)
    return tokens, (tokens >= IMAGE_FROM).long()


def groups_for(model, modality):
    plan = model.cfg.plan
    return group_tokens(modality, plan.group_of_modality, plan.n_groups)


# --- naive reference: every token with its own modality's weights, attention by hand ---------

def ref_norm(x, weight, eps):
    return x / torch.sqrt((x * x).mean() + eps) * weight


def ref_rotate(vec, pos, base=10000.0):
    half = vec.shape[0] // 2
    out = vec.clone()
    for i in range(half):
        angle = pos * base ** (-2 * i / vec.shape[0])
        out[i] = vec[i] * math.cos(angle) - vec[i + half] * math.sin(angle)
        out[i + half] = vec[i] * math.sin(angle) + vec[i + half] * math.cos(angle)
    return out


def reference_hidden(model, tokens, modality, inputs=None, visible=None):
    """Final hidden states [B, T, d], token by token. inputs[b][t] (optional) replaces a token's embedding;
    visible(b, t) lists the positions token t attends to (default: causal, every earlier token)."""
    cfg, plan = model.cfg, model.cfg.plan
    b_size, t_size = tokens.shape
    hd = cfg.head_dim
    visible = visible or (lambda b, t: range(t + 1))

    def set_of(component, m):
        return plan.group_of_modality[m] if plan.n_sets(component) > 1 else 0

    x = [[model.embed.weight[tokens[b, t]] if inputs is None or inputs[b][t] is None else inputs[b][t]
          for t in range(t_size)] for b in range(b_size)]
    for block in model.blocks:
        q, k, v = {}, {}, {}
        for b in range(b_size):
            for t in range(t_size):
                m = int(modality[b, t])
                h = ref_norm(x[b][t], block.attn_norm.weight[set_of("norm", m)], cfg.norm_eps)
                qkv = h @ block.qkv.weight[set_of("attn", m)]
                for head in range(cfg.n_heads):
                    q[b, t, head] = ref_rotate(qkv[head * hd:(head + 1) * hd], t)
                    k[b, t, head] = ref_rotate(qkv[cfg.d_model + head * hd: cfg.d_model + (head + 1) * hd], t)
                    v[b, t, head] = qkv[2 * cfg.d_model + head * hd: 2 * cfg.d_model + (head + 1) * hd]
        new_x = [[None] * t_size for _ in range(b_size)]
        for b in range(b_size):
            for t in range(t_size):
                m = int(modality[b, t])
                heads = []
                for head in range(cfg.n_heads):
                    # global attention over the visible tokens, whatever their modality
                    seen = list(visible(b, t))
                    scores = torch.stack([q[b, t, head] @ k[b, s, head] / math.sqrt(hd) for s in seen])
                    weights = torch.softmax(scores, dim=0)
                    heads.append(sum(w * v[b, s, head] for w, s in zip(weights, seen)))
                attn = torch.cat(heads) @ block.out.weight[set_of("attn", m)]
                x1 = x[b][t] + attn
                f = set_of("ffn", m)
                h = ref_norm(x1, block.ffn_norm.weight[set_of("norm", m)], cfg.norm_eps)
                ffn = block.ffn.dense
                y = (torch.nn.functional.silu(h @ ffn.w_gate[f]) * (h @ ffn.w_up[f])) @ ffn.w_down[f]
                new_x[b][t] = x1 + y
        x = new_x
    hidden = [[ref_norm(x[b][t], model.final_norm.weight[set_of("norm", int(modality[b, t]))], cfg.norm_eps)
               for t in range(t_size)] for b in range(b_size)]
    return torch.stack([torch.stack(row) for row in hidden])


def reference_forward(model, tokens, modality):
    return model.head(reference_hidden(model, tokens, modality))


def assert_equals_reference(model, out, tokens, modality, probe) -> dict:
    """The model's output `out` and every parameter's gradient of (out * probe).sum() equal the naive per-token
    reference's to 1e-5; returns the model's gradients."""
    (out * probe).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = reference_forward(model, tokens, modality)
    (ref * probe).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-5, rtol=0, msg=f"gradient of {name}")
    return grads


@pytest.mark.parametrize("untie", [ALL, ("ffn", "norm"), ("attn",), ()])
def test_mot_matches_naive_reference_outputs_and_gradients(untie):
    model = make_model(untie)
    tokens, modality = batch()
    probe = torch.randn(3, 12, VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    assert_equals_reference(model, model(tokens, groups_for(model, modality)), tokens, modality, probe)


def test_mot_with_copies_of_dense_weights_gives_dense_output():
    dense = make_model(untie=())
    mot = make_model(untie=ALL, seed=7)
    with torch.no_grad():
        for p_mot, p_dense in zip(mot.parameters(), dense.parameters(), strict=True):
            p_mot.copy_(p_dense.expand_as(p_mot))  # every modality's set is the dense set
    tokens, modality = batch()
    torch.testing.assert_close(mot(tokens, groups_for(mot, modality)),
                               dense(tokens, groups_for(dense, modality)), atol=1e-12, rtol=0)


def test_tied_plan_is_bit_identical_to_dense_whatever_the_groups():
    dense = make_model(untie=())
    tied = copy.deepcopy(dense)
    tokens, modality = batch()
    assert groups_for(tied, modality).perm is None  # nothing untied: no permutation at all
    assert torch.equal(tied(tokens, groups_for(tied, modality)), dense(tokens, groups_for(dense, modality)))


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_mot_extra_parameters_follow_the_formula(norm, qk_norm):
    dense, mot = make_model((), norm=norm, qk_norm=qk_norm), make_model(ALL, norm=norm, qk_norm=qk_norm)
    k, d, layers, hidden = 2, 16, 2, 24
    norm_size = d * (2 if norm == "layernorm" else 1)
    attn = 4 * d * d + (2 * (norm_size // d) * (d // 2) if qk_norm else 0)
    per_layer = attn + 3 * d * hidden + 2 * norm_size
    extra = (k - 1) * (layers * per_layer + norm_size)  # + the untied final norm
    n_dense = sum(p.numel() for p in dense.parameters())
    n_mot = sum(p.numel() for p in mot.parameters())
    assert n_mot - n_dense == extra
    assert paper_formulas(mot.cfg, k)["mot_extra_real_with_norms"] == extra
    assert analytic_parameters(mot.cfg)["total"] == n_mot
    assert counted_parameters(mot, mot.cfg)["total"] == n_mot


def test_grouping_is_a_stable_sort_by_parameter_set():
    modality = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]])
    groups = group_tokens(modality, (0, 1, 0), 2)
    assert groups.sizes == (4, 4)
    assert groups.perm.tolist() == [0, 3, 5, 6, 1, 2, 4, 7]
    assert torch.equal(groups.perm[groups.inv_perm], torch.arange(8))


def test_incremental_decoding_with_kv_cache_equals_full_recompute():
    model = make_model(ALL)
    tokens, modality = batch(t=10)
    full = model(tokens, groups_for(model, modality))
    cache = model.new_cache(tokens.shape[0], 10)
    prefix = model(tokens[:, :6], groups_for(model, modality[:, :6]), cache=cache)
    steps = [model(tokens[:, t:t + 1], groups_for(model, modality[:, t:t + 1]), cache=cache) for t in range(6, 10)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-10, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_bf16_grouped_gemm_path_matches_the_per_set_path():
    model = make_model(ALL, dtype=torch.float32, d_model=64, n_heads=4, ffn_hidden=128).cuda()
    tokens, modality = batch(t=32)
    groups = groups_for(model, modality)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        grouped = model(tokens.cuda(), groups.to("cuda")).float()
        no_offsets = groups.to("cuda")
        no_offsets.offsets = None  # forces one matmul per set's chunk
        per_set = model(tokens.cuda(), no_offsets).float()
    torch.testing.assert_close(grouped, per_set, atol=2e-2, rtol=2e-2)
    reference = model.double().cpu()(tokens, groups).float()
    torch.testing.assert_close(grouped.cpu(), reference, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_in_sorted_order_equals_the_sequence_order_path(qk_norm):
    """The permutation-free path (flex attention over modality-sorted rows, same-sample causal block mask, RoPE from
    the original positions) computes what the sequence-order path computes (forward: flex has no CPU backward)."""
    model = make_model(ALL, qk_norm=qk_norm)
    tokens, modality = batch(b=3, t=12)
    groups = groups_for(model, modality)
    with torch.no_grad():
        plain = model(tokens, groups)
        model.sorted_attention = True
        assert model.attends_in_sorted_order(tokens, groups, None, None)
        sorted_order = model(tokens, groups)
    torch.testing.assert_close(sorted_order, plain, atol=1e-10, rtol=0)
