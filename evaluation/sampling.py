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
    stream = _Stream(model, vocab, prefix, max_tokens, device, use_cache)
    finished = torch.zeros(prefix.shape[0], dtype=torch.bool)
    out = []
    for _ in range(max_tokens):
        # a caption is text: never emit image codes
        next_token = stream.logits()[:, : vocab.text_size].argmax(-1).cpu()
        next_token = torch.where(finished, torch.full_like(next_token, vocab.eos), next_token)
        out.append(next_token)
        finished |= next_token == vocab.eos
        stream.push(next_token)
        if bool(finished.all()):
            break
    return torch.stack(out, dim=1)


# --- text -> image: autoregressive image tokens after <boi>, with classifier-free guidance ------

def guided_logits(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + s * (cond - uncond); s = 1 is the conditional model."""
    if uncond is None or scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value kept), the rest -inf."""
    if not k or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(top_k_filter(logits.float() / temperature, top_k), dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1)


class _Stream:
    """One batch of prefixes decoded token by token (with or without a KV cache)."""

    def __init__(self, model, vocab, prefix: torch.Tensor, max_new: int, device, use_cache: bool):
        self.model, self.vocab, self.device, self.use_cache = model, vocab, device, use_cache
        self.sequence = prefix
        self.cache = model.new_cache(prefix.shape[0], prefix.shape[1] + max_new) if use_cache else None
        self.pending = prefix

    def logits(self) -> torch.Tensor:
        inputs = self.pending if self.use_cache else self.sequence
        return self.model(inputs.to(self.device), _groups(self.model, inputs, self.vocab).to(self.device),
                          cache=self.cache)[:, -1]

    def push(self, tokens: torch.Tensor) -> None:
        self.sequence = torch.cat([self.sequence, tokens[:, None]], dim=1)
        self.pending = tokens[:, None]


@torch.no_grad()
def sample_images(model: Transformer, vocab: Vocabulary, prompts: list[list[int]], image_tokens: int,
                  temperature: float, top_k: int | None, cfg_scale: float, seed: int, batch_size: int,
                  device, use_cache: bool = True) -> torch.Tensor:
    """Image codes [N, image_tokens] for caption token lists: `<bos> caption <boi>` then sampling over
    the image codes only; the unconditional branch is `<bos> <boi>` (captions dropped in training)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    codes = torch.zeros(len(prompts), image_tokens, dtype=torch.long)
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):  # equal-length prompts batch without padding
        by_length.setdefault(len(prompt), []).append(index)
    for length in sorted(by_length):
        indices = by_length[length]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            cond = torch.tensor([[vocab.bos, *prompts[i], vocab.boi] for i in chunk])
            streams = [_Stream(model, vocab, cond, image_tokens, device, use_cache)]
            if cfg_scale != 1.0:
                uncond = torch.tensor([[vocab.bos, vocab.boi]]).expand(len(chunk), 2)
                streams.append(_Stream(model, vocab, uncond, image_tokens, device, use_cache))
            for position in range(image_tokens):
                image_logits = [s.logits()[:, vocab.image_offset:vocab.image_offset + vocab.image_codes] for s in streams]
                logits = guided_logits(image_logits[0], image_logits[1] if len(streams) > 1 else None, cfg_scale)
                code = sample_next(logits, temperature, top_k, generator).cpu()
                codes[chunk, position] = code
                for s in streams:
                    s.push(code + vocab.image_offset)
    return codes
