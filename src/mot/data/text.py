"""Text-only documents (`data/text/`): a synthetic corpus written beside the scenes, or a plain-text import.

Chameleon pretrains mostly on text-only data; these documents let a study mix text-only sequences into
training (`sequences.mixture.text_only`). The synthetic corpus describes random scenes in several
sentences with the captions' own words (so the caption BPE covers it), and never contains a held-out
(val or test) caption verbatim: a sentence that would is redrawn. An import reads a folder of `.txt`
files (one document per file) or a JSON-lines file (one document per line, in its "text" field).

Shards are the image shards' format (shards.write_records/read_records): one record per document
(`txt`, UTF-8). Empty, non-UTF-8 or unreadable documents, and any that contain a held-out caption, are
skipped and counted by reason; corrupt shards raise a one-line DataError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from mot.data.shards import (
    BadSample, DataError, check_bad_fraction, load_manifest, read_records, read_split, require_fields,
    write_manifest, write_records,
)
from mot.data.synthetic import SIZE_WORDS, Scene, ShapeSpec, _choose_words, _pick, describe_scene, sample_scene

TEXT_SOURCES = ("synthetic", "folder", "jsonl")
TEXT_FIELD, SOURCE_FIELD = "txt", "src"
JSONL_FIELD = "text"
SENTENCE_ATTEMPTS = 20  # redraws of a sentence that would contain a held-out caption


@dataclass
class TextDocument:
    """One document, as produced by the generator or an importer.

    text: str, bytes (may not be valid UTF-8), or None when its file could not be read.
    """

    key: str
    text: str | bytes | None
    source: str | None = None  # where an imported document came from (its file), kept in the shard


# --- held-out captions --------------------------------------------------------------------------


class HeldOutCaptions:
    """The val/test captions no text-only document may contain verbatim (a substring search at any position)."""

    def __init__(self, captions: Iterable[str]):
        self.captions = sorted({c for c in captions if c})
        self._prefix = min((len(c) for c in self.captions), default=1)
        self._by_prefix: dict[str, list[str]] = {}
        for caption in self.captions:
            self._by_prefix.setdefault(caption[: self._prefix], []).append(caption)

    def __len__(self) -> int:
        return len(self.captions)

    def found_in(self, text: str) -> str | None:
        """A held-out caption that occurs in text, or None."""
        if not self.captions:
            return None
        for start in range(len(text) - self._prefix + 1):
            for caption in self._by_prefix.get(text[start:start + self._prefix], ()):
                if text.startswith(caption, start):
                    return caption
        return None


# --- the synthetic corpus -----------------------------------------------------------------------


def _shape_fact(shape: ShapeSpec, rng: np.random.Generator) -> str:
    """One sentence about one shape of the scene, in caption words ("the red box is at the bottom")."""
    w = _choose_words(shape, rng)
    forms = (
        f"the {w.colour} {w.kind} is {w.where}",
        f"the {w.kind} {w.where} is {w.colour}",
        f"the {w.colour} {w.kind} is {_pick(rng, SIZE_WORDS[shape.size])}",
        f"{w.where} there is {w.noun_phrase()}",
        f"the {w.size} {w.kind} {w.where} is {w.colour}",
    )
    return forms[int(rng.integers(len(forms)))]


def _sentence(scene: Scene, rng: np.random.Generator, first: bool) -> str:
    # A document opens with the whole scene, then alternates facts about one shape with paraphrases of it all.
    if first or rng.random() < 0.35:
        return describe_scene(scene, rng, 1)[0]
    return _shape_fact(scene.shapes[int(rng.integers(len(scene.shapes)))], rng)


def synthetic_document(
    rng: np.random.Generator,
    sentences_per_doc: int,
    min_shapes: int = 1,
    max_shapes: int = 3,
    held_out: HeldOutCaptions | None = None,
) -> str:
    """Several sentences about one random scene; a sentence containing a held-out caption is redrawn
    (and left out after SENTENCE_ATTEMPTS tries), so the document never contains one."""
    scene = sample_scene(rng, 32, min_shapes, max_shapes)
    sentences = []
    for i in range(sentences_per_doc):
        for _ in range(SENTENCE_ATTEMPTS):
            sentence = _sentence(scene, rng, first=i == 0)
            if held_out is None or held_out.found_in(sentence) is None:
                sentences.append(sentence)
                break
    return " ".join(f"{s}." for s in sentences)


def iter_synthetic_documents(
    n: int,
    seed: int,
    sentences_per_doc: int,
    min_shapes: int = 1,
    max_shapes: int = 3,
    held_out: HeldOutCaptions | None = None,
    key_prefix: str = "txt",
) -> Iterator[TextDocument]:
    """n documents; document i depends only on (seed, i) and the held-out captions."""
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        yield TextDocument(f"{key_prefix}-{i:07d}",
                           synthetic_document(rng, sentences_per_doc, min_shapes, max_shapes, held_out))


# --- importers ----------------------------------------------------------------------------------


def _text_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: text folder not found")
    files = sorted(p for p in root.rglob("*.txt") if not p.is_dir())
    if not files:
        raise DataError(f"{root}: no *.txt files (expected one document per file)")
    return files


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # counted as unreadable_document


def _jsonl_lines(path: Path) -> Iterator[bytes]:
    if not path.is_file():
        raise DataError(f"{path}: JSON-lines file not found")
    with open(path, "rb") as f:
        for line in f:
            yield line.rstrip(b"\r\n")


def _jsonl_document(key: str, line: bytes) -> TextDocument:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return TextDocument(key, line)  # counted as non_utf8_document
    except json.JSONDecodeError:
        return TextDocument(key, None) if line.strip() else TextDocument(key, "")
    text = record.get(JSONL_FIELD) if isinstance(record, dict) else None
    return TextDocument(key, text if isinstance(text, str) else None)


def import_split_indices(n_documents: int, n_train: int, n_val: int, seed: int) -> dict[str, list[int]]:
    """A seeded shuffle assigns the first n_val documents to val and the next (at most n_train) to train;
    each split keeps the source's order, so files and lines are read front to back."""
    order = np.random.default_rng(seed).permutation(n_documents)
    return {"train": sorted(int(i) for i in order[n_val:n_val + n_train]),
            "val": sorted(int(i) for i in order[:n_val])}


