"""Decoding helpers every setting's samplers share: a batch of prefixes decoded token by token
(KV cache), greedy text decoding, classifier-free guidance, top-k / temperature sampling."""

from __future__ import annotations

from typing import Iterator

import torch

from mot.grouping import group_tokens
from mot.vocabulary import Vocabulary


def groups_for(model, modality_ids: torch.Tensor):
    """The host-side token grouping of a decoding step (modality ids on the CPU)."""
    plan = model.cfg.plan
    return group_tokens(modality_ids.cpu(), plan.group_of_modality, plan.n_groups)


def greedy_text(stream: "TokenStream", vocab: Vocabulary, max_tokens: int) -> list[list[int]]:
    """Argmax text tokens (never image codes or speech units) until `<eos>`, per row of the stream."""
    generated = _decode(stream, vocab, max_tokens)
    return [row[: row.index(vocab.eos)] if vocab.eos in row else row for row in generated.tolist()]


def _decode(stream: "TokenStream", vocab: Vocabulary, max_tokens: int) -> torch.Tensor:
    prefix = stream.sequence
    finished = torch.zeros(prefix.shape[0], dtype=torch.bool)
    out = []
    for _ in range(max_tokens):
        # a caption is text: never emit image codes or speech units
        next_token = stream.logits()[:, : vocab.text_size].argmax(-1).cpu()
        next_token = torch.where(finished, torch.full_like(next_token, vocab.eos), next_token)
        out.append(next_token)
        finished |= next_token == vocab.eos
        stream.push(next_token)
        if bool(finished.all()):
            break
    return torch.stack(out, dim=1)


def batches_by_length(prompts: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of equal-length prompts in chunks of batch_size: such prompts batch without padding."""
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    for length in sorted(by_length):
        indices = by_length[length]
        for start in range(0, len(indices), batch_size):
            yield indices[start:start + batch_size]


# --- sampling: classifier-free guidance, top-k, temperature ---------------------------------

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


class TokenStream:
    """One batch of prefixes decoded token by token (with or without a KV cache)."""

    def __init__(self, model, vocab: Vocabulary, prefix: torch.Tensor, max_new: int, device, use_cache: bool):
        self.model, self.vocab, self.device, self.use_cache = model, vocab, device, use_cache
        self.sequence = prefix
        self.cache = model.new_cache(prefix.shape[0], prefix.shape[1] + max_new) if use_cache else None
        self.pending = prefix

    def logits(self) -> torch.Tensor:
        inputs = self.pending if self.use_cache else self.sequence
        groups = groups_for(self.model, self.vocab.modality_of(inputs)).to(self.device)
        return self.model(inputs.to(self.device), groups, cache=self.cache)[:, -1]

    def push(self, tokens: torch.Tensor) -> None:
        self.sequence = torch.cat([self.sequence, tokens[:, None]], dim=1)
        self.pending = tokens[:, None]


