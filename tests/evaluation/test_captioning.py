"""Tests for evaluation.captioning: COCO caption files and caption metrics."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from pathlib import Path

import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

from evaluation import captioning
from evaluation.captioning import (
    caption_scores_from_files,
    cider_from_files,
    constant_predictions,
    load_coco_predictions,
    load_coco_references,
    most_frequent_caption,
    write_coco_predictions,
    write_coco_references,
)

# Mixed case and punctuation on purpose, so the PTB tokenizer has work to do.
REFERENCES = {
    11: [
        "A man riding a brown horse on the beach.",
        "A person rides a horse along the shore.",
        "Man on horseback near the ocean waves.",
        "A rider and his horse walk on the sand.",
    ],
    12: [
        "Two dogs play with a red ball in the park.",
        "A pair of dogs chasing a ball on the grass.",
        "Dogs running after a red ball.",
    ],
    13: [
        "A plate of pasta with tomato sauce.",
        "Spaghetti topped with red sauce on a white plate.",
        "A dish of noodles covered in tomato sauce.",
        "Pasta served on a plate, with basil.",
        "A white plate holding spaghetti and sauce.",
    ],
    14: [
        "A red double-decker bus drives down the street.",
        "A tall red bus on a city road.",
        "A bus with two floors driving through town.",
    ],
    15: [
        "A cat sleeping on a laptop keyboard.",
        "A grey cat lies on top of an open laptop.",
        "The kitten naps on the computer's keys.",
        "A cat curled up on a notebook computer.",
    ],
    16: [
        "People skiing down a snowy mountain.",
        "Skiers on a white slope under a blue sky.",
        "A group of people ski on fresh snow.",
    ],
}

MIXED_PREDICTIONS = {
    11: "A man rides a horse on the beach.",  # close paraphrase
    12: "Two dogs chasing a red ball.",  # good
    13: "A plate of food.",  # vague
    14: "A cat on a laptop.",  # wrong image
    15: "A cat sleeping on a laptop keyboard.",  # exact reference
    16: "",  # empty output
}

PERFECT_PREDICTIONS = {image_id: captions[0] for image_id, captions in REFERENCES.items()}


def _shuffled(predictions: dict[int, str]) -> dict[int, str]:
    """Each image gets the caption of a different image (a derangement by rotation)."""
    ids = list(predictions)
    return {image_id: predictions[ids[(i + 1) % len(ids)]] for i, image_id in enumerate(ids)}


@pytest.fixture(scope="module")
def references_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("captions") / "references.json"
    write_coco_references(REFERENCES, path)
    return path


def _predictions_file(tmp_path: Path, predictions: dict[int, str], name: str = "predictions.json") -> Path:
    path = tmp_path / name
    write_coco_predictions(predictions, path)
    return path


def _direct_pycocoevalcap_cider(references_path: Path, predictions_path: Path):
    """CIDEr the way COCOEvalCap computes it, straight from the JSON files."""
    annotations = json.loads(references_path.read_text())["annotations"]
    results = json.loads(predictions_path.read_text())
    gts: dict[int, list[dict]] = {}
    for annotation in annotations:
        gts.setdefault(annotation["image_id"], []).append({"caption": annotation["caption"]})
    res = {result["image_id"]: [{"caption": result["caption"]}] for result in results}
    res = {image_id: res[image_id] for image_id in gts}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    corpus, per_image = Cider().compute_score(gts, res)
    return corpus, dict(zip(gts, per_image))


# ---------------------------------------------------------------- CIDEr


def test_cider_from_files_matches_pycocoevalcap(references_path, tmp_path):
    predictions_path = _predictions_file(tmp_path, MIXED_PREDICTIONS)

    corpus, per_image = cider_from_files(references_path, predictions_path)
    expected_corpus, expected_per_image = _direct_pycocoevalcap_cider(references_path, predictions_path)

    assert corpus == pytest.approx(expected_corpus, abs=1e-12)
    assert set(per_image) == set(REFERENCES)
    for image_id, score in per_image.items():
        assert score == pytest.approx(expected_per_image[image_id], abs=1e-12)
    assert corpus == pytest.approx(sum(per_image.values()) / len(per_image), abs=1e-12)
    # the empty and the wrong-image predictions score nothing; the exact one scores the most
    assert per_image[16] == 0.0
    assert per_image[15] == max(per_image.values())


def test_perfect_beats_shuffled_and_constant(references_path, tmp_path):
    all_captions = [caption for captions in REFERENCES.values() for caption in captions]
    constant = constant_predictions(REFERENCES, most_frequent_caption(all_captions))

    def score(predictions, name):
        return cider_from_files(references_path, _predictions_file(tmp_path, predictions, name))

    perfect, perfect_per_image = score(PERFECT_PREDICTIONS, "perfect.json")
    shuffled, _ = score(_shuffled(PERFECT_PREDICTIONS), "shuffled.json")
    constant_score, _ = score(constant, "constant.json")

    assert perfect > 3.0
    assert min(perfect_per_image.values()) > 2.5
    assert shuffled < 0.2 * perfect
    assert constant_score < 0.2 * perfect


# An independent CIDEr-D, written from the paper's definition (Vedantam et al. 2015, sec. 3 and 4.2).
SIGMA = 6.0


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _plain_cider_d(references: dict[int, list[str]], candidates: dict[int, str]) -> dict[int, float]:
    """CIDEr-D per image: mean over n=1..4 of 10 * mean_j[gauss(len) * clipped cosine of tf-idf vectors]."""
    refs = {i: [r.split() for r in rs] for i, rs in references.items()}
    log_images = math.log(len(refs))
    scores = {}
    for image_id, candidate in candidates.items():
        words = candidate.split()
        per_n = []
        for n in range(1, 5):
            # document frequency: number of images whose references contain the n-gram
            df = Counter(g for rs in refs.values() for g in {g for r in rs for g in _ngram_counts(r, n)})

            def tfidf(counts: Counter) -> dict:
                return {g: c * (log_images - math.log(max(1.0, df[g]))) for g, c in counts.items()}

            cand = tfidf(_ngram_counts(words, n))
            cand_norm = math.sqrt(sum(v * v for v in cand.values()))
            total = 0.0
            for ref_words in refs[image_id]:
                ref = tfidf(_ngram_counts(ref_words, n))
                ref_norm = math.sqrt(sum(v * v for v in ref.values()))
                clipped = sum(min(v, ref.get(g, 0.0)) * ref.get(g, 0.0) for g, v in cand.items())
                cosine = clipped / (cand_norm * ref_norm) if cand_norm and ref_norm else 0.0
                penalty = math.exp(-((len(words) - len(ref_words)) ** 2) / (2 * SIGMA**2))
                total += penalty * cosine
            per_n.append(10.0 * total / len(refs[image_id]))
        scores[image_id] = sum(per_n) / 4
    return scores


# Already lowercase, no punctuation: PTB tokenisation leaves these untouched.
TOY_REFERENCES = {
    1: ["a black dog runs on the grass", "a dog is running on green grass", "the black dog plays outside"],
    2: ["a man is riding a bike down the road", "a cyclist rides down a long road", "a man on a bike"],
    3: ["a bowl of fruit on a table", "apples and bananas in a bowl", "fruit sits in a bowl on the table"],
}
TOY_CANDIDATES = {
    1: "a black dog running on the grass",
    2: "a man riding a bike on the road a bike",  # repeated bigram exercises clipping
    3: "a bowl on a table",
}


def test_cider_matches_independent_cider_d(tmp_path):
    references_path, predictions_path = tmp_path / "refs.json", tmp_path / "preds.json"
    write_coco_references(TOY_REFERENCES, references_path)
    write_coco_predictions(TOY_CANDIDATES, predictions_path)

    corpus, per_image = cider_from_files(references_path, predictions_path)
    expected = _plain_cider_d(TOY_REFERENCES, TOY_CANDIDATES)

    for image_id in TOY_CANDIDATES:
        assert per_image[image_id] == pytest.approx(expected[image_id], abs=1e-12)
    assert corpus == pytest.approx(sum(expected.values()) / 3, abs=1e-12)
    assert min(expected.values()) > 1.0  # every toy candidate overlaps its references


def test_independent_cider_d_penalises_length_and_repetition():
    # guards the reference implementation itself: a padded candidate loses score
    plain = _plain_cider_d(TOY_REFERENCES, {1: "a black dog runs on the grass"})[1]
    padded = _plain_cider_d(TOY_REFERENCES, {1: "a black dog runs on the grass " + "grass " * 8})[1]
    assert padded < 0.5 * plain


def test_line_breaks_inside_captions_do_not_shift_images(references_path, tmp_path):
    # raw PTBTokenizer splits at \r, which would hand image 12's caption to image 13
    broken = {**PERFECT_PREDICTIONS, 11: "A man riding a brown\rhorse on the beach."}

    _, per_image = cider_from_files(references_path, _predictions_file(tmp_path, broken, "broken.json"))
    _, expected = cider_from_files(references_path, _predictions_file(tmp_path, PERFECT_PREDICTIONS))

    assert per_image == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- all metrics


def test_caption_scores_on_perfect_predictions(references_path, tmp_path):
    predictions_path = _predictions_file(tmp_path, PERFECT_PREDICTIONS)

    scores = caption_scores_from_files(references_path, predictions_path)

    assert set(scores) == {"cider", "bleu4", "rouge_l", "meteor"}
    assert scores["cider"] == cider_from_files(references_path, predictions_path)[0]
    # each prediction is one of its references, so n-gram precision and LCS are exact
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0, abs=1e-12)
    assert scores["meteor"] == pytest.approx(1.0, abs=1e-6)


class _BrokenMeteor:
    """Stands in for a METEOR jar that dies mid-run, holding the scorer's lock."""

    def __init__(self):
        self.lock = threading.Lock()

    def compute_score(self, gts, res):
        self.lock.acquire()
        raise ValueError("could not convert string to float: ''")


