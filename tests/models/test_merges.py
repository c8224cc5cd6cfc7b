"""Three modalities and leave-one-modality-out merges: a merge is MoT with two modalities sharing one
parameter set. Its extra parameters over dense are one set per group beyond the first, its two merged
modalities go through the same weights (before and after training), and 3-modality MoT equals the
naive per-token reference with text, image and speech tokens interleaved."""

import re

import pytest
import torch
import torch.nn.functional as F

from mot.config import RunSpec
from mot.grouping import group_tokens, modality_id
from mot.models.accounting import (analytic_parameters, counted_parameters, format_table, paper_formulas,
                                   run_accounting)
from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer
from mot.vocabulary import IMAGE, SPEECH, TEXT, Vocabulary
from tests.models.test_transformer import assert_equals_reference

ALL = ("attn", "ffn", "norm")
MODALITIES = ("text", "image", "speech")
VOCAB = Vocabulary(text_size=20, image_codes=12, speech_units=10, pad=0, bos=1, eos=2, boi=3, eoi=4)
D, LAYERS, HEADS, HIDDEN, SEQ = 16, 2, 2, 24, 12

# name -> (groups, untie); dense keeps one group per modality but unties nothing
PLANS = {
    "mot": ((("text",), ("image",), ("speech",)), ALL),
    "merge-text_image": ((("text", "image"), ("speech",)), ALL),
    "merge-image_speech": ((("text",), ("image", "speech")), ALL),
    "merge-text_speech": ((("text", "speech"), ("image",)), ALL),
    "dense": ((("text",), ("image",), ("speech",)), ()),
}
MERGES = [name for name in PLANS if name.startswith("merge")]


def plan_of(name: str) -> ParameterPlan:
    groups, untie = PLANS[name]
    return ParameterPlan.from_run(MODALITIES, groups, untie, None)


