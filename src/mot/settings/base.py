"""The interface between a setting's objective and the stages that check, plan, train, evaluate and report it.

A setting (`chameleon`, `chameleon_speech`, `transfusion`, or one of a researcher's own) is one module
that binds its `Objective` subclass to the name `OBJECTIVE` (found by mot.settings.registry). The class
declares what is true of the setting (its modalities, tokenizers, tokenized files, sequence kinds, the
paper's numbers) and owns what differs between settings: the vocabulary and model adapters, the sequence
builder, the loss, and the samplers evaluation scores. The config checks, the DAG, training, evaluation
and the report read only this interface, never `if setting == ...`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from mot.config.files import deep_merge
from mot.config.grid import RunSpec
from mot.data.sequences import Batch, TokenizedSplit
from mot.data.token_shards import ShardRows
from mot.grouping import MODALITIES
from mot.models.factory import build_model
from mot.models.transformer import Transformer
from mot.paths import StudyPaths
from mot.vocabulary import Vocabulary


class Sequences(Protocol):
    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch: ...

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]: ...


class Objective:
    """One setting's facts, training objective and samplers. Subclasses fill in the abstract parts."""

    # --- what is true of the setting (read before any job: config checks, fingerprints, the DAG) ---------

    name = ""
    modalities: tuple[str, ...] = ()        # exactly the setting's settings.{name}.modalities
    tokenizers: tuple[str, ...] = ()        # the `tokenizers:` sections its tokenized data depends on
    token_files: tuple[str, ...] = ()       # StudyPaths attributes: the tokenized data its runs read
    config_sections: tuple[str, ...] = ()   # further top-level config sections its runs read
    # the sequence kinds its sequences.mixture may weight, each with the token source it draws rows from
    sequence_sources: dict[str, str] = {"image_text": "image_text"}
    draws_streams = False                   # can draw training rows in seeded streams from token shards
    # the paper's numbers for its headline comparison (MoT vs dense): {loss: {metric: value}}
    paper: dict[str, dict[str, float]] = {}

    @classmethod
    def loss_definition(cls, config: dict, loss: str) -> tuple:
        """The config values (of a run's config, `with_run_overrides`) that define what its validation loss of
        `loss` measures: two runs' losses are compared only where these agree."""
        return ()

    @classmethod
    def external_paths(cls, config: dict) -> Iterator[tuple[list, str]]:
        """(key path, value) of the files its runs read from outside results/ (checked before any job)."""
        return iter(())

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = set(cls.modalities) - set(MODALITIES)
        if unknown:
            raise TypeError(f"{cls.__name__}.modalities: {sorted(unknown)} not in {MODALITIES}")

    def __init__(self, config: dict, setting: str):
        self.config, self.setting = config, setting
        self.paths = StudyPaths.from_config(config)
        # the study's sequences section, overridden by the setting's (e.g. its own seq_len or mixture)
        self.sequences_cfg = deep_merge(config["sequences"], config["settings"][setting].get("sequences") or {})
        self.seq_len = self.sequences_cfg["seq_len"]
        self._vocab: Vocabulary | None = None
        self._splits: dict[str, TokenizedSplit] = {}

    # --- what the model is ------------------------------------------------------------------

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = self.load_vocabulary()
        return self._vocab

    def load_vocabulary(self) -> Vocabulary:
        raise NotImplementedError

    def expected_vocab_size(self) -> int:
        """The vocabulary implied by the config alone (accounting before any tokenizer is fitted)."""
        raise NotImplementedError

    def image_patch_dim(self) -> int:
        """Width of a continuous image patch (0: images are discrete tokens or absent)."""
        return 0

    def build_model(self, run: RunSpec, vocab_size: int | None = None) -> Transformer:
        return build_model(run, self.vocab.size if vocab_size is None else vocab_size, self.seq_len,
                           image_patch_dim=self.image_patch_dim())

    # --- training ---------------------------------------------------------------------------

    def sequences(self, split: str, model: Transformer) -> Sequences:
        raise NotImplementedError

    def loss(self, model: Transformer, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(the training loss, per-modality loss sums [len(MODALITIES)] over batch.target_counts)."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_loss(self, model: Transformer, batches: Iterable[Batch], device, modalities: Iterable[str],
                        autocast=None) -> dict[str, float]:
        """Target-weighted mean loss per modality over the whole split, in this process (several ranks reduce with
        torchmetrics in mot.train.distributed.validation_loss); one host read at the end."""
        model.eval()
        index = [MODALITIES.index(m) for m in modalities]
        sums, counts = torch.zeros(len(MODALITIES), dtype=torch.float64, device=device), [0] * len(MODALITIES)
        for batch in batches:
            batch = batch.to(device)
            with autocast or torch.autocast(device_type=torch.device(device).type, enabled=False):
                _, batch_sums = self.loss(model, batch)
            sums += batch_sums.double()
            counts = [a + b for a, b in zip(counts, batch.target_counts)]
        model.train()
        totals = sums.tolist()
        return {m: totals[i] / counts[i] for m, i in zip(modalities, index) if counts[i]}

    def extra_validation(self, model: Transformer, batch_size: int, score: Callable[[Iterable[Batch], tuple], dict],
                         limit: int | None = None) -> dict[str, float]:
        """Validation losses beyond the per-modality ones of the val sequences, by name (logged as
        `val/loss_{name}`), e.g. {"text_only": ...} when the mixture draws text-only rows. `score(batches,
        modalities)` is how the caller scores batches: validation_loss on the model, or through a parallel wrapper."""
        return {}

    def mixture_metrics(self, sequences: Sequences, n_batches: int, batch_size: int, seed: int) -> dict[str, float]:
        """What the training mixture realises over the first n_batches (`mixture/...` metrics); {} if not measured."""
        return {}

    # --- evaluation -------------------------------------------------------------------------

    def split(self, name: str) -> TokenizedSplit:
        """A tokenized split's captions (and VQ codes), loaded once."""
        if name not in self._splits:
            self._splits[name] = self.rows(name, "image_text", TokenizedSplit)
        return self._splits[name]

    def rows(self, split: str, source: str, cls):
        """A split's rows of one token source (image_text, text_only, speech) as `cls`: the npz loaded whole, or,
        for training with sequences.store: shards, read from the source's webdataset token shards as needed."""
        if split == "train" and self.sequences_cfg["store"] == "shards":
            rows = ShardRows(self.paths.token_shards(source), cache_shards=self.sequences_cfg["streams"] + 1)
            return cls(**{field: rows.field(field) for field in rows.manifest["fields"]})
        return cls.load(self.paths.source_rows(source, split))

    def streams(self, split: str) -> dict | None:
        """The stream sampler's settings of a training builder (sequences.sampling: streams), else None."""
        if split != "train" or self.sequences_cfg["sampling"] != "streams":
            return None
        return {"streams": self.sequences_cfg["streams"], "shard_rows": self.config["data"]["token_shard_rows"]}

    def eval_samples(self, split: str) -> int:
        """Number of samples (images with captions) in a tokenized split."""
        return len(self.split(split))

    def captions(self, model: Transformer, split: str, n: int, max_tokens: int, batch_size: int,
                 device) -> list[list[int]]:
        """Greedy caption token ids for the first n images of the split."""
        raise NotImplementedError

    def images(self, model: Transformer, prompts: list[list[int]], batch_size: int, device) -> np.ndarray:
        """Generated images (uint8 [N, H, W, 3]) for caption token lists, with the eval config's guidance."""
        raise NotImplementedError

    def random_images(self, n: int, seed: int) -> np.ndarray:
        """Images decoded from random tokenizer inputs: the FID of an untrained generator (a baseline)."""
        raise NotImplementedError
