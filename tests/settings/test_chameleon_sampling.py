"""Decoding: guidance and top-k against hand-computed cases; the KV cache changes nothing."""

import numpy as np
import pytest
import torch

from mot.settings.chameleon import greedy_captions, sample_images
from mot.settings.decoding import guided_logits, sample_next, top_k_filter
from mot.vocabulary import Vocabulary
from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer

VOCAB = Vocabulary(text_size=20, image_codes=12, pad=0, bos=1, eos=2, boi=3, eoi=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), ("attn", "ffn", "norm"), None)
    m = Transformer(ModelConfig(vocab_size=VOCAB.size, max_seq_len=40, d_model=16, n_layers=2, n_heads=2,
                                ffn_hidden=24, plan=plan))
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)  # sharp, varied distributions
    return m.eval()


def test_guidance_is_uncond_plus_scale_times_difference():
    cond, uncond = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert guided_logits(cond, uncond, 3.0).tolist() == [[4.0, -2.0, -3.0]]  # 1 + 3*(2-1), 1 + 3*(0-1), 0 + 3*(-1)
    assert torch.equal(guided_logits(cond, uncond, 1.0), cond)
    assert torch.equal(guided_logits(cond, None, 5.0), cond)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0, 1.0]])
    kept = top_k_filter(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, None), logits)
    # with k = 1 sampling is the argmax whatever the temperature
    g = torch.Generator().manual_seed(0)
    assert all(int(sample_next(logits, 5.0, 1, g)) == 1 for _ in range(20))
    # sampled frequencies follow softmax(logits / T) over the kept entries
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sample_next(logits, 1.0, 2, g) for _ in range(4000)]).flatten()
    expected = torch.softmax(torch.tensor([3.0, 2.0]), 0)[0].item()
    assert (draws == 1).float().mean().item() == pytest.approx(expected, abs=0.03)
    assert set(draws.tolist()) == {1, 3}


def test_greedy_temperature_zero_is_argmax():
    assert int(sample_next(torch.tensor([[0.1, 0.9, 0.3]]), 0.0, None, torch.Generator())) == 1


def test_image_sampling_with_kv_cache_equals_without(model):
    prompts = [[5, 6, 7], [8, 9], [5, 6, 8], [10, 11]]
    kwargs = dict(image_tokens=9, temperature=1.0, top_k=5, cfg_scale=2.0, seed=3, batch_size=2, device="cpu")
    with_cache = sample_images(model, VOCAB, prompts, use_cache=True, **kwargs)
    without = sample_images(model, VOCAB, prompts, use_cache=False, **kwargs)
    assert torch.equal(with_cache, without)
    assert with_cache.shape == (4, 9) and int(with_cache.min()) >= 0 and int(with_cache.max()) < VOCAB.image_codes
    assert torch.equal(sample_images(model, VOCAB, prompts, use_cache=True, **kwargs), with_cache)  # seeded


def test_guidance_changes_samples(model):
    prompts = [[5, 6, 7]] * 4
    base = dict(image_tokens=9, temperature=0.0, top_k=None, seed=0, batch_size=4, device="cpu")
    assert not torch.equal(sample_images(model, VOCAB, prompts, cfg_scale=1.0, **base),
                           sample_images(model, VOCAB, prompts, cfg_scale=4.0, **base))


def test_greedy_captions_with_kv_cache_equal_without(model):
    codes = np.random.default_rng(0).integers(0, VOCAB.image_codes, size=(5, 9))
    a = greedy_captions(model, VOCAB, codes, max_tokens=6, batch_size=2, device="cpu", use_cache=True)
    b = greedy_captions(model, VOCAB, codes, max_tokens=6, batch_size=2, device="cpu", use_cache=False)
    assert a == b and len(a) == 5
    assert all(0 <= t < VOCAB.text_size and t != VOCAB.eos for caption in a for t in caption)
