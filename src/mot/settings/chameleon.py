"""Chameleon: one next-token objective over text tokens and discrete (VQ) image tokens.

A training sequence is either generation `<bos> caption <boi> image <eoi> <eos>` or captioning
`<bos> <boi> image <eoi> caption <eos>` (mixed by `sequences.captioning_fraction`); generation
drops its caption with `sequences.caption_dropout` for classifier-free guidance. With
`sequences.mixture.text_only` > 0 a text-only row (a document's `<bos> text <eos>`, cut to the row
length) is drawn instead by that weight against `image_text`, as Chameleon pretrains mostly on
text-only data; `val/loss_text` stays the caption tokens' loss and `val/loss_text_only` is the
text-only val split's. Captions are
decoded greedily after `<bos> <boi> image <eoi>`; images are sampled code by code after
`<bos> caption <boi>` with guidance against `<bos> <boi>`, then decoded by the VQ-VAE.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mot.data.sequences import IGNORE, Batch, TextChunks, TokenizedSplit, collate_token_rows
from mot.data.token_shards import StreamPlan, allocate_streams, shard_sizes
from mot.grouping import MODALITIES
from mot.settings.base import Objective
from mot.settings.decoding import (TokenStream, batches_by_length, greedy_text, guided_logits,
                                   sample_next)
from mot.settings.mixture import mixture_metrics, realised_mixture
from mot.tokenizers.image_vq import VQVAE
from mot.vocabulary import Vocabulary, load_vocabulary


class ChameleonSequences:
    """Builds fixed-length next-token batches from a tokenized split (and text-only rows, by the mixture)."""

    base_kinds: tuple[str, ...] = ("image_text",)  # the kinds drawn without extra data; text_only is added to them

    def __init__(self, split: TokenizedSplit, vocab: Vocabulary, seq_len: int, captioning_fraction: float,
                 group_of_modality: Sequence[int], n_groups: int, caption_dropout: float = 0.0, *,
                 mixture: dict[str, float] | None = None, text_only: TextChunks | None = None,
                 streams: dict | None = None):
        """streams (sequences.sampling: streams): {"streams": n, "shard_rows": rows per (virtual) shard}."""
        self.split, self.vocab, self.seq_len = split, vocab, seq_len
        self.streams_cfg, self._plans = streams, {}
        self.captioning_fraction, self.caption_dropout = captioning_fraction, caption_dropout
        self.group_of_modality, self.n_groups = tuple(group_of_modality), n_groups
        mixture = {"image_text": 1.0} if mixture is None else mixture
        self.text_only = text_only
        self.kinds = self.base_kinds + (("text_only",) if mixture.get("text_only", 0) > 0 else ())
        if "text_only" in self.kinds and not text_only:
            raise ValueError("sequences.mixture.text_only > 0 needs the tokenized text-only rows (mot tokenize-text)")
        weights = np.array([float(mixture.get(kind, 0.0)) for kind in self.kinds])
        self.mixture = weights / weights.sum()

    def sequence(self, index: int, slot: int, captioning: bool, drop_caption: bool = False) -> np.ndarray:
        """drop_caption gives the unconditional generation sequence `<bos> <boi> image <eoi> <eos>` (for CFG)."""
        v = self.vocab
        image = self.split.image_codes[index].astype(np.int64) + v.image_offset
        caption = self.split.caption(index, slot).astype(np.int64)[: 0 if drop_caption else None]
        if captioning:
            parts = ([v.bos, v.boi], image, [v.eoi], caption, [v.eos])
        else:
            parts = ([v.bos], caption, [v.boi], image, [v.eoi, v.eos])
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])

    def collate(self, sequences: list[np.ndarray]) -> Batch:
        return collate_token_rows(sequences, self.seq_len, self.vocab.pad, self.vocab.modality_of,
                                  self.group_of_modality, self.n_groups)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One training sequence drawn with the step's generator."""
        return self.draw_with_kind(rng)[1]

    def draw_with_kind(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(kind, sequence): the kind by the mixture (no draw when there is one kind, so an image-text-only
        stream is what it was before mixtures), then a sequence of that kind."""
        kind = self.kinds[0] if len(self.kinds) == 1 else self.kinds[int(rng.choice(len(self.kinds), p=self.mixture))]
        return kind, self.draw_kind(kind, rng)

    def draw_kind(self, kind: str, rng: np.random.Generator) -> np.ndarray:
        return self.sequence_at(kind, int(rng.integers(0, len(self.source(kind)))), rng)

    def draw_image_text(self, rng: np.random.Generator) -> np.ndarray:
        return self.draw_kind("image_text", rng)

    def source(self, kind: str):
        """The rows a kind's sequences are built from (a sample's index runs over them)."""
        return self.text_only if kind == "text_only" else self.split

    def source_name(self, kind: str) -> str:
        return kind

    def sequence_at(self, kind: str, index: int, rng: np.random.Generator) -> np.ndarray:
        """A training sequence of `kind` from source row `index`; its other choices (caption, direction) from rng."""
        if kind == "text_only":
            return self.text_only.row(index)
        slot = int(rng.integers(0, self.split.n_captions(index)))
        captioning = bool(rng.random() < self.captioning_fraction)
        drop = not captioning and bool(rng.random() < self.caption_dropout)
        return self.sequence(index, slot, captioning, drop)

    def stream_plan(self, batch_size: int, seed: int):
        key = (batch_size, seed)
        if key not in self._plans:
            cfg = self.streams_cfg
            kinds = allocate_streams(dict(zip(self.kinds, self.mixture)), cfg["streams"])
            sizes = {self.source_name(k): shard_sizes(len(self.source(k)), cfg["shard_rows"]) for k in kinds}
            self._plans[key] = StreamPlan(kinds, {k: self.source_name(k) for k in kinds}, sizes, batch_size, seed)
        return self._plans[key]

    def rows_with_kind(self, step: int, batch_size: int, seed: int, rows: range | None = None):
        """(kind, sequence) of each row of step's global batch (or of `rows` of it), a pure function of (seed, step).
        iid: each row's kind, sample and choices drawn in turn from one generator of (seed, step). streams: row j
        from the stream plan, its choices from a generator of (seed, step, j), so any rank builds its rows alone."""
        if self.streams_cfg is None:
            if rows is not None:
                raise ValueError("building only some rows of a batch needs sequences.sampling: streams")
            rng = np.random.default_rng([seed, step])
            for _ in range(batch_size):
                yield self.draw_with_kind(rng)
            return
        plan = self.stream_plan(batch_size, seed)
        for j in range(batch_size) if rows is None else rows:
            kind, index = plan.row(step, j)
            yield kind, self.sequence_at(kind, index, np.random.default_rng([seed, step, j]))

    def train_batch(self, step: int, batch_size: int, seed: int, rows: range | None = None) -> Batch:
        """The batch of a training step (or rows of it): a pure function of (seed, step), so a resumed run sees the
        same data."""
        return self.collate([row for _, row in self.rows_with_kind(step, batch_size, seed, rows)])

    def eval_sequences(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """Fixed order: sample i with caption i mod (its captions), directions alternating."""
        n = len(self.split) if limit is None else min(limit, len(self.split))
        for i in range(n):
            yield self.sequence(i, i % self.split.n_captions(i), captioning=bool(i % 2))

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        rows = list(self.eval_sequences(limit))
        for start in range(0, len(rows), batch_size):
            yield self.collate(rows[start:start + batch_size])


def next_token_loss_sums(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over every target token, per-modality loss sums [n_modalities]) without a host sync."""
    flat_targets = batch.targets.reshape(-1)
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_targets,
                                 ignore_index=IGNORE, reduction="none")
    sums = torch.zeros(len(MODALITIES), device=logits.device).index_add(
        0, batch.target_modality.reshape(-1), token_loss)
    return sums.sum() / max(1, sum(batch.target_counts)), sums


