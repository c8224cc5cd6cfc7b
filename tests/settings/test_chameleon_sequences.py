"""Chameleon sequences: layout, next-token targets, modality ids, determinism, caption dropout."""

import numpy as np
import torch

from mot.data.sequences import IGNORE, TokenizedSplit
from mot.settings.chameleon import ChameleonSequences
from mot.vocabulary import IMAGE, TEXT, Vocabulary

VOCAB = Vocabulary(text_size=20, image_codes=8, pad=0, bos=1, eos=2, boi=3, eoi=4)


def split():
    codes = np.arange(4 * 4).reshape(4, 4) % 8
    captions = np.full((4, 2, 5), -1)
    lengths = np.zeros((4, 2), dtype=int)
    for i in range(4):
        for j in range(2):
            captions[i, j, :3] = [5 + i, 10 + j, 15]
            lengths[i, j] = 3
    return TokenizedSplit(codes.astype(np.int16), captions, lengths, np.array([f"k{i}" for i in range(4)]))


def builder(**kw):
    return ChameleonSequences(split(), VOCAB, seq_len=12, captioning_fraction=0.5,
                              group_of_modality=(0, 1, 0), n_groups=2, **kw)


def test_generation_and_captioning_layouts():
    b = builder()
    gen = b.sequence(1, 0, captioning=False).tolist()
    cap = b.sequence(1, 0, captioning=True).tolist()
    image = [c + VOCAB.image_offset for c in [4, 5, 6, 7]]
    assert gen == [1, 6, 10, 15, 3, *image, 4, 2]
    assert cap == [1, 3, *image, 4, 6, 10, 15, 2]
    assert b.sequence(1, 0, captioning=False, drop_caption=True).tolist() == [1, 3, *image, 4, 2]


def test_batch_targets_modalities_and_groups():
    b = builder()
    batch = b.collate([b.sequence(0, 0, False), b.sequence(2, 1, True)])
    assert batch.tokens.shape == (2, 12)
    seq = b.sequence(0, 0, False)
    assert batch.tokens[0, :len(seq) - 1].tolist() == seq[:-1].tolist()
    assert batch.targets[0, :len(seq) - 1].tolist() == seq[1:].tolist()
    assert (batch.targets[0, len(seq) - 1:] == IGNORE).all()
    assert batch.input_modality[0].tolist()[:5] == [TEXT] * 5 and batch.input_modality[0, 5] == IMAGE
    n_image_targets = int(((batch.target_modality == IMAGE) & (batch.targets != IGNORE)).sum())
    assert batch.target_counts[IMAGE] == n_image_targets == 8
    assert sum(batch.target_counts) == int((batch.targets != IGNORE).sum())
    # groups: the image inputs first sorted after the text ones, sizes on the host
    assert batch.groups.sizes == (24 - 8, 8)
    assert (batch.input_modality.flatten()[batch.groups.perm][-8:] == IMAGE).all()


def test_train_batches_are_a_pure_function_of_seed_and_step():
    a, b = builder().train_batch(7, 4, seed=0), builder().train_batch(7, 4, seed=0)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, builder().train_batch(8, 4, seed=0).tokens)


def test_caption_dropout_rate():
    b = builder(caption_dropout=1.0)
    b.captioning_fraction = 0.0
    batch = b.train_batch(0, 8, seed=0)
    assert (batch.tokens[:, 1] == VOCAB.boi).all()  # every caption dropped: <bos> <boi> image ...


def test_eval_batches_cover_the_split_in_fixed_order():
    batches = list(builder().eval_batches(batch_size=3))
    assert [b.tokens.shape[0] for b in batches] == [3, 1]
    assert batches[0].tokens[1, 1] == VOCAB.boi  # odd samples are captioning sequences
