"""Chameleon + Speech: the Chameleon objective with a third modality of discrete speech units.

Speech units (k-means over log-mel frames, `mot.tokenizers.speech_units`) follow the text and image
ids in the one vocabulary and sit between `<bos_speech>` and `<eos_speech>`. Training mixes, by
`sequences.mixture`, the Chameleon image–text sequences with speech → text
`<bos> <bos_speech> units <eos_speech> transcript <eos>`, text → speech
`<bos> transcript <bos_speech> units <eos_speech> <eos>` and speech-only
`<bos> <bos_speech> units <eos_speech> <eos>`; the transcript is the caption the audio speaks. Text-only
rows (`text_only`) mix in as in Chameleon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mot.config import SPEECH_KINDS
from mot.settings.chameleon import ChameleonObjective, ChameleonSequences
from mot.vocabulary import Vocabulary

KINDS = ("image_text", *SPEECH_KINDS)  # text_only comes after these when its weight is > 0
SPEECH_TOKENS_STATS = "speech_stats.json"


@dataclass
class SpeechTokens:
    """Per sample of a split (same order as its images): speech unit ids and the spoken transcript's text ids."""

    units: np.ndarray              # [N, Lu] unit ids (no offset), padded with -1
    unit_lengths: np.ndarray       # [N]
    transcripts: np.ndarray        # [N, Lt] text ids, padded with -1
    transcript_lengths: np.ndarray  # [N]
    keys: np.ndarray

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **self.__dict__)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SpeechTokens":
        with np.load(path) as f:
            return cls(**{k: f[k] for k in ("units", "unit_lengths", "transcripts", "transcript_lengths", "keys")})

    def unit_ids(self, index: int) -> np.ndarray:
        return self.units[index, : self.unit_lengths[index]]

    def transcript(self, index: int) -> np.ndarray:
        return self.transcripts[index, : self.transcript_lengths[index]]


def speech_tokens_path(tokens_dir: Path, split: str) -> Path:
    return Path(tokens_dir) / f"{split}_speech.npz"


class ChameleonSpeechSequences(ChameleonSequences):
    """Image–text sequences (as Chameleon) mixed with speech sequences (and text-only rows) by configured weights."""

    base_kinds = KINDS

    def __init__(self, *args, speech: SpeechTokens, mixture: dict[str, float], **kwargs):
        super().__init__(*args, mixture=mixture, **kwargs)
        self.speech = speech

    def speech_sequence(self, index: int, kind: str) -> np.ndarray:
        v = self.vocab
        units = self.speech.unit_ids(index).astype(np.int64) + v.speech_offset
        speech = np.concatenate([[v.bos_speech], units, [v.eos_speech]])
        transcript = self.speech.transcript(index).astype(np.int64)
        parts = {"speech_to_text": ([v.bos], speech, transcript, [v.eos]),
                 "text_to_speech": ([v.bos], transcript, speech, [v.eos]),
                 "speech_only": ([v.bos], speech, [v.eos])}[kind]
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])

    def source(self, kind: str):
        return self.speech.keys if kind in SPEECH_KINDS else super().source(kind)

    def source_name(self, kind: str) -> str:
        return "speech" if kind in SPEECH_KINDS else kind

    def sequence_at(self, kind: str, index: int, rng: np.random.Generator) -> np.ndarray:
        if kind in SPEECH_KINDS:
            return self.speech_sequence(index, kind)
        return super().sequence_at(kind, index, rng)

    def eval_sequences(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """The Chameleon validation sequences, then every speech sample once, the speech kinds in turn (fixed order)."""
        yield from super().eval_sequences(limit)
        n = len(self.speech.keys) if limit is None else min(limit, len(self.speech.keys))
        for i in range(n):
            yield self.speech_sequence(i, SPEECH_KINDS[i % len(SPEECH_KINDS)])


class ChameleonSpeechObjective(ChameleonObjective):
    name = "chameleon_speech"

    def load_vocabulary(self) -> Vocabulary:
        stats = json.loads((self.paths.tokens / SPEECH_TOKENS_STATS).read_text())
        return super().load_vocabulary().with_parts(speech_units=stats["n_units"])

    def expected_vocab_size(self) -> int:
        return super().expected_vocab_size() + self.config["tokenizers"]["speech"]["n_units"]

    def sequences(self, split: str, model) -> ChameleonSpeechSequences:
        seq, plan = self.sequences_cfg, model.cfg.plan
        return ChameleonSpeechSequences(
            self.split(split), self.vocab, self.seq_len, seq["captioning_fraction"], plan.group_of_modality,
            plan.n_groups, seq["caption_dropout"] if split == "train" else 0.0,
            speech=self.rows(split, "speech", SpeechTokens, speech_tokens_path(self.paths.tokens, split)),
            **self.mixture_and_text(split), streams=self.streams(split))
