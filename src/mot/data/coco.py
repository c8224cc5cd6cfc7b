"""Import a COCO-style captions file (``captions_*.json`` + image folder) as Samples.

The JSON is checked field by field up front, so a malformed file fails with one
line naming the file and the offending field instead of a KeyError mid-run.
Missing or corrupt image files are not errors here: they become Samples that
``write_split`` counts as bad.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NoReturn

from mot.data.shards import DataError, Sample


@dataclass
class CocoImage:
    image_id: int
    file_name: str
    captions: list[str] = field(default_factory=list)


def iter_coco_captions(captions_json: Path, image_dir: Path) -> Iterator[Sample]:
    """Yield one Sample per image listed in the file, with all its captions grouped.

    image is the file's raw bytes, or None when the file does not exist.
    """
    image_dir = Path(image_dir)
    for entry in load_coco_index(captions_json):
        path = image_dir / entry.file_name
        image = path.read_bytes() if path.is_file() else None
        yield Sample(key=f"coco-{entry.image_id}", image=image, captions=entry.captions)


def load_coco_index(captions_json: Path) -> list[CocoImage]:
    """Parse and validate the captions file; images keep the file's order."""
    checker = _FieldChecker(Path(captions_json))
    document = checker.load()
    images = checker.list_field(document, "images")
    annotations = checker.list_field(document, "annotations")

    by_id: dict[int, CocoImage] = {}
    for i, image in enumerate(images):
        where = f"images[{i}]"
        checker.require_object(image, where)
        image_id = checker.typed(image, "id", int, where)
        file_name = checker.typed(image, "file_name", str, where)
        if image_id in by_id:
            checker.fail(f"{where}.id", f"duplicate image id {image_id}")
        by_id[image_id] = CocoImage(image_id, file_name)

    for i, annotation in enumerate(annotations):
        where = f"annotations[{i}]"
        checker.require_object(annotation, where)
        image_id = checker.typed(annotation, "image_id", int, where)
        caption = checker.typed(annotation, "caption", str, where)
        if image_id not in by_id:
            checker.fail(f"{where}.image_id", f"no image with id {image_id} in 'images'")
        by_id[image_id].captions.append(caption)
    return list(by_id.values())


_JSON_TYPE_NAMES = {
    bool: "bool", int: "int", float: "float", str: "string",
    list: "array", dict: "object", type(None): "null",
}
_EXPECTED = {int: "an integer", str: "a string", list: "an array", dict: "an object"}


class _FieldChecker:
    """Raises one-line DataErrors of the form '<file>: <field>: <problem>'."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str) -> NoReturn:
        raise DataError(f"{self.path}: {where}: {problem}")

    def load(self) -> dict:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{self.path}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            message = str(exc).splitlines()[0]
            raise DataError(f"{self.path}: not valid JSON ({message})") from exc
        self.require_object(document, "<top level>")
        return document

    def require_object(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            self.fail(where, f"expected an object, got {_json_type(value)}")

    def list_field(self, document: dict, name: str) -> list:
        return self.typed(document, name, list, None)

    def typed(self, container: dict, name: str, expected: type, parent: str | None) -> Any:
        where = f"{parent}.{name}" if parent else name
        if name not in container:
            self.fail(where, "missing")
        value = container[name]
        # bool is a subclass of int in Python but not a valid JSON id.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            self.fail(where, f"expected {_EXPECTED[expected]}, got {_json_type(value)}")
        return value


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
