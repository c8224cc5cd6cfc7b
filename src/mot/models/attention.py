"""The attention core: PyTorch SDPA with a dense boolean mask, or flex attention with a block mask.

Chameleon needs only causal attention (SDPA's flash path). Transfusion's mask is causal except inside
an image; a dense [B, 1, T, T] mask makes SDPA fall back to its math kernel, so on a GPU the mask is
turned into a flex-attention `BlockMask` (fully masked blocks skipped, one compiled kernel). Flex
attention has no backward on CPU in this torch, so the CPU keeps the dense mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

_compiled_flex = None


def block_mask_from_dense(mask: torch.Tensor) -> BlockMask:
    """[B, 1, T, T] bool (True = may attend) -> a flex-attention BlockMask on the mask's device."""
    dense = mask[:, 0]
    batch, q_len, kv_len = dense.shape

    def mask_mod(b, h, q, kv):
        return dense[b, q, kv]

    return create_block_mask(mask_mod, batch, None, q_len, kv_len, device=dense.device)


def sorted_causal_block_mask(sample: torch.Tensor, position: torch.Tensor) -> BlockMask:
    """Causal attention within each sample for tokens held in modality-sorted order (MoT's residual stream):
    sorted token i attends to j when both are in the same sample and j's position is not after i's. Attention
    then runs on the sorted rows themselves, without permuting them back to sequence order and again after."""
    n = sample.numel()

    def mask_mod(b, h, q, kv):
        return (sample[q] == sample[kv]) & (position[kv] <= position[q])

    return create_block_mask(mask_mod, 1, None, n, n, device=sample.device)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | BlockMask | None,
           is_causal: bool) -> torch.Tensor:
    """q [B, H, Tq, hd], k/v [B, H, Tk, hd] -> [B, H, Tq, hd]."""
    if isinstance(mask, BlockMask):
        global _compiled_flex
        if q.is_cuda:
            if _compiled_flex is None:
                _compiled_flex = torch.compile(flex_attention, dynamic=False)
            return _compiled_flex(q, k, v, block_mask=mask)
        return flex_attention(q, k, v, block_mask=mask)  # CPU: forward only (tests), unfused
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