@pytest.mark.parametrize("failure", ["no_java", "broken_jar"])
def test_caption_scores_without_meteor(references_path, tmp_path, monkeypatch, caplog, failure):
    if failure == "no_java":
        monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    else:
        monkeypatch.setattr(captioning, "Meteor", _BrokenMeteor)
    predictions_path = _predictions_file(tmp_path, MIXED_PREDICTIONS)

    with caplog.at_level(logging.WARNING, logger="evaluation.captioning"):
        scores = caption_scores_from_files(references_path, predictions_path)

    assert set(scores) == {"cider", "bleu4", "rouge_l"}
    assert 0.0 < scores["bleu4"] < 1.0 and 0.0 < scores["rouge_l"] < 1.0
    assert any("METEOR skipped" in record.message for record in caplog.records)


# ---------------------------------------------------------------- files


def test_round_trip(tmp_path):
    references_path, predictions_path = tmp_path / "r.json", tmp_path / "p.json"
    write_coco_references(REFERENCES, references_path)
    write_coco_predictions(MIXED_PREDICTIONS, predictions_path)

    assert load_coco_references(references_path) == REFERENCES
    assert load_coco_predictions(predictions_path) == MIXED_PREDICTIONS
    document = json.loads(references_path.read_text())
    assert document["type"] == "captions"
    assert [a["id"] for a in document["annotations"]] == list(range(1, 23))
    assert document["images"][0] == {"id": 11, "file_name": "11.png"}


