"""The one shared vocabulary: text BPE ids first, then the VQ image codes, then the speech units.

A setting uses the part it needs (Transfusion has no image codes: its images are continuous)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mot.grouping import modality_id

TEXT, IMAGE, SPEECH = modality_id("text"), modality_id("image"), modality_id("speech")


@dataclass(frozen=True)
class Vocabulary:
    text_size: int
    image_codes: int
    pad: int
    bos: int
    eos: int
    boi: int
    eoi: int
    speech_units: int = 0
    bos_speech: int = 5
    eos_speech: int = 6

    @property
    def image_offset(self) -> int:
        return self.text_size

    @property
    def speech_offset(self) -> int:
        return self.text_size + self.image_codes

    @property
    def size(self) -> int:
        return self.text_size + self.image_codes + self.speech_units

    def modality_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Modality id of each token id (specials such as <boi> are text)."""
        image = (tokens >= self.image_offset) & (tokens < self.speech_offset)
        speech = tokens >= self.speech_offset
        return image.long() * IMAGE + speech.long() * SPEECH  # TEXT == 0

    def with_parts(self, image_codes: int | None = None, speech_units: int | None = None) -> "Vocabulary":
        return replace(self, image_codes=self.image_codes if image_codes is None else image_codes,
                       speech_units=self.speech_units if speech_units is None else speech_units)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def load_vocabulary(path: Path) -> Vocabulary:
    """The text + image vocabulary written by the fit-tokenizers stage (StudyPaths.vocab)."""
    return Vocabulary(**json.loads(Path(path).read_text()))
