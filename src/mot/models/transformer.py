"""One decoder-only transformer for every architecture of the study.

The residual stream lives in modality-sorted order (`TokenGroups`), so each untied component is
a per-chunk matmul; only the attention core needs the sequence order back, and it is one global
causal attention over all tokens of all modalities, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from mot.models.attention import attend, sorted_causal_block_mask
from mot.models.layers import GroupedFFN, GroupedLinear, GroupedNorm
from mot.grouping import TokenGroups
from mot.models.plan import ParameterPlan


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    max_seq_len: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_hidden: int = 352
    norm: str = "rmsnorm"
    norm_placement: str = "pre"
    qk_norm: bool = False
    norm_eps: float = 1e-5
    init_std: float = 0.02
    plan: ParameterPlan = field(default_factory=ParameterPlan)
    image_patch_dim: int = 0  # > 0: continuous image patches in and out (Transfusion adapters)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def rotary_tables(max_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, hd]; cos/sin [B, T, hd/2] (rotate pairs of halves)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Per-layer key/value buffers for incremental decoding."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int, device, dtype):
        shape = (batch, n_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Block(nn.Module):
    """Attention + FFN + two norms, each with one parameter set per untied modality group."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        plan, d = cfg.plan, cfg.d_model
        self.cfg = cfg
        self.attn_norm = GroupedNorm(plan.n_sets("norm"), d, cfg.norm, cfg.norm_eps)
        self.qkv = GroupedLinear(plan.n_sets("attn"), d, 3 * d)
        self.out = GroupedLinear(plan.n_sets("attn"), d, d)
        if cfg.qk_norm:
            self.q_norm = GroupedNorm(plan.n_sets("attn"), cfg.head_dim, cfg.norm, cfg.norm_eps)
            self.k_norm = GroupedNorm(plan.n_sets("attn"), cfg.head_dim, cfg.norm, cfg.norm_eps)
        self.ffn_norm = GroupedNorm(plan.n_sets("norm"), d, cfg.norm, cfg.norm_eps)
        n_ffn = plan.n_sets("ffn")
        self.ffn = GroupedFFN(n_ffn, d, cfg.ffn_hidden, tuple(plan.ffn_is_moe(g) for g in range(n_ffn)), plan.moe)

    def attention(self, x: torch.Tensor, groups: TokenGroups, shape, rope, layer, cache, attn_mask) -> torch.Tensor:
        batch, seq = shape
        cfg = self.cfg
        qkv = self.qkv(x, groups)
        if cfg.qk_norm:
            q, k, v = qkv.split(cfg.d_model, dim=-1)
            qkv = torch.cat([self._qk(q, groups, self.q_norm), self._qk(k, groups, self.k_norm), v], dim=-1)
        if isinstance(attn_mask, SortedAttention):  # attention over the sorted rows: no permutation at all
            q, k, v = qkv.view(1, batch * seq, 3, cfg.n_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            y = attend(q, k, v, attn_mask.block_mask, is_causal=False)
            return self.out(y.transpose(1, 2).reshape(batch * seq, cfg.d_model), groups)
        qkv = groups.to_sequence(qkv)  # back to sequence order for the one global attention
        q, k, v = qkv.view(batch, seq, 3, cfg.n_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        is_causal = attn_mask is None
        if cache is not None:
            prefill = cache.length == 0
            k, v = cache.append(layer, k, v)
            if not prefill and attn_mask is None:
                is_causal = False  # one new token attends to every cached position
        y = attend(q, k, v, attn_mask, is_causal=is_causal and seq > 1)
        y = y.transpose(1, 2).reshape(batch * seq, cfg.d_model)
        y = groups.to_sorted(y)
        return self.out(y, groups)

    def _qk(self, t: torch.Tensor, groups: TokenGroups, norm: GroupedNorm) -> torch.Tensor:
        """Per-head norm of queries or keys, with each sorted chunk's own parameter set."""
        per_head = t.reshape(t.shape[0], self.cfg.n_heads, self.cfg.head_dim)
        return norm(per_head, groups).reshape(t.shape)

    def forward(self, x, groups, shape, rope, layer=0, cache=None, attn_mask=None):
        if self.cfg.norm_placement == "post":  # Chameleon-style: normalise each sub-layer's output
            x = x + self.attn_norm(self.attention(x, groups, shape, rope, layer, cache, attn_mask), groups)
            return x + self.ffn_norm(self.ffn(x, groups), groups)
        x = x + self.attention(self.attn_norm(x, groups), groups, shape, rope, layer, cache, attn_mask)
        return x + self.ffn(self.ffn_norm(x, groups), groups)


@dataclass
class SortedAttention:
    """The causal attention of a forward in modality-sorted order: the flex-attention block mask over the sorted
    tokens (same sample, causal by original position). RoPE uses the original positions."""

    block_mask: object


class ImageAdapters(nn.Module):
    """Transfusion's continuous image tokens: a latent patch enters through a linear projection plus
    an embedding of its diffusion timestep, and leaves through a linear head back to patch space."""

    def __init__(self, patch_dim: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.patch_in = nn.Linear(patch_dim, d_model)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.patch_out = nn.Linear(d_model, patch_dim)

    def embed(self, patches: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        from mot.models.diffusion import timestep_embedding  # it imports diffusers (seconds): Transfusion only

        dtype = self.patch_in.weight.dtype  # the data pipeline hands float32 patches to any model precision
        t = timestep_embedding(timesteps, self.d_model).to(dtype)
        return self.patch_in(patches.to(dtype)) + self.time_mlp(t)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.image = ImageAdapters(cfg.image_patch_dim, cfg.d_model) if cfg.image_patch_dim else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = GroupedNorm(cfg.plan.n_sets("norm"), cfg.d_model, cfg.norm, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rotary_tables(cfg.max_seq_len, cfg.head_dim)
        self.register_buffer("rope_cos", cos.float(), persistent=False)
        self.register_buffer("rope_sin", sin.float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2 and "norm" not in name:
                # residual-branch outputs scaled down with depth (GPT-2)
                scale = 1 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("out.weight", "w_down")) else 1.0
                nn.init.normal_(p, mean=0.0, std=std * scale)

    def moe_layers(self):
        return [m for block in self.blocks for m in block.ffn.moe_blocks()]

    def forward(self, tokens: torch.Tensor, groups: TokenGroups, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V]. `groups` sorts the B*T tokens by parameter set."""
        batch, seq = tokens.shape
        return self.head(self.hidden(tokens, groups, positions, cache, attn_mask)).view(batch, seq, -1)

    def hidden(self, tokens: torch.Tensor, groups: TokenGroups, positions: torch.Tensor | None = None,
               cache: KVCache | None = None, attn_mask: torch.Tensor | None = None,
               image_embeds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Final hidden states [B*T, d] in sequence order. image_embeds = (flat positions [N], embeddings
        [N, d]) replaces those positions' token embeddings (Transfusion's continuous patches)."""
        batch, seq = tokens.shape
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + seq, device=tokens.device).expand(batch, seq)
        if self.attends_in_sorted_order(tokens, groups, cache, attn_mask):
            flat = groups.perm  # sorted row -> flat (b * T + t) index
            original = positions.reshape(-1)[flat]
            attn_mask = SortedAttention(sorted_causal_block_mask(torch.div(flat, seq, rounding_mode="floor"), original))
            rope = (self.rope_cos[original][None], self.rope_sin[original][None])
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.embed(tokens).reshape(batch * seq, -1)
        if image_embeds is not None:
            index, embeds = image_embeds
            x = x.index_copy(0, index, embeds.to(x.dtype))
        x = groups.to_sorted(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, groups, (batch, seq), rope, layer, cache, attn_mask)
        x = self.final_norm(x, groups)
        x = groups.to_sequence(x)
        if cache is not None:
            cache.length += seq
        return x

    # attention in modality-sorted order (flex attention over the sorted rows: no row permutations) for causal
    # forwards without a KV cache; train.sorted_attention turns it on. Flex attention has no CPU backward in this
    # torch, so on CPU only the forward runs (tests check it against the sequence-order path); opt-in until it has
    # been measured on a GPU (benchmarks/step_time.py --sorted-attention).
    sorted_attention: bool = False

    def attends_in_sorted_order(self, tokens, groups: TokenGroups, cache, attn_mask) -> bool:
        return self.sorted_attention and groups.perm is not None and cache is None and attn_mask is None

    def aux_loss(self) -> torch.Tensor | None:
        """Mean load-balancing loss of the MoE layers in the last forward (None without MoE)."""
        losses = [m.last_aux_loss for m in self.moe_layers() if m.last_aux_loss is not None]
        return torch.stack(losses).mean() if losses else None

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        p = next(self.parameters())
        return KVCache(self.cfg.n_layers, batch, self.cfg.n_heads, max_len or self.cfg.max_seq_len,
                       self.cfg.head_dim, p.device, p.dtype)
