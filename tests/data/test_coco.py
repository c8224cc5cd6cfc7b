import json

import numpy as np
import pytest
from PIL import Image

from mot.data.coco import iter_coco_captions
from mot.data.shards import DataError, load_split_arrays, read_split
from mot.data.stage import build_dataset

TRAIN_CAPTIONS = {
    1: ["a cat on a mat", "a small cat sitting", "the cat rests on a rug"],
    2: ["a dog in a park", "a dog running on grass"],
    3: ["two birds on a wire", "birds sitting in a row", "a pair of birds", "birds outside"],
    4: ["this image file is missing", "nobody will see it"],
}
VAL_CAPTIONS = {10: ["a red bus", "a bus on a street"], 11: ["a bowl of fruit", "apples and pears"]}


def _write_coco_split(root, name, captions_by_id, missing_ids=()):
    """Write PNGs of varying size/mode plus a captions json; ids in missing_ids get no file."""
    image_dir = root / f"{name}2017"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for n, (image_id, captions) in enumerate(captions_by_id.items()):
        file_name = f"{image_id:012d}.png"
        images.append({"id": image_id, "file_name": file_name, "height": 20, "width": 24})
        if image_id not in missing_ids:
            mode = "L" if n % 2 else "RGB"
            Image.new(mode, (24 + n, 20), color=40 * n if mode == "L" else (40 * n, 0, 200)).save(
                image_dir / file_name
            )
        annotations += [{"id": 100 * image_id + k, "image_id": image_id, "caption": c}
                        for k, c in enumerate(captions)]
    # Interleave annotations across images, as in real COCO files.
    annotations.sort(key=lambda a: a["id"] % 100)
    captions_json = root / f"captions_{name}.json"
    captions_json.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return captions_json, image_dir


@pytest.fixture
def coco_cfg(tmp_path):
    train_json, train_images = _write_coco_split(tmp_path, "train", TRAIN_CAPTIONS, missing_ids={4})
    val_json, val_images = _write_coco_split(tmp_path, "val", VAL_CAPTIONS)
    return {
        "source": "coco",
        "coco": {"train_json": str(train_json), "train_images": str(train_images),
                 "val_json": str(val_json), "val_images": str(val_images),
                 "test_json": None, "test_images": None, "image_size": 16},
        "shard_size": 2,
        "max_bad_fraction": 0.3,
    }


def test_iter_coco_captions_groups_captions_and_marks_missing_images(coco_cfg):
    cfg = coco_cfg["coco"]
    samples = list(iter_coco_captions(cfg["train_json"], cfg["train_images"]))
    assert [s.key for s in samples] == ["coco-1", "coco-2", "coco-3", "coco-4"]
    assert {s.key: s.captions for s in samples} == {f"coco-{i}": c for i, c in TRAIN_CAPTIONS.items()}
    assert [s.image is None for s in samples] == [False, False, False, True]
    assert samples[0].image.startswith(b"\x89PNG")


def test_build_dataset_from_coco_folder(coco_cfg, tmp_path):
    out_dir = tmp_path / "out"
    manifest = build_dataset(coco_cfg, out_dir)

    assert manifest["source"] == "coco"
    assert set(manifest["splits"]) == {"train", "val"}  # no test json configured
    train = manifest["splits"]["train"]
    assert (train["n_samples"], train["n_bad"], train["bad_by_reason"]) == (3, 1, {"missing_image": 1})
    assert [s["n_samples"] for s in train["shards"]] == [2, 1]
    assert manifest["splits"]["val"]["n_samples"] == 2

    read = {key: captions for key, _, captions in read_split(out_dir, "train", verify=True)}
    assert read == {f"coco-{i}": TRAIN_CAPTIONS[i] for i in (1, 2, 3)}
    keys, images, _ = load_split_arrays(out_dir, "val")
    assert keys == ["coco-10", "coco-11"]
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8


def test_too_many_bad_samples_fails_without_manifest(coco_cfg, tmp_path):
    out_dir = tmp_path / "out"
    build_dataset(coco_cfg, out_dir)  # a previous good build leaves a manifest behind
    coco_cfg["max_bad_fraction"] = 0.2  # 1 of 4 train samples is bad = 0.25

    with pytest.raises(DataError) as info:
        build_dataset(coco_cfg, out_dir)
    assert str(info.value) == (
        "train: 1 of 4 samples are bad (missing_image=1), above data.max_bad_fraction=0.2"
    )
    assert not (out_dir / "manifest.json").exists()
    assert (out_dir / "train-00000.tar").exists()  # the failing split's shards were written first


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["annotations"][3].update(caption=7),
         "annotations[3].caption: expected a string, got int"),
        (lambda d: d.pop("images"), "images: missing"),
        (lambda d: d.update(annotations={"a": 1}), "annotations: expected an array, got object"),
        (lambda d: d["images"][2].update(id="3"), "images[2].id: expected an integer, got string"),
        (lambda d: d["images"][0].pop("file_name"), "images[0].file_name: missing"),
        (lambda d: d["annotations"][0].update(image_id=999),
         "annotations[0].image_id: no image with id 999 in 'images'"),
    ],
)
def test_malformed_captions_file_names_file_and_field(coco_cfg, mutate, expected):
    path = coco_cfg["coco"]["train_json"]
    with open(path) as f:
        document = json.load(f)
    mutate(document)
    with open(path, "w") as f:
        json.dump(document, f)

    with pytest.raises(DataError) as info:
        list(iter_coco_captions(path, coco_cfg["coco"]["train_images"]))
    assert str(info.value) == f"{path}: {expected}"


def test_captions_file_that_is_not_json(tmp_path):
    path = tmp_path / "captions_train.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError, match=r"captions_train\.json: not valid JSON") as info:
        list(iter_coco_captions(path, tmp_path))
    assert "\n" not in str(info.value)
