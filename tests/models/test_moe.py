"""MoE-4x: top-1 token choice gives every token exactly one expert, expert choice fills every
expert to capacity, and the load-balancing loss is the Switch formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from mot.models.layers import MoEFFN


def make_moe(routing, capacity_factor=1.0):
    torch.manual_seed(0)
    moe = MoEFFN(d_model=8, hidden=12, experts=4, routing=routing, capacity_factor=capacity_factor).double()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return moe


def expert_output(moe, x, e):
    f = moe.ffn
    return (F.silu(x @ f.w_gate[e]) * (x @ f.w_up[e])) @ f.w_down[e]


def test_top1_sends_every_token_to_exactly_its_argmax_expert():
    moe = make_moe("top1")
    x = torch.randn(37, 8, dtype=torch.float64)
    out = moe(x)
    probs = torch.softmax(x @ moe.router, dim=-1)
    for i in range(len(x)):
        e = int(probs[i].argmax())
        torch.testing.assert_close(out[i], probs[i, e] * expert_output(moe, x[i:i + 1], e)[0])
    counts = torch.bincount(probs.argmax(-1), minlength=4)
    torch.testing.assert_close(moe.last_load, counts.double() / 37, check_dtype=False)
    assert float(moe.last_load.sum()) == pytest.approx(1.0)
    # Switch load-balancing loss: E * sum_e (fraction routed to e) * (mean router prob of e)
    expected_aux = 4 * sum(float(counts[e]) / 37 * float(probs[:, e].mean()) for e in range(4))
    assert float(moe.last_aux_loss) == pytest.approx(expected_aux, rel=1e-6)


@pytest.mark.parametrize("capacity_factor", [1.0, 2.0])
def test_expert_choice_fills_each_expert_to_capacity(capacity_factor):
    moe = make_moe("expert_choice", capacity_factor)
    x = torch.randn(40, 8, dtype=torch.float64)
    out = moe(x)
    capacity = math.ceil(capacity_factor * 40 / 4)
    probs = torch.softmax(x @ moe.router, dim=-1)
    expected = torch.zeros_like(x)
    for e in range(4):
        chosen = probs[:, e].topk(capacity).indices  # each expert takes exactly `capacity` tokens
        assert len(set(chosen.tolist())) == capacity
        expected[chosen] += probs[chosen, e, None] * expert_output(moe, x[chosen], e)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(moe.last_load, torch.full((4,), capacity / 40.0, dtype=moe.last_load.dtype))


def test_empty_chunk_passes_through():
    moe = make_moe("top1")
    x = torch.zeros(0, 8, dtype=torch.float64)
    assert moe(x).shape == (0, 8)
