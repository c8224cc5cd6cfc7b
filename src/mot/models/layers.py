"""Grouped building blocks: each holds `n_sets` parameter sets and applies set g to the g-th
contiguous chunk of a modality-sorted token matrix. With one set they are ordinary layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mot.grouping import TokenGroups


def per_set(x: torch.Tensor, sizes: tuple[int, ...], n_sets: int, apply) -> torch.Tensor:
    """apply(chunk, g) over the chunks of x (rows sorted by set); one call when n_sets == 1."""
    if n_sets == 1:
        return apply(x, 0)
    return torch.cat([apply(chunk, g) for g, chunk in enumerate(x.split(sizes))], dim=0)


def _autocast_dtype(x: torch.Tensor):
    """The dtype autocast computes x's matmuls in on its device, None without autocast."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _grouped_mm_dtype(x: torch.Tensor):
    """bf16 when a sync-free grouped GEMM can run (CUDA + bf16 input or bf16 autocast), else None."""
    if not (x.is_cuda and hasattr(torch, "_grouped_mm")):
        return None
    dtype = _autocast_dtype(x) or x.dtype
    return dtype if dtype == torch.bfloat16 else None


class _ChunkedMM(torch.autograd.Function):
    """x [N, d_in] (rows sorted by set) @ weight[g] for each set's chunk, written into one output.

    The same maths as `per_set` with `chunk @ weight[g]`, without its extra memory traffic: no `cat` of the
    chunks (forward or backward) and no per-set `select` backward, which zero-fills a whole
    [n_sets, d_in, d_out] buffer per set and adds them. Eager only: under torch.compile the plain
    `per_set` graph is traced instead, and inductor fuses it."""

    @staticmethod
    def forward(ctx, x, weight, sizes):
        ctx.save_for_backward(x, weight)
        ctx.sizes = sizes
        out = x.new_empty(x.shape[0], weight.shape[2])
        for g, (chunk, out_chunk) in enumerate(zip(x.split(sizes), out.split(sizes))):
            torch.mm(chunk, weight[g], out=out_chunk)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_x_chunks = grad_x.split(ctx.sizes) if grad_x is not None else [None] * len(ctx.sizes)
        for g, (chunk, grad_chunk, grad_x_chunk) in enumerate(zip(x.split(ctx.sizes), grad.split(ctx.sizes),
                                                                  grad_x_chunks)):
            if grad_x_chunk is not None:
                torch.mm(grad_chunk, weight[g].t(), out=grad_x_chunk)
            if grad_w is not None:
                torch.mm(chunk.t(), grad_chunk, out=grad_w[g])
        return grad_x, grad_w, None


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, groups) -> torch.Tensor:
    """x [N, d_in] (rows sorted by set) @ weight[set] [n_sets, d_in, d_out]: one grouped GEMM on a GPU
    in bf16 (device offsets, no sync), else one matmul per set's chunk (host sizes)."""
    if weight.shape[0] == 1:
        return x @ weight.squeeze(0)  # a view: its backward is a reshape, not a zero-filled select
    dtype = _grouped_mm_dtype(x)
    if dtype is not None and groups.offsets is not None:
        return torch._grouped_mm(x.to(dtype), weight.to(dtype), offs=groups.offsets)
    if torch.compiler.is_compiling():
        return per_set(x, groups.sizes, weight.shape[0], lambda chunk, g: chunk @ weight[g])
    dtype = _autocast_dtype(x) or torch.promote_types(x.dtype, weight.dtype)  # what `@` would compute in
    return _ChunkedMM.apply(x.to(dtype), weight.to(dtype), tuple(groups.sizes))


class GroupedLinear(nn.Module):
    """Bias-free linear layer with one [d_in, d_out] weight per parameter set."""

    def __init__(self, n_sets: int, d_in: int, d_out: int):
        super().__init__()
        self.n_sets = n_sets
        self.weight = nn.Parameter(torch.empty(n_sets, d_in, d_out))

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        return grouped_matmul(x, self.weight, groups)


