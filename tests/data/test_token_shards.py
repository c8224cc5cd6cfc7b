"""Token data at scale: webdataset token shards round-trip the arrays; the stream sampler gives every step the same
global batch whatever the number of processes (each building only its rows), from memory or from shards alike;
streams of one source own disjoint shards and an epoch visits each of their rows once; any step is built
without replaying the ones before it (resume)."""

import json

import numpy as np
import pytest

from mot.data.sequences import TokenizedSplit
from mot.data.token_shards import (MANIFEST, ShardRows, StreamPlan, allocate_streams, shard_sizes,
                                   write_row_shards)
from mot.settings.chameleon import ChameleonSequences
from mot.train.distributed import World, rank_rows
from tests.settings.test_mixture import SEQ_LEN, VOCAB, text_chunks

STREAMS = {"streams": 4, "shard_rows": 3}


def tokenized(n=20) -> TokenizedSplit:
    """n images of 4 codes (distinct per image), each with 1 or 2 captions of 3 text ids."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, size=(n, 4)).astype(np.int16)
    captions = np.full((n, 2, 5), -1)
    captions[:, :, :3] = rng.integers(5, 20, size=(n, 2, 3))
    lengths = np.full((n, 2), 3)
    lengths[::3, 1] = 0
    return TokenizedSplit(codes, captions, lengths, np.array([f"k{i:03d}" for i in range(n)]))


def as_arrays(split) -> dict:
    return {name: getattr(split, name) for name in split.__dataclass_fields__}


def sharded(obj, directory, rows) -> object:
    write_row_shards(as_arrays(obj), directory, rows)
    shards = ShardRows(directory, cache_shards=2)
    return type(obj)(**{field: shards.field(field) for field in shards.manifest["fields"]}), shards


def builder(split, text, streams=STREAMS) -> ChameleonSequences:
    return ChameleonSequences(split, VOCAB, SEQ_LEN, 0.5, (0, 1), 2, 0.2, mixture={"image_text": 3, "text_only": 1},
                              text_only=text, streams=streams)


def test_token_shards_round_trip_the_arrays_and_hold_few_shards_in_memory(tmp_path):
    split = tokenized(20)
    back, shards = sharded(split, tmp_path / "image_text", 6)
    manifest = json.loads((tmp_path / "image_text" / MANIFEST).read_text())
    assert manifest["sizes"] == [6, 6, 6, 2] and manifest["rows"] == 20
    assert sorted(p.name for p in (tmp_path / "image_text").glob("*.tar")) == manifest["shards"]
    for i in range(20):
        assert np.array_equal(back.image_codes[i], split.image_codes[i])
        assert back.n_captions(i) == split.n_captions(i)
        for slot in range(split.n_captions(i)):
            assert np.array_equal(back.caption(i, slot), split.caption(i, slot))
        assert str(back.keys[i]) == split.keys[i]
    assert len(shards.cache) == 2 and shards.shards_read == 4
    with pytest.raises(IndexError, match="row 20 of 20"):
        back.image_codes[20]


def test_streams_share_the_kinds_by_weight():
    assert allocate_streams({"image_text": 3, "text_only": 1}, 8) == ["image_text"] * 6 + ["text_only"] * 2
    assert allocate_streams({"image_text": 0.9, "text_only": 0.1, "speech_only": 0}, 4) == ["image_text"] * 3 + [
        "text_only"]
    with pytest.raises(ValueError, match="sequences.streams: 1 streams cannot carry"):
        allocate_streams({"image_text": 1, "text_only": 1}, 1)


def test_each_stream_visits_its_own_shards_rows_once_per_epoch_in_a_new_order():
    sizes = shard_sizes(20, 3)  # 7 shards: 3 x 6 + 2
    plan = StreamPlan(["image_text"] * 2 + ["text_only"] * 2, {"image_text": "a", "text_only": "b"},
                      {"a": sizes, "b": shard_sizes(9, 3)}, batch_size=8, seed=5)
    a0, a1 = plan.streams[0], plan.streams[1]
    assert set(a0.shards).isdisjoint(a1.shards) and set(a0.shards) | set(a1.shards) == set(range(7))
    for stream in plan.streams:
        starts = np.cumsum([0] + list(stream.sizes))
        own = sorted(r for s in stream.shards for r in range(starts[s], starts[s + 1]))
        epoch = [stream.index(p) for p in range(stream.epoch_rows)]
        assert sorted(epoch) == own
        following = [stream.index(p) for p in range(stream.epoch_rows, 2 * stream.epoch_rows)]
        assert sorted(following) == own and (following != epoch or len(own) == 1)
    with pytest.raises(ValueError, match="expected a multiple of 4"):
        StreamPlan(["image_text"] * 4, {"image_text": "a"}, {"a": sizes}, batch_size=10, seed=0)
    with pytest.raises(ValueError, match="expected at least one shard per stream"):
        StreamPlan(["image_text"] * 4, {"image_text": "a"}, {"a": [20]}, batch_size=8, seed=0)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ranks_building_their_own_rows_make_up_the_one_process_batch(world_size):
    sequences = builder(tokenized(), text_chunks(12))
    for step in (0, 1, 7):
        whole = sequences.train_batch(step, 8, seed=3)
        parts = [sequences.train_batch(step, 8, 3, rank_rows(8, World(rank, world_size))) for rank in range(world_size)]
        assert np.array_equal(np.concatenate([p.tokens for p in parts]), whole.tokens)
        assert np.array_equal(np.concatenate([p.targets for p in parts]), whole.targets)
        assert tuple(map(sum, zip(*(p.target_counts for p in parts)))) == whole.target_counts


def test_streams_from_token_shards_give_the_in_memory_batches_at_any_step(tmp_path):
    split, text = tokenized(), text_chunks(12)
    from_shards, shards = sharded(split, tmp_path / "image_text", STREAMS["shard_rows"])
    text_shards, _ = sharded(text, tmp_path / "text_only", STREAMS["shard_rows"])
    memory, streamed = builder(split, text), builder(from_shards, text_shards)
    for step in (9, 0, 3, 40):  # any order: a resumed run starts at its step with nothing replayed
        a, b = memory.train_batch(step, 8, seed=1), streamed.train_batch(step, 8, seed=1)
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.targets, b.targets)
    assert len(shards.cache) <= 2
    kinds = [kind for kind, _ in memory.rows_with_kind(0, 8, 1)]
    assert kinds == ["image_text"] * 6 + ["text_only"] * 2  # 3:1 as two blocks of two rows each


def test_iid_sampling_is_unchanged_and_cannot_build_part_of_a_batch():
    plain = ChameleonSequences(tokenized(), VOCAB, SEQ_LEN, 0.5, (0, 1), 2)
    rng = np.random.default_rng([4, 2])
    expected = [plain.draw(rng) for _ in range(6)]
    assert [row.tolist() for _, row in plain.rows_with_kind(2, 6, 4)] == [row.tolist() for row in expected]
    with pytest.raises(ValueError, match="needs sequences.sampling: streams"):
        plain.train_batch(0, 6, 4, range(0, 3))
