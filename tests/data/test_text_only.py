"""Text-only documents: a deterministic synthetic corpus in the captions' words that never contains a held-out
caption, plain-text imports (a .txt folder, a JSON-lines file) into the same shards with bad documents counted,
and their tokenization with the caption BPE into seq_len rows."""

import hashlib
import json
import re

import numpy as np
import pytest

from mot.config.load import load_config
from mot.data.sequences import TextChunks
from mot.data.shards import DataError, load_manifest, write_split
from mot.data.stage import build_text
from mot.data.synthetic import iter_synthetic
from mot.data.text import (HeldOutCaptions, TextDocument, build_text_dataset, import_split_indices,
                           iter_synthetic_documents, read_text_split, write_text_split)
from mot.paths import StudyPaths
from mot.tokenizers.stage import tokenize_text
from mot.tokenizers.text_bpe import TextTokenizer
from tests.conftest import REPO

SYNTHETIC = {"source": "synthetic", "path": None, "n_train": 300, "n_val": 60, "sentences_per_doc": 4, "seed": 7}


def captions_of(n, seed):
    return [c for sample in iter_synthetic(n, seed=seed) for c in sample.captions]


@pytest.fixture(scope="module")
def held_out():
    """The captions of a val and a test split (as `mot data` draws them: seed + 1, seed + 2)."""
    return HeldOutCaptions(captions_of(300, seed=1235) + captions_of(100, seed=1236))


def words(text):
    return set(re.findall(r"[a-z]+", text))


# --- the synthetic corpus ------------------------------------------------------------------------

def test_synthetic_documents_are_deterministic_and_each_depends_only_on_seed_and_index(held_out):
    first = [d.text for d in iter_synthetic_documents(40, seed=3, sentences_per_doc=4, held_out=held_out)]
    again = [d.text for d in iter_synthetic_documents(40, seed=3, sentences_per_doc=4, held_out=held_out)]
    longer = [d.text for d in iter_synthetic_documents(80, seed=3, sentences_per_doc=4, held_out=held_out)]
    other = [d.text for d in iter_synthetic_documents(40, seed=4, sentences_per_doc=4, held_out=held_out)]
    assert first == again == longer[:40]
    assert sum(a != b for a, b in zip(first, other)) > 35
    assert len(set(first)) == 40


def test_a_document_is_several_sentences_in_the_captions_words(held_out):
    docs = [d.text for d in iter_synthetic_documents(200, seed=1, sentences_per_doc=5, held_out=held_out)]
    sentences = [d.count(".") for d in docs]
    assert all(d.endswith(".") for d in docs)
    assert min(sentences) >= 4 and np.mean(sentences) > 4.9  # a sentence is left out only when it cannot avoid a caption
    caption_words = set().union(*(words(c) for c in captions_of(2000, seed=1234)))
    assert set().union(*(words(d) for d in docs)) <= caption_words


def test_no_document_contains_a_val_or_test_caption_verbatim(held_out):
    docs = [d.text for d in iter_synthetic_documents(1500, seed=11, sentences_per_doc=4, held_out=held_out)]
    captions = held_out.captions
    assert not [(d, c) for d in docs for c in captions if c in d]  # brute force, not the index under test
    # ... which takes the filter: drawn without it, some documents would contain one
    unfiltered = [d.text for d in iter_synthetic_documents(300, seed=11, sentences_per_doc=4)]
    assert sum(any(c in d for c in captions) for d in unfiltered) > 10


def test_held_out_captions_are_found_anywhere_in_a_text():
    held = HeldOutCaptions(["a red box at the top", "two shapes: a red box"])
    assert held.found_in("x. there is a red box at the top and more.") == "a red box at the top"
    assert held.found_in("zz two shapes: a red box") == "two shapes: a red box"
    assert held.found_in("a red box at the bottom") is None
    assert HeldOutCaptions([]).found_in("anything") is None