class GroupedNorm(nn.Module):
    """RMSNorm or LayerNorm with one affine parameter set per modality group."""

    def __init__(self, n_sets: int, dim: int, kind: str = "rmsnorm", eps: float = 1e-5):
        super().__init__()
        self.n_sets, self.kind, self.eps, self.dim = n_sets, kind, eps, dim
        self.weight = nn.Parameter(torch.ones(n_sets, dim))
        self.bias = nn.Parameter(torch.zeros(n_sets, dim)) if kind == "layernorm" else None

    def norm_set(self, x: torch.Tensor, g: int) -> torch.Tensor:
        weight = self.weight.squeeze(0) if self.n_sets == 1 else self.weight[g]
        bias = None if self.bias is None else self.bias.squeeze(0) if self.n_sets == 1 else self.bias[g]
        if self.kind == "rmsnorm":
            return F.rms_norm(x, (self.dim,), weight, self.eps)
        return F.layer_norm(x, (self.dim,), weight, bias, self.eps)

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        if self.n_sets == 1 or torch.compiler.is_compiling():
            return per_set(x, groups.sizes, self.n_sets, self.norm_set)
        # one normalisation over every row, then each set's affine on its chunk
        if self.kind == "rmsnorm":
            normed = F.rms_norm(x, (self.dim,), None, self.eps)
        else:
            normed = F.layer_norm(x, (self.dim,), None, None, self.eps)
        bias = None if self.bias is None else self.bias.to(normed.dtype)
        return _ChunkedAffine.apply(normed, self.weight.to(normed.dtype), bias, tuple(groups.sizes))


class _ChunkedAffine(torch.autograd.Function):
    """y * weight[g] (+ bias[g]) on each set's chunk of rows [N, ..., dim], into one output (no cat, no
    per-set select backward)."""

    @staticmethod
    def forward(ctx, y, weight, bias, sizes):
        ctx.save_for_backward(y, weight)
        ctx.sizes, ctx.has_bias = sizes, bias is not None
        out = torch.empty_like(y)
        for g, (chunk, out_chunk) in enumerate(zip(y.split(sizes), out.split(sizes))):
            torch.mul(chunk, weight[g], out=out_chunk)
            if bias is not None:
                out_chunk.add_(bias[g])
        return out

    @staticmethod
    def backward(ctx, grad):
        y, weight = ctx.saved_tensors
        dim = weight.shape[-1]
        grad_y, grad_w = torch.empty_like(y), torch.empty_like(weight)
        grad_b = torch.empty_like(weight) if ctx.has_bias else None
        for g, (chunk, grad_chunk, grad_y_chunk) in enumerate(zip(y.split(ctx.sizes), grad.split(ctx.sizes),
                                                                  grad_y.split(ctx.sizes))):
            torch.mul(grad_chunk, weight[g], out=grad_y_chunk)
            torch.sum((grad_chunk * chunk).reshape(-1, dim), dim=0, out=grad_w[g])
            if grad_b is not None:
                torch.sum(grad_chunk.reshape(-1, dim), dim=0, out=grad_b[g])
        return grad_y, grad_w, grad_b, None


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


class SwiGLU(nn.Module):
    """SwiGLU feed-forward with `n_sets` independent weight sets (experts or modality groups)."""

    def __init__(self, n_sets: int, d_model: int, hidden: int):
        super().__init__()
        self.n_sets = n_sets
        self.w_gate = nn.Parameter(torch.empty(n_sets, d_model, hidden))
        self.w_up = nn.Parameter(torch.empty(n_sets, d_model, hidden))
        self.w_down = nn.Parameter(torch.empty(n_sets, hidden, d_model))

    def apply_set(self, x: torch.Tensor, g: int) -> torch.Tensor:
        return swiglu(x, self.w_gate[g], self.w_up[g], self.w_down[g])

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        h = F.silu(grouped_matmul(x, self.w_gate, groups)) * grouped_matmul(x, self.w_up, groups)
        return grouped_matmul(h, self.w_down, groups)


