import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from mot.data.shards import DataError, Sample, load_split_arrays, read_split, write_split
from mot.data.synthetic import iter_synthetic


def _write_manifest(data_dir, splits):
    manifest = {"source": "test", "splits": splits, "created_by": "test"}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def written(tmp_path):
    """50 synthetic samples in shards of 16, with a manifest."""
    samples = list(iter_synthetic(50, seed=3))
    entry = write_split(samples, tmp_path, "train", shard_size=16, total=50)
    _write_manifest(tmp_path, {"train": entry})
    return tmp_path, samples, entry


def test_round_trip_preserves_keys_images_and_captions(written):
    data_dir, samples, _ = written
    read = list(read_split(data_dir, "train", verify=True))
    assert [key for key, _, _ in read] == [s.key for s in samples]
    for (_, image, captions), sample in zip(read, samples):
        assert image.dtype == np.uint8
        assert np.array_equal(image, sample.image)
        assert captions == sample.captions


def test_manifest_entry_counts_and_hashes(written):
    data_dir, _, entry = written
    assert entry["n_samples"] == 50
    assert entry["n_bad"] == 0 and entry["bad_by_reason"] == {}
    assert [s["path"] for s in entry["shards"]] == [f"train-{i:05d}.tar" for i in range(4)]
    assert [s["n_samples"] for s in entry["shards"]] == [16, 16, 16, 2]
    for shard in entry["shards"]:
        assert shard["sha256"] == hashlib.sha256((data_dir / shard["path"]).read_bytes()).hexdigest()


def test_shards_are_byte_identical_across_runs(tmp_path, written):
    _, samples, entry = written
    again = write_split(samples, tmp_path / "again", "train", shard_size=16)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in entry["shards"]]


def test_load_split_arrays_stacks_images(written):
    data_dir, samples, _ = written
    keys, images, captions = load_split_arrays(data_dir, "train")
    assert images.shape == (50, 32, 32, 3) and images.dtype == np.uint8
    assert keys[7] == samples[7].key and captions[7] == samples[7].captions
    assert np.array_equal(images[49], samples[49].image)


def test_bad_samples_are_skipped_and_counted_by_reason(tmp_path):
    rng = np.random.default_rng(0)
    good = np.full((8, 8, 3), 200, dtype=np.uint8)
    samples = [
        Sample("ok-array", good, ["a red circle"]),
        Sample("ok-utf8-bytes", good, ["  first  ", "", "   ", "caf\u00e9".encode("utf-8")]),
        Sample("missing", None, ["a caption"]),
        Sample("random-bytes", rng.bytes(200), ["a caption"]),
        Sample("truncated-png", _png_bytes(good)[:30], ["a caption"]),
        Sample("grey-array", np.zeros((8, 8), dtype=np.uint8), ["a caption"]),
        Sample("float-array", np.zeros((8, 8, 3), dtype=np.float32), ["a caption"]),
        Sample("latin1", good, [b"caf\xe9"]),
        Sample("blank-captions", good, ["  ", "\n"]),
        Sample("no-captions", good, []),
    ]
    entry = write_split(samples, tmp_path, "val", shard_size=4)
    _write_manifest(tmp_path, {"val": entry})

    assert entry["n_samples"] == 2
    assert entry["n_bad"] == 8
    assert entry["bad_by_reason"] == {
        "missing_image": 1, "unreadable_image": 4, "non_utf8_caption": 1, "empty_caption": 2,
    }
    read = {key: captions for key, _, captions in read_split(tmp_path, "val")}
    assert read == {"ok-array": ["a red circle"], "ok-utf8-bytes": ["first", "caf\u00e9"]}


def test_importer_images_are_converted_to_rgb_and_optionally_resized(tmp_path):
    grey = np.arange(20 * 12, dtype=np.uint8).reshape(20, 12)
    rgba = np.zeros((10, 14, 4), dtype=np.uint8)
    samples = [
        Sample("grey", _png_bytes(grey), ["grey image"]),
        Sample("rgba", _png_bytes(rgba), ["rgba image"]),
    ]
    kept = write_split(samples, tmp_path / "kept", "train", shard_size=10)
    _write_manifest(tmp_path / "kept", {"train": kept})
    shapes = {key: image.shape for key, image, _ in read_split(tmp_path / "kept", "train")}
    assert shapes == {"grey": (20, 12, 3), "rgba": (10, 14, 3)}
    first = next(iter(read_split(tmp_path / "kept", "train")))[1]
    assert np.array_equal(first[..., 0], grey) and np.array_equal(first[..., 2], grey)
    with pytest.raises(DataError, match="mixes image shapes"):
        load_split_arrays(tmp_path / "kept", "train")

    resized = write_split(samples, tmp_path / "resized", "train", shard_size=10, image_size=16)
    _write_manifest(tmp_path / "resized", {"train": resized})
    _, images, _ = load_split_arrays(tmp_path / "resized", "train")
    assert images.shape == (2, 16, 16, 3)


def test_verify_detects_a_modified_shard(written):
    data_dir, _, entry = written
    path = data_dir / "train-00001.tar"
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(DataError, match=r"train-00001\.tar: sha256 mismatch"):
        list(read_split(data_dir, "train", verify=True))


def _member_offsets(path, index):
    """(header offset, data offset, size) of the index-th member of a tar file."""
    with tarfile.open(path) as tar:
        member = tar.getmembers()[index]
    return member.offset, member.offset_data, member.size


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("inside_member_data", r"corrupt or truncated shard \(ReadError: unexpected end of data\)"),
        ("inside_member_header", r"sample 'syn-0000037' has only \['json'\], not png\+json"),
        ("at_half_size", r"train-00002\.tar: "),
    ],
)
def test_truncated_shard_raises_one_line_error_naming_the_file(written, where, expected):
    data_dir, _, _ = written
    path = data_dir / "train-00002.tar"
    data = path.read_bytes()
    header, data_start, size = _member_offsets(path, 11)  # png of the shard's 6th sample, syn-0000037
    cut = {
        "inside_member_data": data_start + size // 2,
        "inside_member_header": header + 100,
        "at_half_size": len(data) // 2,
    }[where]
    path.write_bytes(data[:cut])

    with pytest.raises(DataError, match=expected) as info:
        list(read_split(data_dir, "train"))
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and "@" not in message


def test_truncation_at_a_member_boundary_is_caught_by_the_sample_count(written):
    data_dir, _, _ = written
    path = data_dir / "train-00000.tar"
    data = path.read_bytes()
    # Each sample is 2 tar members (json, png); cut where the 6th sample's header starts.
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    cut = members[10].offset
    path.write_bytes(data[:cut])

    with pytest.raises(DataError, match=r"train-00000\.tar: has 5 samples, manifest says 16"):
        list(read_split(data_dir, "train"))


def test_missing_manifest_or_split_raises_data_error(tmp_path, written):
    with pytest.raises(DataError, match="manifest.json: not found"):
        list(read_split(tmp_path / "nowhere", "train"))
    data_dir, _, _ = written
    with pytest.raises(DataError, match="no split 'test'"):
        list(read_split(data_dir, "test"))