def make_model(name: str, seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=VOCAB.size, max_seq_len=32, d_model=D, n_layers=LAYERS, n_heads=HEADS,
                  ffn_hidden=HIDDEN, plan=plan_of(name))
    model = Transformer(ModelConfig(**{**kwargs, **overrides})).double()
    with torch.no_grad():  # norms start at exactly 1; perturb them so which set a token uses matters
        for param_name, p in model.named_parameters():
            if "norm" in param_name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def interleaved_batch(seed: int = 1, rows: int = 3, length: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids from all three parts of the vocabulary, mixed within every row, and their modality ids."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.tensor([0, VOCAB.image_offset, VOCAB.speech_offset])
    sizes = torch.tensor([VOCAB.text_size, VOCAB.image_codes, VOCAB.speech_units])
    part = torch.randint(0, 3, (rows, length), generator=g)
    tokens = starts[part] + (torch.rand(rows, length, generator=g) * sizes[part]).long()
    modality = VOCAB.modality_of(tokens)
    assert all(set(row.tolist()) == {TEXT, IMAGE, SPEECH} for row in modality)
    return tokens, modality


def groups_for(model: Transformer, modality: torch.Tensor):
    plan = model.cfg.plan
    return group_tokens(modality, plan.group_of_modality, plan.n_groups)


def run_model(model: Transformer, tokens: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    return model(tokens, groups_for(model, modality))


# --- parameter counts ----------------------------------------------------------------------

def norm_size(norm: str, dim: int) -> int:
    return dim * (2 if norm == "layernorm" else 1)


def expected_extra(n_groups: int, norm: str, qk_norm: bool) -> int:
    """(n_groups - 1) * (L * (|attn| + |ffn| + 2|norm_d|) + |norm_d|): each set beyond the first adds
    every layer's attention (with its q/k norms), FFN and two norms, and a final norm."""
    attn = 4 * D * D + (2 * norm_size(norm, D // HEADS) if qk_norm else 0)
    ffn = 3 * D * HIDDEN
    return (n_groups - 1) * (LAYERS * (attn + ffn + 2 * norm_size(norm, D)) + norm_size(norm, D))


@pytest.mark.parametrize("norm,qk_norm", [("rmsnorm", False), ("layernorm", True)])
@pytest.mark.parametrize("name", list(PLANS))
def test_extra_parameters_over_dense_are_one_set_per_group_beyond_the_first(name, norm, qk_norm):
    dense, model = make_model("dense", norm=norm, qk_norm=qk_norm), make_model(name, norm=norm, qk_norm=qk_norm)
    n_groups = {"mot": 3, "dense": 1}.get(name, 2)
    assert model.cfg.plan.n_groups == n_groups

    counted, counted_dense = counted_parameters(model, model.cfg), counted_parameters(dense, dense.cfg)
    assert counted["non_embedding"] - counted_dense["non_embedding"] == expected_extra(n_groups, norm, qk_norm)
    assert counted["total"] == sum(p.numel() for p in model.parameters())
    assert analytic_parameters(model.cfg)["total"] == counted["total"]
    assert analytic_parameters(model.cfg)["components"] == counted["components"]
    # every token, whatever its modality and the plan, passes through one dense model's worth of weights
    assert counted["per_modality"] == {m: counted_dense["non_embedding"] for m in MODALITIES}


def accounting_row(name: str, **model) -> dict:
    groups, untie = PLANS[name]
    run = RunSpec(study="test", setting="chameleon_speech", name=name, base_name=name, seed=0, arch=name,
                  ablation=name if name in MERGES else "none", modalities=MODALITIES, untie=untie, groups=groups,
                  moe=None, model={"d_model": D, "n_layers": LAYERS, "n_heads": HEADS, **model}, train={})
    return run_accounting(run, VOCAB.size, 32)


@pytest.mark.parametrize("name", ["mot", *MERGES])
def test_paper_formula_with_k_minus_1_as_parameter_sets_minus_1_gives_the_difference_to_dense(name):
    n_groups = plan_of(name).n_groups
    # real widths: whatever the FFN width and norms, the formula the accounting shows is the difference
    for model in ({"ffn_hidden": HIDDEN, "norm": "layernorm", "qk_norm": True}, {"ffn_hidden": D}):
        row, dense = accounting_row(name, **model), accounting_row("dense", **model)
        delta = row["params_total"] - dense["params_total"]
        assert row["paper_formulas"]["mot_extra_real_with_norms"] == delta
        assert row["paper_formulas"]["mot_extra_paper"] == LAYERS * 7 * (n_groups - 1) * D * D
    # the paper's D^2 form: with |ffn| = 3D^2 (FFN width D) it is the difference less the untied RMSNorms
    row, dense = accounting_row(name, ffn_hidden=D), accounting_row("dense", ffn_hidden=D)
    untied_norms = (n_groups - 1) * (2 * LAYERS + 1) * D
    assert row["params_total"] - dense["params_total"] - untied_norms == row["paper_formulas"]["mot_extra_paper"]
    assert paper_formulas(make_model(name, ffn_hidden=D).cfg, n_groups)["mot_extra_paper"] \
        == row["paper_formulas"]["mot_extra_paper"]


def test_accounting_table_shows_the_difference_to_dense_in_its_real_widths_column_for_merges():
    rows = [accounting_row(name, ffn_hidden=HIDDEN) for name in PLANS]
    table = format_table(rows)
    shown = {}
    for line in table.splitlines():
        found = re.match(r"chameleon_speech/(\S+) .* ([\d,]+) +MoT: 7\(K-1\)D\^2 per layer +([\d,]+) +([\d,]+)$", line)
        if found:
            shown[found[1]] = (found[2], found[4])  # (Δ dense, real widths)
    assert set(shown) == {"mot", *MERGES}
    for name, (delta, real) in shown.items():
        assert delta == real, f"{name}: Δ dense {delta} but the formula with real widths says {real}"


# --- merged modalities share one parameter set ---------------------------------------------

def mot_copy_of(merged: Transformer) -> Transformer:
    """The 3-set MoT model whose every modality's set is the merged model's set for that modality."""
    mot = make_model("mot", seed=99)
    plan = merged.cfg.plan
    sets = torch.tensor([plan.group_of_modality[modality_id(m)] for m in MODALITIES])
    with torch.no_grad():
        for p_mot, p_merged in zip(mot.parameters(), merged.parameters(), strict=True):
            p_mot.copy_(p_merged if p_mot.shape == p_merged.shape else p_merged.index_select(0, sets))
    return mot


def swap_modality(modality: torch.Tensor, source: int, target: int) -> torch.Tensor:
    """The same tokens at the same positions, with `source` modality ids relabelled `target`."""
    swapped = modality.clone()
    swapped[modality == source] = target
    return swapped


MERGED_PAIR = {"merge-text_image": (TEXT, IMAGE), "merge-image_speech": (IMAGE, SPEECH),
               "merge-text_speech": (TEXT, SPEECH)}


def train_a_few_steps(model: Transformer, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        tokens, modality = interleaved_batch(seed=10 + step, rows=4, length=16)
        logits = run_model(model, tokens, modality)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB.size), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", MERGES)
def test_tokens_of_the_two_merged_modalities_go_through_the_same_weights_before_and_after_training(name):
    first, second = MERGED_PAIR[name]
    other = ({TEXT, IMAGE, SPEECH} - {first, second}).pop()
    model = make_model(name)
    tokens, modality = interleaved_batch()
    untrained = [p.detach().clone() for p in model.parameters()]
    for trained in (False, True):
        if trained:
            train_a_few_steps(model)
            assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), untrained))
        with torch.no_grad():
            out = run_model(model, tokens, modality)
            # relabelling one merged modality as the other only changes which set is chosen: none
            assert torch.equal(run_model(model, tokens, swap_modality(modality, first, second)), out)
            assert torch.equal(run_model(model, tokens, swap_modality(modality, second, first)), out)
            # ... while relabelling the unmerged modality does change the output
            assert not torch.allclose(run_model(model, tokens, swap_modality(modality, other, first)), out)
            # and the merge is MoT whose two merged modalities' sets are copies of one another
            mot = mot_copy_of(model)
            torch.testing.assert_close(run_model(mot, tokens, modality), out, atol=1e-12, rtol=0)


def test_in_mot_the_same_relabelling_changes_the_output():
    model = make_model("mot")
    tokens, modality = interleaved_batch()
    with torch.no_grad():
        out = run_model(model, tokens, modality)
        for first, second in MERGED_PAIR.values():
            assert not torch.allclose(run_model(model, tokens, swap_modality(modality, first, second)), out)


# --- three modalities against the naive per-token reference --------------------------------

@pytest.mark.parametrize("name", ["mot", "merge-image_speech"])
def test_three_modality_model_matches_the_naive_per_token_reference(name):
    model = make_model(name)
    tokens, modality = interleaved_batch()
    probe = torch.randn(*tokens.shape, VOCAB.size, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    grads = assert_equals_reference(model, run_model(model, tokens, modality), tokens, modality, probe)
    for n in grads:
        if n.startswith("blocks.0.ffn"):  # every modality's set of the first FFN is trained by its tokens
            assert all(grads[n][g].abs().sum() > 0 for g in range(model.cfg.plan.n_groups)), n
