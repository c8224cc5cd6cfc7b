"""WebDataset tar shards plus their manifest entries: (key, PNG image, captions) here,
and the shared writer/reader that other sample kinds (speech) encode and decode through.

Writing validates every sample and skips bad ones, counting them by reason;
reading checks shards against ``manifest.json`` and turns any corruption into a
one-line ``DataError`` that names the shard file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import webdataset as wds
from PIL import Image
from tqdm import tqdm

from mot.paths import MANIFEST

T = TypeVar("T")


class DataError(Exception):
    """A data problem the user must fix (bad input files, corrupt shards)."""


@dataclass
class Sample:
    """One captioned image, as produced by a generator or an importer.

    image: HxWx3 uint8 array, encoded image bytes (may be corrupt), or None if missing.
    captions: str or bytes items (bytes may not be valid UTF-8).
    """

    key: str
    image: np.ndarray | bytes | None
    captions: list


class BadSample(Exception):
    """Raised by a sample encoder: the sample is skipped and counted under ``reason``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- writing -------------------------------------------------------------------


def write_split(
    samples: Iterable[Sample],
    out_dir: Path,
    split: str,
    shard_size: int,
    total: int | None = None,
    image_size: int | None = None,
) -> dict:
    """Write valid samples to ``{out_dir}/{split}-{i:05d}.tar``; return the split's manifest entry.

    image_size, when given, resizes every image to image_size x image_size (bicubic).
    """

    def encode(sample: Sample) -> tuple[str, dict[str, bytes]]:
        image, captions = validate_sample(sample, image_size)
        payload = json.dumps({"captions": captions}, ensure_ascii=False).encode("utf-8")
        return sample.key, {"png": encode_png(image), "json": payload}

    return write_records(samples, encode, out_dir, split, shard_size, total, unit="img")


def write_records(
    samples: Iterable[Any],
    encode: Callable[[Any], tuple[str, dict[str, bytes]]],
    out_dir: Path,
    split: str,
    shard_size: int,
    total: int | None = None,
    unit: str = "sample",
) -> dict:
    """Encode each sample to (key, {extension: bytes}) and write it to ``{out_dir}/{split}-{i:05d}.tar``.

    encode raises BadSample for a sample to skip; the returned manifest entry counts those by reason.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad_by_reason: Counter[str] = Counter()
    shards = _ShardSequence(out_dir, split, shard_size)
    try:
        for sample in tqdm(samples, total=total, desc=split, unit=unit):
            try:
                key, fields = encode(sample)
            except BadSample as bad:
                bad_by_reason[bad.reason] += 1
                continue
            shards.write(key, fields)
    finally:
        shards.close()
    return {
        "n_samples": sum(s["n_samples"] for s in shards.entries),
        "n_bad": sum(bad_by_reason.values()),
        "bad_by_reason": dict(sorted(bad_by_reason.items())),
        "shards": shards.entries,
    }


class _ShardSequence:
    """Rolls over to a new tar every shard_size samples and records each finished shard."""

    def __init__(self, out_dir: Path, split: str, shard_size: int):
        self.out_dir, self.split, self.shard_size = out_dir, split, shard_size
        self.entries: list[dict] = []
        self._writer: wds.TarWriter | None = None
        self._name = ""
        self._count = 0

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        if self._writer is None or self._count == self.shard_size:
            self._finish_current()
            self._name = f"{self.split}-{len(self.entries):05d}.tar"
            # mtime=0 so the same data always gives byte-identical shards (stable sha256).
            self._writer = wds.TarWriter(str(self.out_dir / self._name), encoder=False, mtime=0)
        self._writer.write({"__key__": key, **fields})
        self._count += 1

    def close(self) -> None:
        self._finish_current()

    def _finish_current(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        digest = sha256_file(self.out_dir / self._name)
        self.entries.append({"path": self._name, "n_samples": self._count, "sha256": digest})
        self._count = 0


def validate_sample(sample: Sample, image_size: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Return (RGB uint8 image, cleaned captions) or raise BadSample with the reason."""
    image = _validate_image(sample.image, image_size)
    captions = _validate_captions(sample.captions)
    return image, captions


def _validate_image(image: np.ndarray | bytes | None, image_size: int | None) -> np.ndarray:
    if image is None:
        raise BadSample("missing_image")
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = _decode_image_bytes(bytes(image))
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8
            and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 0):
        raise BadSample("unreadable_image")
    if image_size is not None and image.shape[:2] != (image_size, image_size):
        resized = Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BICUBIC)
        image = np.asarray(resized)
    return image


