"""A researcher's own setting, in one file: image captioning only (every sequence is
`<bos> <boi> image <eoi> caption <eos>`), on the Chameleon tokens. A study names it with
`settings.<name>.module: tests.settings.toy_captioning`; nothing else in the project knows it
(tests/settings/test_a_new_setting.py runs it through the real DAG)."""

from __future__ import annotations

from mot.settings.chameleon import ChameleonObjective, ChameleonSequences


class ToyCaptioningObjective(ChameleonObjective):
    name = "toy_captioning"
    modalities = ("text", "image")
    tokenizers = ("text", "image_vq")
    token_files = ("tokens_stats",)
    sequence_sources = {"image_text": "image_text"}
    draws_streams = False
    paper = {}

    def sequences(self, split: str, model) -> ChameleonSequences:
        """Chameleon's sequences with the captioning direction only (captioning_fraction 1, no caption dropout)."""
        plan = model.cfg.plan
        return ChameleonSequences(self.split(split), self.vocab, self.seq_len, 1.0, plan.group_of_modality,
                                  plan.n_groups, **self.mixture_and_text(split), streams=self.streams(split))


OBJECTIVE = ToyCaptioningObjective