def iter_text_import(source: str, path: Path, indices: list[int]) -> Iterator[TextDocument]:
    """The documents at `indices` (sorted) of a folder of .txt files or a JSON-lines file."""
    path, wanted = Path(path), set(indices)
    if source == "folder":
        files = _text_files(path)
        for i in indices:  # keys carry no dots or slashes (webdataset splits keys there); the file name is kept
            yield TextDocument(f"file-{i:07d}", _read_file(files[i]), str(files[i].relative_to(path)))
    elif source == "jsonl":
        for i, line in enumerate(_jsonl_lines(path)):
            if i in wanted:
                yield _jsonl_document(f"line-{i + 1:07d}", line)
    else:
        raise DataError(f"data.text_only.source: {source!r} is not an import (folder or jsonl)")


def count_import_documents(source: str, path: Path) -> int:
    if source == "folder":
        return len(_text_files(Path(path)))
    return sum(1 for _ in _jsonl_lines(Path(path)))


# --- shards ---------------------------------------------------------------------------------------


def validate_document(document: TextDocument, held_out: HeldOutCaptions | None = None) -> str:
    """The document's text (whitespace-trimmed) or BadSample with the reason."""
    text = document.text
    if text is None:
        raise BadSample("unreadable_document")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadSample("non_utf8_document") from exc
    text = text.strip()
    if not text:
        raise BadSample("empty_document")
    if held_out is not None and held_out.found_in(text) is not None:
        raise BadSample("contains_eval_caption")
    return text


