"""COCO-format caption files and caption metrics (CIDEr-D, BLEU-4, ROUGE-L, METEOR).

References and predictions are exchanged as COCO JSON files so that the scores
are exactly those of the standard pycocoevalcap pipeline: PTB tokenisation of
both sides, then the metric scorers on the tokenised text.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterable

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from mot.data.captions import most_frequent_caption  # noqa: F401  (part of this module's API: the baseline caption)

log = logging.getLogger(__name__)

Tokenized = dict[int, list[str]]


# ---------------------------------------------------------------- writing


def write_coco_references(references: dict[int, list[str]], path: Path) -> None:
    """Write reference captions as a COCO captions annotation file."""
    images = [{"id": int(image_id), "file_name": f"{int(image_id)}.png"} for image_id in references]
    annotations = [
        {"id": running, "image_id": int(image_id), "caption": caption}
        for running, (image_id, caption) in enumerate(_flatten(references), start=1)
    ]
    document = {
        "info": {"description": "reference captions", "version": "1.0"},
        "licenses": [],
        "type": "captions",
        "images": images,
        "annotations": annotations,
    }
    _write_json(document, Path(path))


def write_coco_predictions(predictions: dict[int, str], path: Path) -> None:
    """Write one predicted caption per image in the COCO results format."""
    results = [{"image_id": int(image_id), "caption": caption} for image_id, caption in predictions.items()]
    _write_json(results, Path(path))


def _flatten(references: dict[int, list[str]]) -> Iterable[tuple[int, str]]:
    for image_id, captions in references.items():
        for caption in captions:
            yield image_id, caption


def _write_json(document: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- loading


def load_coco_references(path: Path) -> dict[int, list[str]]:
    """Read a COCO captions annotation file into {image_id: [captions]} in image order."""
    document = _read_json(path)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object at top level")
    images = _field(document, "images", list, path, "images")
    annotations = _field(document, "annotations", list, path, "annotations")
    references: dict[int, list[str]] = {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        image_id = _image_id(_as_object(image, path, where), "id", path, where)
        if image_id in references:
            raise ValueError(f"{path}: {where}.id: duplicate image id {image_id}")
        references[image_id] = []
    for index, annotation in enumerate(annotations):
        image_id, caption = _id_and_caption(annotation, path, f"annotations[{index}]")
        if image_id not in references:
            raise ValueError(f"{path}: annotations[{index}].image_id: {image_id} is not in images")
        references[image_id].append(caption)
    _require_captions(references, path)
    return references


def load_coco_predictions(path: Path) -> dict[int, str]:
    """Read a COCO results file into {image_id: caption}; one caption per image."""
    results = _read_json(path)
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a JSON list of results at top level")
    predictions: dict[int, str] = {}
    for index, result in enumerate(results):
        image_id, caption = _id_and_caption(result, path, f"[{index}]")
        if image_id in predictions:
            raise ValueError(f"{path}: [{index}].image_id: duplicate prediction for image {image_id}")
        predictions[image_id] = caption
    return predictions


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err.msg} at line {err.lineno}") from None


def _id_and_caption(entry: Any, path: Path, where: str) -> tuple[int, str]:
    entry = _as_object(entry, path, where)
    image_id = _image_id(entry, "image_id", path, where)
    caption = _field(entry, "caption", str, path, f"{where}.caption")
    return image_id, caption


def _as_object(entry: Any, path: Path, where: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {where}: expected an object")
    return entry


def _image_id(entry: dict, key: str, path: Path, where: str) -> int:
    value = entry.get(key)
    # bool is a subclass of int, but `true` is never a meaningful image id
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{path}: {where}.{key}: expected an integer")
    return value


def _field(entry: dict, key: str, kind: type, path: Path, where: str) -> Any:
    if key not in entry:
        raise ValueError(f"{path}: {where}: missing")
    value = entry[key]
    if not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        readable = {"str": "string", "list": "list", "dict": "object"}.get(kind.__name__, kind.__name__)
        raise ValueError(f"{path}: {where}: expected {article} {readable}")
    return value


def _require_captions(references: dict[int, list[str]], path: Path) -> None:
    # CIDEr averages over references, so an image without any cannot be scored
    for index, (image_id, captions) in enumerate(references.items()):
        if not captions:
            raise ValueError(f"{path}: images[{index}]: image {image_id} has no captions")


# ---------------------------------------------------------------- scoring


def cider_from_files(references_path: Path, predictions_path: Path) -> tuple[float, dict[int, float]]:
    """Corpus CIDEr-D and per-image CIDEr-D of the predictions against the references."""
    references, predictions = _tokenized_pair(references_path, predictions_path)
    return _cider(references, predictions)


def caption_scores_from_files(references_path: Path, predictions_path: Path) -> dict[str, float]:
    """CIDEr-D, BLEU-4, ROUGE-L and (when Java runs) METEOR on the same tokenised captions."""
    references, predictions = _tokenized_pair(references_path, predictions_path)
    scores = {
        "cider": _cider(references, predictions)[0],
        "bleu4": float(Bleu(4).compute_score(references, predictions, verbose=0)[0][3]),
        "rouge_l": float(Rouge().compute_score(references, predictions)[0]),
    }
    meteor = _meteor(references, predictions)
    if meteor is not None:
        scores["meteor"] = meteor
    return scores


def _tokenized_pair(references_path: Path, predictions_path: Path) -> tuple[Tokenized, Tokenized]:
    references = load_coco_references(references_path)
    predictions = load_coco_predictions(predictions_path)
    _check_alignment(references, predictions, references_path, predictions_path)
    predictions = {image_id: [predictions[image_id]] for image_id in references}
    return _tokenize(references), _tokenize(predictions)


def _check_alignment(
    references: dict[int, list[str]],
    predictions: dict[int, str],
    references_path: Path,
    predictions_path: Path,
) -> None:
    unknown = [image_id for image_id in predictions if image_id not in references]
    if unknown:
        raise ValueError(f"{predictions_path}: image_id {unknown[0]} is not in the references {references_path}")
    missing = [image_id for image_id in references if image_id not in predictions]
    if missing:
        raise ValueError(
            f"{predictions_path}: {len(missing)} of {len(references)} reference images have no prediction"
            f" (first: image_id {missing[0]})"
        )


def _tokenize(captions: dict[int, list[str]]) -> Tokenized:
    # the tokenizer works line by line, so a stray \n or \r would shift every later caption
    single_line = {
        image_id: [{"caption": " ".join(text.split())} for text in texts] for image_id, texts in captions.items()
    }
    tokenized = PTBTokenizer().tokenize(single_line)
    if any(len(tokenized.get(image_id, [])) != len(texts) for image_id, texts in captions.items()):
        raise RuntimeError("PTBTokenizer returned a different number of captions than it was given")
    return tokenized


def _cider(references: Tokenized, predictions: Tokenized) -> tuple[float, dict[int, float]]:
    corpus, per_image = Cider().compute_score(references, predictions)
    return float(corpus), {image_id: float(s) for image_id, s in zip(references, per_image)}


def _meteor(references: Tokenized, predictions: Tokenized) -> float | None:
    """METEOR via its Java subprocess, or None (with a warning) when that fails."""
    if shutil.which("java") is None:
        log.warning("METEOR skipped: no java executable on PATH")
        return None
    try:
        scorer = Meteor()
    except OSError as err:
        log.warning("METEOR skipped: could not start the METEOR jar: %s", err)
        return None
    try:
        return float(scorer.compute_score(references, predictions)[0])
    except (OSError, ValueError) as err:
        log.warning("METEOR skipped: the METEOR jar failed: %s", err)
        return None
    finally:
        _release_meteor(scorer)


def _release_meteor(scorer: Meteor) -> None:
    # Meteor.__del__ takes its lock; if compute_score died holding it, the interpreter would hang
    if scorer.lock.locked():
        scorer.lock.release()


# ---------------------------------------------------------------- baselines


def constant_predictions(image_ids: Iterable[int], caption: str) -> dict[int, str]:
    """The same caption for every image: the sanity baseline behind eval/cider_constant."""
    return {int(image_id): caption for image_id in image_ids}
