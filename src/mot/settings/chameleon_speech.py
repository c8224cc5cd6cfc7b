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
from typing import Iterator

import numpy as np

from mot.data.sequences import SpeechTokens
from mot.settings.chameleon import ChameleonObjective, ChameleonSequences
from mot.vocabulary import Vocabulary

SPEECH_KINDS = ("speech_to_text", "text_to_speech", "speech_only")
KINDS = ("image_text", *SPEECH_KINDS)  # text_only comes after these when its weight is > 0


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
    modalities = ("text", "image", "speech")
    tokenizers = ("text", "image_vq", "speech")
    token_files = ("tokens_stats", "speech_stats")
    sequence_sources = {**ChameleonObjective.sequence_sources, **{kind: "speech" for kind in SPEECH_KINDS}}
    paper = {"speech": {"steps_frac": 0.372, "flops_frac": 0.372}}  # 7B: dense speech loss at 37.2%

    @classmethod
    def external_paths(cls, config: dict):
        speech = config["data"]["speech"]
        if speech["source"] == "librispeech":
            for split, value in (speech.get("librispeech") or {}).items():
                if value is not None:
                    yield ["data", "speech", "librispeech", split], value

    def load_vocabulary(self) -> Vocabulary:
        stats = json.loads(self.paths.speech_stats.read_text())
        return super().load_vocabulary().with_parts(speech_units=stats["n_units"])

    def expected_vocab_size(self) -> int:
        return super().expected_vocab_size() + self.config["tokenizers"]["speech"]["n_units"]

    def sequences(self, split: str, model) -> ChameleonSpeechSequences:
        seq, plan = self.sequences_cfg, model.cfg.plan
        return ChameleonSpeechSequences(
            self.split(split), self.vocab, self.seq_len, seq["captioning_fraction"], plan.group_of_modality,
            plan.n_groups, seq["caption_dropout"] if split == "train" else 0.0,
            speech=self.rows(split, "speech", SpeechTokens),
            **self.mixture_and_text(split), streams=self.streams(split))


OBJECTIVE = ChameleonSpeechObjective
