"""Transfusion: the image-block attention mask, its effect on gradients, the MoT model with continuous
image patches against a per-token reference, the loss, and a tiny model that overfits one batch."""

import numpy as np
import pytest
import torch

from mot.data.sequences import IGNORE, TokenizedSplit
from mot.grouping import group_tokens
from mot.models.diffusion import DiffusionSchedule
from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer
from mot.settings.transfusion import TransfusionSequences, image_block_mask, transfusion_loss
from mot.vocabulary import IMAGE, TEXT, Vocabulary
from tests.models.test_transformer import reference_hidden

VOCAB = Vocabulary(text_size=24, image_codes=0, pad=0, bos=1, eos=2, boi=3, eoi=4)
LATENT = (4, 4, 4)  # C, h, w -> patch 2: 4 patches of 16 values


def naive_mask(length: int, spans: list[tuple[int, int]]) -> torch.Tensor:
    """q may see k if k <= q, or if both lie in the same image span [start, end)."""
    mask = torch.zeros(length, length, dtype=torch.bool)
    for q in range(length):
        for k in range(length):
            same = any(start <= q < end and start <= k < end for start, end in spans)
            mask[q, k] = k <= q or same
    return mask


@pytest.mark.parametrize("spans", [[], [(3, 7)], [(1, 4), (6, 10)], [(0, 2), (9, 12)]])
def test_mask_equals_naive_reference_for_0_1_2_images(spans):
    image_ids = torch.full((1, 12), -1)
    for i, (start, end) in enumerate(spans):
        image_ids[0, start:end] = i
    assert torch.equal(image_block_mask(image_ids)[0, 0], naive_mask(12, spans))


def tiny_model(untie=("attn", "ffn", "norm"), seed=0, dtype=torch.float64, n_layers=2):
    torch.manual_seed(seed)
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), untie, None)
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_seq_len=32, d_model=16, n_layers=n_layers, n_heads=2,
                                    ffn_hidden=24, plan=plan, image_patch_dim=16)).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tiny_split(n=6, seed=0):
    rng = np.random.default_rng(seed)
    captions = np.full((n, 2, 5), -1)
    lengths = np.zeros((n, 2), dtype=int)
    for i in range(n):
        for j in range(2):
            k = 3 + (i + j) % 3
            captions[i, j, :k] = rng.integers(5, VOCAB.text_size, size=k)
            lengths[i, j] = k
    latents = rng.standard_normal((n, *LATENT)).astype(np.float32)
    return TokenizedSplit(np.zeros((n, 1), np.int16), captions, lengths, np.array([f"k{i}" for i in range(n)])), latents


def sequences(model, captioning_fraction=0.5, caption_dropout=0.0, prediction="epsilon"):
    split, latents = tiny_split()
    plan = model.cfg.plan
    return TransfusionSequences(split, latents, VOCAB, seq_len=14, captioning_fraction=captioning_fraction,
                                group_of_modality=plan.group_of_modality, n_groups=plan.n_groups, patch_size=2,
                                schedule=DiffusionSchedule(1000, "squaredcos_cap_v2", prediction),
                                caption_dropout=caption_dropout)


def test_layouts_targets_and_patch_positions():
    model = tiny_model()
    seqs = sequences(model)
    gen = seqs.collate([(0, seqs.layout(0, 0, captioning=False)), (1, seqs.layout(1, 0, captioning=True))],
                       torch.tensor([500, 7]), torch.zeros(2, 4, 16))
    cap_len = int(seqs.split.caption_lengths[0, 0])
    # generation: <bos> caption <boi> 4 patches <eoi> <eos>
    patch_rows = torch.nonzero(gen.input_modality[0] == IMAGE).squeeze(1).tolist()
    assert patch_rows == list(range(cap_len + 2, cap_len + 6))
    assert gen.targets[0, cap_len].item() == VOCAB.boi            # the caption's last token predicts <boi>
    assert (gen.targets[0, cap_len + 1: cap_len + 6] == IGNORE).all()  # <boi> and patches: no LM target
    # captioning: <bos> <boi> 4 patches <eoi> caption <eos>; <eoi> predicts the first caption token
    assert torch.nonzero(gen.input_modality[1] == IMAGE).squeeze(1).tolist() == [2, 3, 4, 5]
    assert gen.targets[1, 6].item() == seqs.split.caption(1, 0)[0]
    image = gen.image
    assert image.index.tolist() == [r for r in patch_rows] + [14 + p for p in (2, 3, 4, 5)]
    assert image.noised.tolist() == [True] * 4 + [False] * 4      # the captioning image is a clean condition
    assert image.timesteps.tolist() == [500] * 4 + [0] * 4
    assert gen.target_counts[IMAGE] == 4 and gen.target_counts[TEXT] == int((gen.targets != IGNORE).sum())
    assert torch.allclose(image.clean[:4], seqs.patches[0]) and torch.allclose(image.clean[4:], seqs.patches[1])


def test_train_batches_are_a_pure_function_of_seed_and_step():
    model = tiny_model()
    a, b = sequences(model).train_batch(3, 4, seed=1), sequences(model).train_batch(3, 4, seed=1)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.image.noise, b.image.noise)
    assert torch.equal(a.image.timesteps, b.image.timesteps)
    assert not torch.equal(a.image.noise, sequences(model).train_batch(4, 4, seed=1).image.noise)


