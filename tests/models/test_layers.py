"""The grouped layers' single-pass autograd functions equal a plain loop over each set's chunk, forward and
gradients, in float64; including a set with no tokens, layer norm with biases and per-head (q/k) norms."""

import pytest
import torch
import torch.nn.functional as F

from mot.grouping import TokenGroups
from mot.models.layers import GroupedLinear, GroupedNorm


def loop_reference(x, sizes, apply):
    return torch.cat([apply(chunk, g) for g, chunk in enumerate(x.split(sizes))])


def grads_of(out, probe, tensors):
    return torch.autograd.grad((out * probe).sum(), tensors)


@pytest.mark.parametrize("sizes", [(5, 9, 3), (0, 11, 6), (17, 0, 0)])
def test_grouped_linear_equals_one_matmul_per_chunk(sizes):
    torch.manual_seed(0)
    layer = GroupedLinear(3, 8, 12).double()
    torch.nn.init.normal_(layer.weight)
    x = torch.randn(sum(sizes), 8, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(sum(sizes), 12, dtype=torch.float64)

    out = layer(x, TokenGroups(sizes=sizes))
    ref = loop_reference(x, sizes, lambda chunk, g: chunk @ layer.weight[g])

    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    for got, want in zip(grads_of(out, probe, (x, layer.weight)), grads_of(ref, probe, (x, layer.weight))):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("shape", [(6,), (3, 4)])  # a model norm [N, d] and a per-head q/k norm [N, H, hd]
def test_grouped_norm_equals_one_affine_norm_per_chunk(kind, shape):
    torch.manual_seed(1)
    sizes = (7, 0, 5)
    norm = GroupedNorm(3, shape[-1], kind, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.add_(torch.randn_like(norm.weight))
        if norm.bias is not None:
            norm.bias.add_(torch.randn_like(norm.bias))
    x = torch.randn(sum(sizes), *shape, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(sum(sizes), *shape, dtype=torch.float64)
    params = (x, norm.weight) + (() if norm.bias is None else (norm.bias,))

    def one_set(chunk, g):
        if kind == "rmsnorm":
            return chunk / torch.sqrt((chunk * chunk).mean(-1, keepdim=True) + 1e-5) * norm.weight[g]
        return F.layer_norm(chunk, (shape[-1],), norm.weight[g], norm.bias[g], 1e-5)

    out = norm(x, TokenGroups(sizes=sizes))
    ref = loop_reference(x, sizes, one_set)

    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    for got, want in zip(grads_of(out, probe, params), grads_of(ref, probe, params)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_grouped_layers_follow_cpu_autocast_like_a_plain_matmul():
    layer = GroupedLinear(2, 8, 4)
    x = torch.randn(6, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, TokenGroups(sizes=(2, 4)))
        plain = x @ layer.weight[0]
    assert out.dtype == plain.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