def _decode_image_bytes(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # PIL raises many exception types on corrupt input
        raise BadSample("unreadable_image") from exc


def _validate_captions(captions: list | None) -> list[str]:
    cleaned = []
    for caption in captions or []:
        if isinstance(caption, (bytes, bytearray)):
            try:
                caption = bytes(caption).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadSample("non_utf8_caption") from exc
        if not isinstance(caption, str):
            raise TypeError(f"caption must be str or bytes, got {type(caption).__name__}")
        if caption.strip():
            cleaned.append(caption.strip())
    if not cleaned:
        raise BadSample("empty_caption")
    return cleaned


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """Write ``{out_dir}/manifest.json`` atomically: its presence means every shard it lists is complete."""
    path = Path(out_dir) / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_bad_fraction(split: str, entry: dict, max_bad_fraction: float) -> None:
    """Raise DataError when more than max_bad_fraction of a split's samples were bad."""
    n_bad = entry["n_bad"]
    total = n_bad + entry["n_samples"]
    if total and n_bad / total > max_bad_fraction:
        reasons = ", ".join(f"{reason}={count}" for reason, count in entry["bad_by_reason"].items())
        raise DataError(
            f"{split}: {n_bad} of {total} samples are bad ({reasons or 'none'}), "
            f"above data.max_bad_fraction={max_bad_fraction}"
        )


# --- reading -------------------------------------------------------------------


def load_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found (run `mot data` first, or it did not finish)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def read_split(
    data_dir: Path, split: str, verify: bool = False
) -> Iterator[tuple[str, np.ndarray, list[str]]]:
    """Yield (key, HxWx3 uint8 image, captions) for a split, in shard order."""
    yield from read_records(data_dir, split, _decode_record, verify)


def read_records(
    data_dir: Path, split: str, decode: Callable[[Path, dict], T], verify: bool = False
) -> Iterator[T]:
    """Yield decode(shard path, record) for every record of a split, in shard order.

    decode raises DataError (naming the shard) for a record it cannot read.
    """
    data_dir = Path(data_dir)
    shard_entries = _split_entry(load_manifest(data_dir), data_dir, split)["shards"]
    for shard in shard_entries:
        path = data_dir / shard["path"]
        if not path.is_file():
            raise DataError(f"{path}: shard listed in {MANIFEST} is missing")
        if verify:
            _verify_sha256(path, shard["sha256"])
        yield from _read_shard(path, shard["n_samples"], decode)


def load_split_arrays(data_dir: Path, split: str) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Read a whole split into memory: keys, images [N,H,W,3] uint8, captions."""
    keys, images, captions = [], [], []
    for key, image, caps in read_split(data_dir, split):
        keys.append(key)
        images.append(image)
        captions.append(caps)
    if not images:
        return keys, np.zeros((0, 0, 0, 3), dtype=np.uint8), captions
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(
            f"{data_dir}: split {split!r} mixes image shapes {sorted(shapes)}; set an image_size to resize"
        )
    return keys, np.stack(images), captions


def _split_entry(manifest: dict, data_dir: Path, split: str) -> dict:
    splits = manifest.get("splits", {})
    if split not in splits:
        raise DataError(f"{data_dir / MANIFEST}: no split {split!r} (have {sorted(splits)})")
    return splits[split]


def _verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...)")


def _read_shard(path: Path, expected_samples: int, decode: Callable[[Path, dict], T]) -> Iterator[T]:
    n_read = 0
    dataset = wds.WebDataset([str(path)], shardshuffle=False, empty_check=False)
    try:
        for record in dataset:
            decoded = decode(path, record)
            n_read += 1
            yield decoded
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        # webdataset appends " @ <stream>" and the url to the message; keep just the reason.
        reason = str(exc.args[0]).split(" @ ")[0] if exc.args else ""
        raise DataError(f"{path}: corrupt or truncated shard ({type(exc).__name__}: {reason})") from exc
    # A tar cut at a member boundary reads cleanly but short.
    if n_read != expected_samples:
        raise DataError(
            f"{path}: has {n_read} samples, manifest says {expected_samples} (truncated or replaced shard)"
        )


def require_fields(path: Path, record: dict, fields: tuple[str, ...]) -> str:
    """Return the record's key; a record missing one of fields means a corrupt shard."""
    key = record.get("__key__", "?")
    if any(field not in record for field in fields):
        have = sorted(k for k in record if not k.startswith("__"))
        raise DataError(
            f"{path}: sample {key!r} has only {have}, not {'+'.join(fields)} (corrupt or truncated shard)"
        )
    return key


def _decode_record(path: Path, record: dict) -> tuple[str, np.ndarray, list[str]]:
    key = require_fields(path, record, ("png", "json"))
    try:
        with Image.open(io.BytesIO(record["png"])) as img:
            image = np.asarray(img.convert("RGB"))
        captions = json.loads(record["json"].decode("utf-8"))["captions"]
    except Exception as exc:  # any decode failure means the shard content is corrupt
        raise DataError(f"{path}: sample {key!r} is corrupt ({type(exc).__name__}: {exc})") from exc
    return key, image, captions