def test_synthetic_shards_are_byte_identical_across_builds(tmp_path, held_out):
    a = build_text_dataset(SYNTHETIC, tmp_path / "a", held_out, shard_size=128)
    b = build_text_dataset(SYNTHETIC, tmp_path / "b", held_out, shard_size=128)
    assert a == b and load_manifest(tmp_path / "a") == a
    assert {s: e["n_samples"] for s, e in a["splits"].items()} == {"train": 300, "val": 60}
    assert [s["n_samples"] for s in a["splits"]["train"]["shards"]] == [128, 128, 44]
    for shard in a["splits"]["train"]["shards"]:
        assert shard["sha256"] == hashlib.sha256((tmp_path / "a" / shard["path"]).read_bytes()).hexdigest()
    train = [t for _, t in read_text_split(tmp_path / "a", "train", verify=True)]
    assert train == [d.text for d in iter_synthetic_documents(300, 7, 4, held_out=held_out, key_prefix="txt-train")]
    assert set(train).isdisjoint(t for _, t in read_text_split(tmp_path / "a", "val"))
    assert a["held_out_captions"] == len(held_out)


def test_the_stage_avoids_the_image_datas_val_and_test_captions(tmp_path):
    config = load_config([REPO / "configs" / "smoke.yaml"])
    config["results_dir"] = str(tmp_path)
    config["data"]["text_only"].update(n_train=400, n_val=50)
    paths = StudyPaths.from_config(config)
    splits = {split: write_split(iter_synthetic(n, seed=s), paths.data, split, 1000)
              for split, n, s in (("train", 50, 1), ("val", 200, 2), ("test", 80, 3))}
    (paths.data / "manifest.json").write_text(json.dumps({"source": "synthetic", "splits": splits}))
    manifest = build_text(config, paths.text_data)
    assert manifest["held_out_captions"] == len(set(captions_of(200, 2) + captions_of(80, 3)))
    held = set(captions_of(200, 2) + captions_of(80, 3))
    docs = [t for split in ("train", "val") for _, t in read_text_split(paths.text_data, split)]
    assert len(docs) == 450 and not any(c in d for d in docs for c in held)


# --- imports -------------------------------------------------------------------------------------

