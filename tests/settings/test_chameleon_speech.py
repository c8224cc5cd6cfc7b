"""Chameleon + Speech sequences: speech units as a third part of the one vocabulary, the three speech
layouts, the configured mixture of sequence kinds, deterministic training batches and a fixed eval order."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from mot.config.load import load_config
from mot.data.sequences import IGNORE, SpeechTokens, TokenizedSplit
from mot.settings import objective_for
from mot.settings.chameleon import ChameleonSequences
from mot.settings.chameleon_speech import KINDS, SPEECH_KINDS, ChameleonSpeechSequences
from mot.vocabulary import IMAGE, SPEECH, TEXT, Vocabulary
from tests.conftest import REPO

VOCAB = Vocabulary(text_size=20, image_codes=8, speech_units=6, pad=0, bos=1, eos=2, boi=3, eoi=4,
                   bos_speech=5, eos_speech=6)
MIXTURE = {"image_text": 0.5, "speech_to_text": 0.2, "text_to_speech": 0.2, "speech_only": 0.1}
SEQ_LEN = 16


def split() -> TokenizedSplit:
    """4 images of 4 codes, 2 captions of 3 text ids each."""
    codes = np.arange(4 * 4).reshape(4, 4) % 8
    captions = np.full((4, 2, 5), -1)
    lengths = np.zeros((4, 2), dtype=int)
    for i in range(4):
        for j in range(2):
            captions[i, j, :3] = [7 + i, 12 + j, 15]
            lengths[i, j] = 3
    return TokenizedSplit(codes.astype(np.int16), captions, lengths, np.array([f"k{i}" for i in range(4)]))


def speech() -> SpeechTokens:
    """3 spoken samples: units [2 + i] long (no offset), transcripts of 2 + i text ids."""
    units = np.full((3, 5), -1)
    transcripts = np.full((3, 4), -1)
    for i in range(3):
        units[i, : 2 + i] = (np.arange(2 + i) + i) % 6
        transcripts[i, : 2 + i] = 8 + i + np.arange(2 + i)
    return SpeechTokens(units, np.array([2, 3, 4]), transcripts, np.array([2, 3, 4]),
                        np.array([f"s{i}" for i in range(3)]))


def builder(mixture=MIXTURE, **kw) -> ChameleonSpeechSequences:
    return ChameleonSpeechSequences(split(), VOCAB, SEQ_LEN, 0.5, (0, 1, 2), 3, speech=speech(),
                                    mixture=mixture, **kw)


def kind_of(row: torch.Tensor) -> str:
    """Which kind of sequence a (whole) row is, from its special tokens."""
    tokens = row.tolist()
    if VOCAB.bos_speech not in tokens:
        return "image_text"
    if tokens[1] != VOCAB.bos_speech:
        return "text_to_speech"
    after_speech = tokens[tokens.index(VOCAB.eos_speech) + 1]
    return "speech_only" if after_speech == VOCAB.eos else "speech_to_text"


# --- vocabulary ----------------------------------------------------------------------------

def test_vocabulary_is_text_then_image_codes_then_speech_units():
    assert VOCAB.size == 20 + 8 + 6
    assert (VOCAB.image_offset, VOCAB.speech_offset) == (20, 28)
    modality = VOCAB.modality_of(torch.arange(VOCAB.size)).tolist()
    assert modality == [TEXT] * 20 + [IMAGE] * 8 + [SPEECH] * 6
    # the speech delimiters are text specials, like <boi> and <eoi>
    assert VOCAB.modality_of(torch.tensor([VOCAB.bos_speech, VOCAB.eos_speech, VOCAB.boi])).tolist() == [TEXT] * 3


def test_objective_vocabulary_adds_the_fitted_speech_units_after_text_and_image(tmp_path):
    config = load_config([REPO / "configs" / "pipeline.yaml"])
    config["results_dir"] = str(tmp_path)
    objective = objective_for(config, "chameleon_speech")
    tok = config["tokenizers"]
    assert objective.expected_vocab_size() == (tok["text"]["vocab_size"] + tok["image_vq"]["codebook_size"]
                                               + tok["speech"]["n_units"])
    objective.paths.tokenizers.mkdir(parents=True)
    objective.paths.tokens.mkdir(parents=True)
    text_image = Vocabulary(text_size=20, image_codes=8, pad=0, bos=1, eos=2, boi=3, eoi=4)
    (objective.paths.tokenizers / "vocab.json").write_text(json.dumps(text_image.as_dict()))
    objective.paths.speech_stats.write_text(json.dumps({"n_units": 6}))
    assert objective.vocab == VOCAB


# --- layouts -------------------------------------------------------------------------------

def test_speech_layouts_with_offset_units_between_speech_delimiters():
    b, v = builder(), VOCAB
    units = [u + v.speech_offset for u in [1, 2, 3]]  # sample 1: units 1 2 3, transcript 9 10 11
    transcript = [9, 10, 11]
    speech_part = [v.bos_speech, *units, v.eos_speech]
    assert b.speech_sequence(1, "speech_to_text").tolist() == [v.bos, *speech_part, *transcript, v.eos]
    assert b.speech_sequence(1, "text_to_speech").tolist() == [v.bos, *transcript, *speech_part, v.eos]
    assert b.speech_sequence(1, "speech_only").tolist() == [v.bos, *speech_part, v.eos]


@pytest.mark.parametrize("kind", SPEECH_KINDS)
def test_units_are_speech_and_delimiters_and_transcript_are_text(kind):
    b = builder()
    seq = torch.from_numpy(b.speech_sequence(2, kind))
    is_unit = (seq >= VOCAB.speech_offset).tolist()
    assert sum(is_unit) == 4
    assert VOCAB.modality_of(seq).tolist() == [SPEECH if unit else TEXT for unit in is_unit]

    batch = b.collate([seq.numpy()])
    n = len(seq)
    assert batch.input_modality[0, : n - 1].tolist() == VOCAB.modality_of(seq[:-1]).tolist()
    assert batch.target_counts[SPEECH] == 4 and batch.target_counts[IMAGE] == 0
    assert batch.target_counts[TEXT] == n - 1 - 4
    assert (batch.targets[0, n - 1:] == IGNORE).all()
    # the speech inputs are the last chunk of the modality-sorted tokens (set 2 of a 3-set plan)
    assert batch.groups.sizes == (SEQ_LEN - 4, 0, 4)
    assert (batch.input_modality.flatten()[batch.groups.perm][-4:] == SPEECH).all()


# --- the mixture ---------------------------------------------------------------------------

def test_training_batches_realise_the_configured_mixture_within_two_percent():
    b = builder()
    kinds = Counter(kind_of(row) for step in range(200) for row in b.train_batch(step, 64, seed=3).tokens)
    total = sum(kinds.values())
    assert set(kinds) == set(KINDS)
    for kind, weight in MIXTURE.items():
        assert abs(kinds[kind] / total - weight) < 0.02, (kind, kinds[kind] / total)


def test_weights_are_relative_and_missing_kinds_are_never_drawn():
    b = builder(mixture={"image_text": 3, "speech_only": 1})
    kinds = Counter(kind_of(row) for step in range(50) for row in b.train_batch(step, 64, seed=0).tokens)
    assert set(kinds) == {"image_text", "speech_only"}
    assert abs(kinds["speech_only"] / sum(kinds.values()) - 0.25) < 0.02


def test_an_image_text_only_mixture_gives_no_speech_tokens():
    b = builder(mixture={"image_text": 1.0})
    for step in range(20):
        batch = b.train_batch(step, 16, seed=0)
        assert not (batch.input_modality == SPEECH).any() and not (batch.tokens == VOCAB.bos_speech).any()
        assert batch.target_counts[SPEECH] == 0 and batch.groups.sizes[2] == 0


def test_speech_sequences_draw_every_speech_sample():
    b = builder(mixture={"speech_only": 1.0})
    first_units = {int(row[2]) - VOCAB.speech_offset for step in range(10) for row in b.train_batch(step, 8, 0).tokens}
    assert first_units == {int(speech().units[i, 0]) for i in range(3)}


# --- determinism and evaluation order ------------------------------------------------------

def test_training_batches_are_a_pure_function_of_seed_and_step():
    a, b = builder().train_batch(7, 16, seed=0), builder().train_batch(7, 16, seed=0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.groups.perm, b.groups.perm) and a.groups.sizes == b.groups.sizes
    assert len({kind_of(row) for row in a.tokens}) > 1  # a mixed batch, not one kind
    assert not torch.equal(a.tokens, builder().train_batch(8, 16, seed=0).tokens)
    assert not torch.equal(a.tokens, builder().train_batch(7, 16, seed=1).tokens)


def test_eval_sequences_are_the_image_text_ones_then_each_speech_sample_once():
    rows = [r.tolist() for r in builder().eval_sequences()]
    image_text = [r.tolist() for r in ChameleonSequences(split(), VOCAB, SEQ_LEN, 0.5, (0, 1, 2), 3).eval_sequences()]
    assert rows[: len(image_text)] == image_text
    spoken = rows[len(image_text):]
    assert len(spoken) == 3  # each speech sample once
    for i, row in enumerate(spoken):
        assert [t - VOCAB.speech_offset for t in row if t >= VOCAB.speech_offset] == speech().unit_ids(i).tolist()
    assert [kind_of(torch.tensor(r)) for r in spoken] == list(SPEECH_KINDS)  # the speech kinds in turn
    assert [r.tolist() for r in builder().eval_sequences()] == rows  # a fixed order, whatever the mixture
    assert [r.tolist() for r in builder(mixture={"image_text": 1}).eval_sequences()] == rows
    limited = [r.tolist() for r in builder().eval_sequences(limit=2)]
    assert limited == image_text[:2] + spoken[:2]


def test_eval_batches_hold_every_eval_sequence_in_order():
    b = builder()
    rows = list(b.eval_sequences())
    batches = list(b.eval_batches(batch_size=3))
    assert [x.tokens.shape[0] for x in batches] == [3, 3, 1]
    tokens = torch.cat([x.tokens for x in batches])
    for row, seq in zip(tokens, rows, strict=True):
        assert row[: len(seq) - 1].tolist() == seq[:-1].tolist()
