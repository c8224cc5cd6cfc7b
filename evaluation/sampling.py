"""Decoding from a trained model for evaluation: greedy image captioning with a KV cache."""

from __future__ import annotations

import numpy as np
import torch

from mot.data.sequences import Vocabulary
from mot.models.plan import group_tokens
from mot.models.transformer import Transformer


def _groups(model: Transformer, tokens: torch.Tensor, vocab: Vocabulary):
    plan = model.cfg.plan
    return group_tokens(vocab.modality_of(tokens.cpu()), plan.group_of_modality, plan.n_groups)


@torch.no_grad()
def greedy_captions(model: Transformer, vocab: Vocabulary, image_codes: np.ndarray, max_tokens: int,
                    batch_size: int, device, use_cache: bool = True) -> list[list[int]]:
    """Caption each image: `<bos> <boi> image <eoi>` then argmax text tokens until `<eos>`."""
    model.eval()
    captions: list[list[int]] = []
    for start in range(0, len(image_codes), batch_size):
        codes = torch.as_tensor(image_codes[start:start + batch_size], dtype=torch.long) + vocab.image_offset
        n = codes.shape[0]
        prefix = torch.cat([torch.tensor([[vocab.bos, vocab.boi]]).expand(n, 2), codes,
                            torch.full((n, 1), vocab.eoi)], dim=1)
        generated = _decode(model, vocab, prefix, max_tokens, device, use_cache)
        for row in generated.tolist():
            captions.append(row[: row.index(vocab.eos)] if vocab.eos in row else row)
    return captions


def _decode(model, vocab, prefix: torch.Tensor, max_tokens: int, device, use_cache: bool) -> torch.Tensor:
    n = prefix.shape[0]
    text_logits_mask = torch.full((vocab.size,), float("-inf"), device=device)
    text_logits_mask[: vocab.text_size] = 0.0  # a caption is text: never emit image codes
    sequence = prefix
    cache = model.new_cache(n, prefix.shape[1] + max_tokens) if use_cache else None
    step_input = prefix
    finished = torch.zeros(n, dtype=torch.bool)
    out = []
    for _ in range(max_tokens):
        inputs = step_input if use_cache else sequence
        logits = model(inputs.to(device), _groups(model, inputs, vocab).to(device), cache=cache)[:, -1]
        next_token = (logits + text_logits_mask).argmax(-1).cpu()
        next_token = torch.where(finished, torch.full_like(next_token, vocab.eos), next_token)
        out.append(next_token)
        finished |= next_token == vocab.eos
        sequence = torch.cat([sequence, next_token[:, None]], dim=1)
        step_input = next_token[:, None]
        if bool(finished.all()):
            break
    return torch.stack(out, dim=1)