def test_folder_import_round_trips_and_counts_unreadable_non_utf8_and_empty_files(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    texts = {f"doc{i:02d}.txt": f"document number {i}.\nit has two lines." for i in range(20)}
    texts["sub/nested.txt"] = "a nested document."
    for name, text in texts.items():
        (corpus / name).write_text(text, encoding="utf-8")
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (corpus / "empty.txt").write_text("  \n")
    (corpus / "dead.txt").symlink_to(tmp_path / "missing.txt")  # listed, but cannot be read
    (corpus / "notes.md").write_text("not a .txt file")
    cfg = {"source": "folder", "path": str(corpus), "n_train": 100, "n_val": 5, "sentences_per_doc": 4, "seed": 0}
    manifest = build_text_dataset(cfg, tmp_path / "out", HeldOutCaptions([]), max_bad_fraction=0.5)
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert train["n_samples"] + val["n_samples"] == 21 and val["n_samples"] + val["n_bad"] == 5
    bad = {r: train["bad_by_reason"].get(r, 0) + val["bad_by_reason"].get(r, 0)
           for r in ("unreadable_document", "non_utf8_document", "empty_document")}
    assert bad == {"unreadable_document": 1, "non_utf8_document": 1, "empty_document": 1}
    read = dict(kv for split in ("train", "val") for kv in read_text_split(tmp_path / "out", split))
    files = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.txt"))  # keys number the sorted files
    assert read == {f"file-{files.index(name):07d}": text.strip() for name, text in texts.items()}
    assert manifest["source"] == "folder" and manifest["path"] == str(corpus)


def test_jsonl_import_reads_the_text_field_and_counts_bad_lines(tmp_path):
    lines = [json.dumps({"text": f"line document {i}.", "id": i}) for i in range(30)]
    lines[3] = "{not json"
    lines[7] = json.dumps({"body": "no text field"})
    lines[9] = json.dumps({"text": ""})
    path = tmp_path / "corpus.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + b'{"text": "\xff\xfe"}\n')
    cfg = {"source": "jsonl", "path": str(path), "n_train": 1000, "n_val": 4, "sentences_per_doc": 1, "seed": 1}
    manifest = build_text_dataset(cfg, tmp_path / "out", HeldOutCaptions([]), max_bad_fraction=0.5)
    counts = {}
    for entry in manifest["splits"].values():
        for reason, n in entry["bad_by_reason"].items():
            counts[reason] = counts.get(reason, 0) + n
    assert counts == {"unreadable_document": 2, "empty_document": 1, "non_utf8_document": 1}
    read = dict(kv for split in ("train", "val") for kv in read_text_split(tmp_path / "out", split))
    assert read == {f"line-{i + 1:07d}": f"line document {i}." for i in range(30) if i not in (3, 7, 9)}


def test_import_splits_are_seeded_disjoint_and_capped():
    split = import_split_indices(100, n_train=50, n_val=10, seed=3)
    assert len(split["val"]) == 10 and len(split["train"]) == 50
    assert not set(split["val"]) & set(split["train"]) and split["train"] == sorted(split["train"])
    assert split == import_split_indices(100, 50, 10, seed=3) != import_split_indices(100, 50, 10, seed=4)


def test_an_imported_document_holding_a_held_out_caption_is_skipped_and_counted(tmp_path):
    docs = [TextDocument("a", "fine text."), TextDocument("b", "it says a red box at the top here.")]
    entry = write_text_split(docs, tmp_path, "train", 10, held_out=HeldOutCaptions(["a red box at the top"]))
    assert entry["n_samples"] == 1 and entry["bad_by_reason"] == {"contains_eval_caption": 1}


def test_too_many_bad_documents_is_a_data_error(tmp_path):
    (tmp_path / "c").mkdir()
    for i in range(4):
        (tmp_path / "c" / f"{i}.txt").write_text("" if i else "ok")
    cfg = {"source": "folder", "path": str(tmp_path / "c"), "n_train": 10, "n_val": 1, "sentences_per_doc": 1,
           "seed": 0}
    with pytest.raises(DataError, match="empty_document"):
        build_text_dataset(cfg, tmp_path / "out", HeldOutCaptions([]))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no \\*.txt files"):
        build_text_dataset({**cfg, "path": str(tmp_path / "none")}, tmp_path / "o2", HeldOutCaptions([]))
    with pytest.raises(DataError, match="text folder not found"):
        build_text_dataset({**cfg, "path": str(tmp_path / "missing")}, tmp_path / "o3", HeldOutCaptions([]))


# --- tokenization ----------------------------------------------------------------------------------

def test_documents_are_cut_into_rows_of_seq_len_plus_one():
    chunks = TextChunks.from_documents([[1, 10, 11, 2], list(range(1, 12)), [1, 2]], width=4)
    assert [chunks.row(i).tolist() for i in range(len(chunks))] == [
        [1, 10, 11, 2], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [1, 2]]
    assert chunks.documents.tolist() == [0, 1, 1, 1, 2]
    assert TextChunks.from_documents([[1, 2, 3, 4, 5]], width=4).lengths.tolist() == [4]  # nothing left to predict


def test_tokenize_text_encodes_with_the_caption_bpe(tmp_path, held_out):
    config = load_config([REPO / "configs" / "smoke.yaml"])
    config["results_dir"] = str(tmp_path)
    config["settings"]["chameleon"]["sequences"] = {"mixture": {"text_only": 1.0}}
    paths = StudyPaths.from_config(config)
    text = TextTokenizer.fit(captions_of(300, seed=5), vocab_size=256)  # fitted on captions only
    text.save(paths.text_tokenizer)
    build_text_dataset(SYNTHETIC, paths.text_data, held_out)
    stats = tokenize_text(config)
    width = config["sequences"]["seq_len"] + 1
    assert json.loads(paths.text_stats.read_text()) == stats
    assert stats["row_tokens"] == width
    for split in ("train", "val"):
        chunks = TextChunks.load(paths.split_text(split))
        docs = [t for _, t in read_text_split(paths.text_data, split)]
        assert stats[split]["documents"] == len(docs) and stats[split]["rows"] == len(chunks)
        assert chunks.ids.shape[1] == width and chunks.lengths.max() <= width
        for d, doc in enumerate(docs[:20]):  # a document's rows, joined, are `<bos> its BPE ids <eos>`
            joined = np.concatenate([chunks.row(i) for i in np.flatnonzero(chunks.documents == d)])
            assert joined.tolist() == [text.bos_id, *text.encode(doc), text.eos_id]
            assert text.decode(joined.tolist()) == text.normalize(doc)
    # the corpus speaks the captions' language: about as many tokens per word as a caption
    assert stats["train"]["tokens_per_word"] < 2.0