class MoEFFN(nn.Module):
    """Mixture of SwiGLU experts with a learned router: top-1 token choice (Switch, with the
    load-balancing loss) or expert choice (each expert takes its top-capacity tokens)."""

    def __init__(self, d_model: int, hidden: int, experts: int, routing: str, capacity_factor: float):
        super().__init__()
        self.experts, self.routing, self.capacity_factor = experts, routing, capacity_factor
        self.router = nn.Parameter(torch.empty(d_model, experts))
        self.ffn = SwiGLU(experts, d_model, hidden)
        self.last_aux_loss: torch.Tensor | None = None
        self.last_load: torch.Tensor | None = None  # fraction of tokens per expert (device tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        probs = torch.softmax((x @ self.router).float(), dim=-1)
        if self.routing == "expert_choice":
            return self._expert_choice(x, probs)
        return self._top1(x, probs)

    def _top1(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        gate, expert = probs.max(dim=-1)
        order = torch.argsort(expert, stable=True)
        # scatter_add, not bincount: bincount on a GPU reads the max back to size its output (a sync)
        counts = torch.zeros(self.experts, dtype=torch.long, device=x.device).scatter_add_(
            0, expert, torch.ones_like(expert))
        load = counts.float() / x.shape[0]
        self.last_load = load.detach()
        self.last_aux_loss = self.experts * (load * probs.mean(dim=0)).sum()
        x_sorted = x[order]
        # a GPU in bf16 takes device offsets (no sync); elsewhere the split sizes are read on the host
        sizes = None if _grouped_mm_dtype(x) is not None else tuple(counts.tolist())
        y_sorted = self.ffn(x_sorted, TokenGroups(sizes=sizes, offsets=torch.cumsum(counts, 0).to(torch.int32)))
        y = torch.empty_like(y_sorted)
        y[order] = y_sorted
        return y * gate.unsqueeze(-1).to(y.dtype)

    def _expert_choice(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        n_tokens = x.shape[0]
        capacity = min(n_tokens, max(1, math.ceil(self.capacity_factor * n_tokens / self.experts)))
        gate, token_index = probs.t().topk(capacity, dim=-1)  # [experts, capacity]
        out = torch.zeros_like(x)
        for e in range(self.experts):
            y = self.ffn.apply_set(x[token_index[e]], e) * gate[e].unsqueeze(-1).to(x.dtype)
            out = out.index_add(0, token_index[e], y)
        self.last_load = torch.full((self.experts,), capacity / n_tokens, device=x.device)
        self.last_aux_loss = probs.new_zeros(())
        return out


class GroupedFFN(nn.Module):
    """One FFN per parameter set; each is a plain SwiGLU or an MoE, as the plan says."""

    def __init__(self, n_sets: int, d_model: int, hidden: int, moe_sets: tuple[bool, ...], moe_cfg=None):
        super().__init__()
        self.n_sets = n_sets
        self.moe_sets = moe_sets
        if not any(moe_sets):
            self.dense = SwiGLU(n_sets, d_model, hidden)
        else:
            self.blocks = nn.ModuleList([
                MoEFFN(d_model, hidden, moe_cfg.experts, moe_cfg.routing, moe_cfg.capacity_factor)
                if is_moe else SwiGLU(1, d_model, hidden)
                for is_moe in moe_sets
            ])

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:
        if not any(self.moe_sets):
            return self.dense(x, groups)
        return per_set(x, groups.sizes, self.n_sets, self.apply_set)

    def apply_set(self, chunk: torch.Tensor, g: int) -> torch.Tensor:
        block = self.blocks[g]
        return block(chunk) if isinstance(block, MoEFFN) else block.apply_set(chunk, 0)

    def moe_blocks(self) -> list[MoEFFN]:
        return [b for b in getattr(self, "blocks", []) if isinstance(b, MoEFFN)]