def test_files_load_in_pycocotools(tmp_path):
    references_path, predictions_path = tmp_path / "r.json", tmp_path / "p.json"
    write_coco_references(REFERENCES, references_path)
    write_coco_predictions(MIXED_PREDICTIONS, predictions_path)

    coco = COCO(str(references_path))
    results = coco.loadRes(str(predictions_path))

    assert sorted(coco.getImgIds()) == sorted(REFERENCES)
    assert len(coco.getAnnIds()) == 22
    assert results.imgToAnns[13][0]["caption"] == "A plate of food."


def _valid_references() -> dict:
    return {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "a dog"},
            {"id": 2, "image_id": 2, "caption": "a cat"},
            {"id": 3, "image_id": 2, "caption": "a kitten"},
        ],
    }


def _broken_caption(doc):
    doc["annotations"][2]["caption"] = 7


def _string_image_id(doc):
    doc["annotations"][0]["image_id"] = "1"


def _unknown_image(doc):
    doc["annotations"][1]["image_id"] = 9


def _image_without_captions(doc):
    doc["images"].append({"id": 3})


def _no_annotations(doc):
    del doc["annotations"]


def _annotation_not_object(doc):
    doc["annotations"][1] = "a cat"


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (_broken_caption, "annotations[2].caption: expected a string"),
        (_string_image_id, "annotations[0].image_id: expected an integer"),
        (_unknown_image, "annotations[1].image_id: 9 is not in images"),
        (_image_without_captions, "images[2]: image 3 has no captions"),
        (_no_annotations, "annotations: missing"),
        (_annotation_not_object, "annotations[1]: expected an object"),
    ],
)
def test_malformed_references(tmp_path, corrupt, field):
    document = _valid_references()
    corrupt(document)
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ValueError) as error:
        load_coco_references(path)

    assert str(error.value) == f"{path}: {field}"