@torch.no_grad()
def greedy_captions(model, vocab: Vocabulary, image_codes: np.ndarray, max_tokens: int,
                    batch_size: int, device, use_cache: bool = True) -> list[list[int]]:
    """Caption each image: `<bos> <boi> image <eoi>` then argmax text tokens until `<eos>`."""
    model.eval()
    captions: list[list[int]] = []
    for start in range(0, len(image_codes), batch_size):
        codes = torch.as_tensor(image_codes[start:start + batch_size], dtype=torch.long) + vocab.image_offset
        n = codes.shape[0]
        prefix = torch.cat([torch.tensor([[vocab.bos, vocab.boi]]).expand(n, 2), codes,
                            torch.full((n, 1), vocab.eoi)], dim=1)
        captions += greedy_text(TokenStream(model, vocab, prefix, max_tokens, device, use_cache), vocab, max_tokens)
    return captions


@torch.no_grad()
def sample_images(model, vocab: Vocabulary, prompts: list[list[int]], image_tokens: int,
                  temperature: float, top_k: int | None, cfg_scale: float, seed: int, batch_size: int,
                  device, use_cache: bool = True) -> torch.Tensor:
    """Image codes [N, image_tokens] for caption token lists: `<bos> caption <boi>` then sampling over
    the image codes only; the unconditional branch is `<bos> <boi>` (captions dropped in training)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    codes = torch.zeros(len(prompts), image_tokens, dtype=torch.long)
    for chunk in batches_by_length(prompts, batch_size):
        cond = torch.tensor([[vocab.bos, *prompts[i], vocab.boi] for i in chunk])
        streams = [TokenStream(model, vocab, cond, image_tokens, device, use_cache)]
        if cfg_scale != 1.0:
            uncond = torch.tensor([[vocab.bos, vocab.boi]]).expand(len(chunk), 2)
            streams.append(TokenStream(model, vocab, uncond, image_tokens, device, use_cache))
        for position in range(image_tokens):
            image_logits = [s.logits()[:, vocab.image_offset:vocab.image_offset + vocab.image_codes] for s in streams]
            logits = guided_logits(image_logits[0], image_logits[1] if len(streams) > 1 else None, cfg_scale)
            code = sample_next(logits, temperature, top_k, generator).cpu()
            codes[chunk, position] = code
            for s in streams:
                s.push(code + vocab.image_offset)
    return codes


class ChameleonObjective(Objective):
    name = "chameleon"
    modalities = ("text", "image")
    tokenizers = ("text", "image_vq")
    token_files = ("tokens_stats",)
    sequence_sources = {"image_text": "image_text", "text_only": "text_only"}
    draws_streams = True
    # the paper's 7B headline: the fraction of dense's training MoT needs to match dense's final loss
    # (FLOPs per step match, so a FLOPs fraction is a steps fraction)
    paper = {"image": {"steps_frac": 0.558, "flops_frac": 0.558, "time_frac": 0.472},
             "text": {"steps_frac": 0.558, "flops_frac": 0.558, "time_frac": 0.756}}

    def __init__(self, config: dict, setting: str):
        super().__init__(config, setting)
        self._vq = None

    def load_vocabulary(self) -> Vocabulary:
        return load_vocabulary(self.paths.vocab)

    def expected_vocab_size(self) -> int:
        tok = self.config["tokenizers"]
        return tok["text"]["vocab_size"] + tok["image_vq"]["codebook_size"]

    @property
    def uses_text_only(self) -> bool:
        return self.sequences_cfg["mixture"].get("text_only", 0) > 0

    def text_chunks(self, split: str) -> TextChunks:
        """The split's tokenized text-only rows (train, val)."""
        return self.rows(split, "text_only", TextChunks)

    def mixture_and_text(self, split: str) -> dict:
        """The builder's mixture and text-only rows: training draws by the mixture; an eval builder (whose eval
        sequences are image–text, and speech) leaves text-only rows to extra_validation."""
        mixture = self.sequences_cfg["mixture"]
        if split == "train" and self.uses_text_only:
            return {"mixture": mixture, "text_only": self.text_chunks("train")}
        return {"mixture": {k: v for k, v in mixture.items() if k != "text_only"}, "text_only": None}

    def sequences(self, split: str, model) -> ChameleonSequences:
        seq, plan = self.sequences_cfg, model.cfg.plan
        return ChameleonSequences(self.split(split), self.vocab, self.seq_len, seq["captioning_fraction"],
                                  plan.group_of_modality, plan.n_groups,
                                  seq["caption_dropout"] if split == "train" else 0.0, **self.mixture_and_text(split),
                                  streams=self.streams(split))

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return next_token_loss_sums(model(batch.tokens, batch.groups, attn_mask=batch.attn_mask), batch)

    def extra_validation(self, model, batch_size: int, score, limit: int | None = None) -> dict[str, float]:
        """{"text_only": text loss over the text-only val rows (the first `limit`, fixed order)} when the mixture
        draws text-only rows; val/loss_text stays the image–text val sequences' caption tokens."""
        if not self.uses_text_only:
            return {}
        chunks, plan = self.text_chunks("val"), model.cfg.plan
        rows = [chunks.row(i) for i in range(len(chunks) if limit is None else min(limit, len(chunks)))]
        batches = (collate_token_rows(rows[start:start + batch_size], self.seq_len, self.vocab.pad,
                                      self.vocab.modality_of, plan.group_of_modality, plan.n_groups)
                   for start in range(0, len(rows), batch_size))
        losses = score(batches, ("text",))
        return {"text_only": losses["text"]} if "text" in losses else {}

    def mixture_metrics(self, sequences: ChameleonSequences, n_batches: int, batch_size: int,
                        seed: int) -> dict[str, float]:
        return mixture_metrics(realised_mixture(sequences, n_batches, batch_size, seed))

    @property
    def vq(self):
        if self._vq is None:
            self._vq = VQVAE.load(self.paths.image_tokenizer)
        return self._vq

    def captions(self, model, split: str, n: int, max_tokens: int, batch_size: int, device) -> list[list[int]]:
        return greedy_captions(model, self.vocab, self.split(split).image_codes[:n], max_tokens, batch_size, device)

    def images(self, model, prompts: list[list[int]], batch_size: int, device) -> np.ndarray:
        icfg = self.config["eval"]["images"]
        codes = sample_images(model, self.vocab, prompts, self.split(self.config["eval"]["split"]).image_codes.shape[1],
                              icfg["temperature"], icfg["top_k"], icfg["cfg_scale"], icfg["seed"], batch_size, device)
        return self.vq.decode(codes).numpy()

    def random_images(self, n: int, seed: int) -> np.ndarray:
        """Images decoded from uniformly random VQ codes."""
        image_tokens = self.split(self.config["eval"]["split"]).image_codes.shape[1]
        codes = np.random.default_rng(seed).integers(0, self.vq.cfg.codebook_size, size=(n, image_tokens))
        return self.vq.decode(torch.as_tensor(codes)).numpy()


OBJECTIVE = ChameleonObjective