def test_validation_batches_use_a_fixed_grid_of_timesteps_and_noise():
    model = tiny_model()
    first = [b.image for b in sequences(model).eval_batches(4)]
    again = [b.image for b in sequences(model).eval_batches(4)]
    assert all(torch.equal(x.noise, y.noise) and torch.equal(x.timesteps, y.timesteps) for x, y in zip(first, again))
    noised_t = torch.cat([x.timesteps[x.noised] for x in first]).unique()
    assert len(noised_t) > 1  # several noise levels, not one


def test_inside_an_image_attention_is_bidirectional_outside_nothing_sees_the_future():
    model = tiny_model(n_layers=1)
    seqs = sequences(model)
    batch = seqs.collate([(0, seqs.layout(0, 0, captioning=False))], torch.tensor([300]), torch.randn(1, 4, 16))
    seq = batch.tokens.shape[1]
    inputs = torch.randn(seq, 16, dtype=torch.float64, requires_grad=True)  # every position's input, a leaf
    hidden = model.hidden(batch.tokens, batch.groups, attn_mask=batch.attn_mask,
                          image_embeds=(torch.arange(seq), inputs))
    patches = torch.nonzero(batch.input_modality[0] == IMAGE).squeeze(1).tolist()
    for q in range(seq):
        (grad,) = torch.autograd.grad(hidden[q].sum(), inputs, retain_graph=True)
        seen = {k for k in range(seq) if grad[k].abs().sum() > 0}
        expected = set(range(q + 1)) | (set(patches) if q in patches else set())
        assert seen == expected, q


@pytest.mark.parametrize("untie", [("attn", "ffn", "norm"), ()])
def test_mot_transfusion_model_equals_per_token_reference_with_the_mask(untie):
    model = tiny_model(untie)
    seqs = sequences(model)
    batch = seqs.collate([(0, seqs.layout(0, 1, captioning=False)), (2, seqs.layout(2, 0, captioning=True))],
                         torch.tensor([250, 0]), torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(3)))
    image = batch.image
    embeds = model.image.embed(image.clean.double(), image.timesteps)
    hidden = model.hidden(batch.tokens, batch.groups, attn_mask=batch.attn_mask, image_embeds=(image.index, embeds))
    rows, seq = batch.tokens.shape
    inputs = [[None] * seq for _ in range(rows)]
    for i, flat in enumerate(image.index.tolist()):
        inputs[flat // seq][flat % seq] = embeds[i]
    mask = batch.attn_mask[:, 0]
    reference = reference_hidden(model, batch.tokens, batch.input_modality, inputs,
                                 visible=lambda b, t: torch.nonzero(mask[b, t]).squeeze(1).tolist())
    assert torch.allclose(hidden.view(rows, seq, -1), reference, atol=1e-5)
    probe = torch.randn_like(reference)
    grads = torch.autograd.grad((hidden.view(rows, seq, -1) * probe).sum(), list(model.parameters()), allow_unused=True,
                                retain_graph=True)
    ref_grads = torch.autograd.grad((reference * probe).sum(), list(model.parameters()), allow_unused=True)
    for g, r in zip(grads, ref_grads):
        if g is None or r is None:
            assert (g is None or not g.abs().sum()) and (r is None or not r.abs().sum())
        else:
            assert torch.allclose(g, r, atol=1e-5)


def test_diffusion_part_of_the_loss_is_zero_for_a_perfect_noise_predictor():
    model = tiny_model()
    seqs = sequences(model)
    batch = seqs.train_batch(0, 4, seed=0)

    class Oracle(torch.nn.Module):  # predicts exactly the noise each patch was drawn with
        def forward(self, hidden):
            return batch.image.noise.double()

    model.image.patch_out = Oracle()
    _, sums = transfusion_loss(model, batch, seqs.schedule, loss_weight=5.0)
    assert sums[IMAGE].item() == 0.0 and sums[TEXT].item() > 0


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_a_tiny_transfusion_model_overfits_one_batch(prediction):
    torch.set_num_threads(1)
    model = tiny_model(dtype=torch.float32)
    seqs = sequences(model, prediction=prediction)
    batch = seqs.train_batch(0, 6, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    counts = batch.target_counts

    @torch.no_grad()
    def losses():
        _, sums = transfusion_loss(model, batch, seqs.schedule, 1.0)
        return sums[TEXT] / counts[TEXT], sums[IMAGE] / counts[IMAGE]

    text0, image0 = (float(x) for x in losses())
    for _ in range(400):
        loss, _ = transfusion_loss(model, batch, seqs.schedule, 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    text1, image1 = (float(x) for x in losses())
    assert text1 < text0 / 10 and image1 < image0 / 10, (text0, text1, image0, image1)


def test_flex_attention_block_mask_equals_the_dense_mask_forward():
    """The GPU path (flex attention with a BlockMask) against the CPU path (SDPA with the dense mask);
    flex attention has no backward on CPU, so this checks the forward only."""
    from mot.models.attention import block_mask_from_dense

    model = tiny_model(dtype=torch.float32)
    seqs = sequences(model)
    batch = seqs.train_batch(0, 3, seed=2)
    image = batch.image
    embeds = model.image.embed(image.clean, image.timesteps)
    with torch.no_grad():
        dense = model.hidden(batch.tokens, batch.groups, attn_mask=batch.attn_mask, image_embeds=(image.index, embeds))
        flex = model.hidden(batch.tokens, batch.groups, attn_mask=block_mask_from_dense(batch.attn_mask),
                            image_embeds=(image.index, embeds))
    assert torch.allclose(dense, flex, atol=1e-5)