@pytest.mark.parametrize(
    "text, field",
    [
        ('{"image_id": 1, "caption": "a dog"}', "expected a JSON list of results at top level"),
        ('[{"image_id": 1, "caption": "a dog"}, {"image_id": 2}]', "[1].caption: missing"),
        ('[{"image_id": 1, "caption": ["a dog"]}]', "[0].caption: expected a string"),
        ('[{"image_id": true, "caption": "a dog"}]', "[0].image_id: expected an integer"),
        (
            '[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]',
            "[1].image_id: duplicate prediction for image 1",
        ),
        ('[{"image_id": 1, "caption": "a dog"', "invalid JSON: Expecting ',' delimiter at line 1"),
    ],
)
def test_malformed_predictions(tmp_path, text, field):
    path = tmp_path / "preds.json"
    path.write_text(text)

    with pytest.raises(ValueError) as error:
        load_coco_predictions(path)

    assert str(error.value) == f"{path}: {field}"


def test_missing_predictions_raise(references_path, tmp_path):
    partial = {i: caption for i, caption in PERFECT_PREDICTIONS.items() if i not in (12, 14)}
    predictions_path = _predictions_file(tmp_path, partial)

    with pytest.raises(ValueError, match=r"2 of 6 reference images have no prediction \(first: image_id 12\)"):
        cider_from_files(references_path, predictions_path)


def test_prediction_for_unknown_image_raises(references_path, tmp_path):
    predictions_path = _predictions_file(tmp_path, {**PERFECT_PREDICTIONS, 99: "a ghost"})

    with pytest.raises(ValueError, match=r"image_id 99 is not in the references"):
        caption_scores_from_files(references_path, predictions_path)


# ---------------------------------------------------------------- baselines


def test_most_frequent_caption_normalises_before_counting():
    captions = ["A dog.", "a cat", "  A DOG. ", "a cat ", "A   dog."]
    assert most_frequent_caption(captions) == "a dog."


def test_most_frequent_caption_tie_goes_to_first_seen():
    assert most_frequent_caption(["a cat", "A dog", "a dog", " A cat"]) == "a cat"
    assert most_frequent_caption(["a dog", "a cat", "a cat", "A DOG"]) == "a dog"


def test_most_frequent_caption_rejects_empty_input():
    with pytest.raises(ValueError, match="no captions"):
        most_frequent_caption([])


def test_constant_predictions():
    assert constant_predictions([3, 1, 2], "a dog") == {3: "a dog", 1: "a dog", 2: "a dog"}