def write_text_split(documents: Iterable[TextDocument], out_dir: Path, split: str, shard_size: int,
                     total: int | None = None, held_out: HeldOutCaptions | None = None) -> dict:
    """Write valid documents to ``{out_dir}/{split}-{i:05d}.tar``; return the split's manifest entry."""
    n_chars = 0

    def encode(document: TextDocument) -> tuple[str, dict[str, bytes]]:
        nonlocal n_chars
        text = validate_document(document, held_out)
        n_chars += len(text)
        fields = {TEXT_FIELD: text.encode("utf-8")}
        if document.source is not None:
            fields[SOURCE_FIELD] = document.source.encode("utf-8")
        return document.key, fields

    entry = write_records(documents, encode, out_dir, split, shard_size, total, unit="doc")
    entry["characters"] = n_chars
    return entry


def read_text_split(data_dir: Path, split: str, verify: bool = False) -> Iterator[tuple[str, str]]:
    """Yield (key, document text) for a split of a text data dir, in shard order."""

    def decode(path: Path, record: dict) -> tuple[str, str]:
        key = require_fields(path, record, (TEXT_FIELD,))
        try:
            return key, record[TEXT_FIELD].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: sample {key!r} is corrupt (not UTF-8)") from exc

    yield from read_records(data_dir, split, decode, verify)


def build_text_dataset(
    text_cfg: Mapping,
    out_dir: Path,
    held_out: HeldOutCaptions,
    *,
    min_shapes: int = 1,
    max_shapes: int = 3,
    shard_size: int = 2000,
    max_bad_fraction: float = 0.05,
) -> dict:
    """Write the train and val splits of data.text_only under out_dir (data/text); return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # an old manifest must not vouch for shards being rewritten
    source = text_cfg["source"]
    n = {"train": int(text_cfg["n_train"]), "val": int(text_cfg["n_val"])}
    if source == "synthetic":
        # distinct seeds and key prefixes keep the splits' streams apart
        documents = {split: (iter_synthetic_documents(n[split], int(text_cfg["seed"]) + offset,
                                                      int(text_cfg["sentences_per_doc"]), min_shapes, max_shapes,
                                                      held_out, key_prefix=f"txt-{split}"), n[split])
                     for offset, split in enumerate(("train", "val"))}
        described = {"source": "synthetic", "sentences_per_doc": int(text_cfg["sentences_per_doc"])}
    elif source in ("folder", "jsonl"):
        if not text_cfg.get("path"):
            raise DataError(f"data.text_only.path: required when data.text_only.source is {source}")
        path = Path(text_cfg["path"])
        indices = import_split_indices(count_import_documents(source, path), n["train"], n["val"],
                                       int(text_cfg["seed"]))
        documents = {split: (iter_text_import(source, path, indices[split]), len(indices[split]))
                     for split in ("train", "val")}
        described = {"source": source, "path": str(path)}
    else:
        raise DataError(f"data.text_only.source: unknown source {source!r} (expected one of {', '.join(TEXT_SOURCES)})")
    splits = {}
    for split, (docs, total) in documents.items():
        for stale in out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].tar"):
            stale.unlink()
        entry = write_text_split(docs, out_dir, split, shard_size, total, held_out)
        check_bad_fraction(split, entry, max_bad_fraction)
        splits[split] = entry
    manifest = {**described, "seed": int(text_cfg["seed"]), "held_out_captions": len(held_out), "splits": splits,
                "created_by": "mot text-data"}
    write_manifest(out_dir, manifest)
    return manifest


def held_out_captions(image_data_dir: Path) -> HeldOutCaptions:
    """Every caption of the image data's splits other than train (val, test)."""
    splits = [s for s in load_manifest(image_data_dir)["splits"] if s != "train"]
    return HeldOutCaptions(c for split in splits for _, _, caps in read_split(image_data_dir, split) for c in caps)
