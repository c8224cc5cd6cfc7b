"""Deterministic synthetic captioned images: coloured shapes on a 3x3 grid.

Each image holds ``min_shapes..max_shapes`` shapes in distinct grid cells on a
background shade that no caption mentions (so images keep entropy the text does
not explain). Every image gets several different, all-correct paraphrases, like
COCO's five reference captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from mot.data.shards import Sample

SHAPE_KINDS = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
    "cyan": (20, 200, 210),
}

# Muted shades that are never named in captions.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "light grey": (205, 205, 205),
    "mid grey": (150, 150, 150),
    "pale beige": (235, 225, 200),
    "pale lavender": (218, 212, 235),
}

# Grid cell (row, col) -> canonical position name.
CELLS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}

# Caption vocabulary: every word here is a correct way to say the attribute.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk", "round dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}

# Position phrases: "where" follows a noun phrase, "bare" is the terse form.
_CORNER_WHERE = ("in the {v} {h}", "at the {v} {h}", "in the {v} {h} corner")
_WHERE_WORDS: dict[str, tuple[str, ...]] = {
    "top": ("at the top", "near the top", "at the top center"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom center"),
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "center": ("in the center", "in the middle", "at the center"),
}
_BARE_WORDS: dict[str, tuple[str, ...]] = {
    "top": ("top", "top center"),
    "bottom": ("bottom", "bottom center"),
    "left": ("left", "left side"),
    "right": ("right", "right side"),
    "center": ("center", "middle"),
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_LARGE_HALF_EXTENT = 0.46  # fraction of a grid cell
_SMALL_HALF_EXTENT = 0.30


@dataclass(frozen=True)
class ShapeSpec:
    """One shape in a scene, in caption terms plus its pixel centre."""

    kind: str
    colour: str
    size: str
    position: str  # canonical name from CELLS
    center_xy: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[ShapeSpec, ...]


def render_scene(
    rng: np.random.Generator,
    image_size: int = 32,
    min_shapes: int = 1,
    max_shapes: int = 3,
    captions_per_image: int = 5,
) -> tuple[np.ndarray, list[str]]:
    """Draw one random scene; return (HxWx3 uint8 image, distinct captions)."""
    image, captions, _ = render_scene_with_attributes(
        rng, image_size, min_shapes, max_shapes, captions_per_image
    )
    return image, captions


def render_scene_with_attributes(
    rng: np.random.Generator,
    image_size: int = 32,
    min_shapes: int = 1,
    max_shapes: int = 3,
    captions_per_image: int = 5,
) -> tuple[np.ndarray, list[str], Scene]:
    """Like render_scene, also returning the Scene the image and captions describe."""
    scene = sample_scene(rng, image_size, min_shapes, max_shapes)
    image = draw_scene(scene, image_size)
    captions = describe_scene(scene, rng, captions_per_image)
    return image, captions, scene


def iter_synthetic(
    n: int,
    seed: int,
    image_size: int = 32,
    min_shapes: int = 1,
    max_shapes: int = 3,
    captions_per_image: int = 5,
    key_prefix: str = "syn",
) -> Iterator[Sample]:
    """Yield n samples; sample i depends only on (seed, i), so chunks are reproducible."""
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        image, captions = render_scene(rng, image_size, min_shapes, max_shapes, captions_per_image)
        yield Sample(key=f"{key_prefix}-{i:07d}", image=image, captions=captions)


# --- scene sampling and drawing -------------------------------------------------


def sample_scene(
    rng: np.random.Generator, image_size: int, min_shapes: int, max_shapes: int
) -> Scene:
    if not 1 <= min_shapes <= max_shapes <= len(CELLS):
        raise ValueError(f"need 1 <= min_shapes <= max_shapes <= {len(CELLS)}")
    n_shapes = int(rng.integers(min_shapes, max_shapes + 1))
    cells = list(CELLS)
    chosen = rng.choice(len(cells), size=n_shapes, replace=False)
    cell_px = image_size / 3
    jitter = max(1, round(image_size / 32))  # a pixel or two, scaled with resolution
    shapes = []
    for index in chosen:
        row, col = cells[int(index)]
        dx, dy = rng.integers(-jitter, jitter + 1, size=2)
        shapes.append(
            ShapeSpec(
                kind=str(rng.choice(SHAPE_KINDS)),
                colour=str(rng.choice(list(COLOURS))),
                size=str(rng.choice(SIZES)),
                position=CELLS[(row, col)],
                center_xy=((col + 0.5) * cell_px + dx, (row + 0.5) * cell_px + dy),
            )
        )
    background = str(rng.choice(list(BACKGROUNDS)))
    return Scene(background=background, shapes=tuple(shapes))


def draw_scene(scene: Scene, image_size: int) -> np.ndarray:
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    # Pixel-centre coordinates so masks are symmetric about the shape centre.
    ys, xs = np.mgrid[0:image_size, 0:image_size] + 0.5
    cell_px = image_size / 3
    for shape in scene.shapes:
        half = (_LARGE_HALF_EXTENT if shape.size == "large" else _SMALL_HALF_EXTENT) * cell_px
        dx, dy = xs - shape.center_xy[0], ys - shape.center_xy[1]
        image[_shape_mask(shape.kind, dx, dy, half)] = COLOURS[shape.colour]
    return image


def _shape_mask(kind: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    if kind == "circle":
        return dx**2 + dy**2 <= half**2
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= half * 0.85  # similar area to the circle
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= half * 1.1
    if kind == "triangle":
        # Apex up at dy = -half, base at dy = +half with half-width `half`.
        return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape kind {kind!r}")


# --- captions ------------------------------------------------------------------


@dataclass(frozen=True)
class _Words:
    """One shape's wording, drawn afresh for each caption."""

    size: str
    colour: str
    kind: str
    where: str
    bare_where: str

    def noun_phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


def describe_scene(scene: Scene, rng: np.random.Generator, n_captions: int) -> list[str]:
    """Return n_captions distinct correct captions, cycling templates in a random order."""
    templates = [_TEMPLATES[int(i)] for i in rng.permutation(len(_TEMPLATES))]
    captions: list[str] = []
    max_attempts = 50 * max(n_captions, 1)
    for attempt in range(max_attempts):
        if len(captions) == n_captions:
            return captions
        order = rng.permutation(len(scene.shapes))
        words = [_choose_words(scene.shapes[int(i)], rng) for i in order]
        caption = templates[attempt % len(templates)](words, rng)
        if caption not in captions:
            captions.append(caption)
    if len(captions) == n_captions:
        return captions
    raise ValueError(f"could not find {n_captions} distinct captions for {scene}")


def _choose_words(shape: ShapeSpec, rng: np.random.Generator) -> _Words:
    where_options, bare_options = _position_words(shape.position)
    return _Words(
        size=_pick(rng, SIZE_WORDS[shape.size]),
        colour=shape.colour,
        kind=_pick(rng, SHAPE_WORDS[shape.kind]),
        where=_pick(rng, where_options),
        bare_where=_pick(rng, bare_options),
    )


def _position_words(position: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if " " in position:  # a corner such as "top left"
        vertical, horizontal = position.split()
        upper = "upper" if vertical == "top" else "lower"
        where = tuple(t.format(v=vertical, h=horizontal) for t in _CORNER_WHERE)
        where += (f"in the {upper} {horizontal}",)
        return where, (position, f"{upper} {horizontal}", f"{position} corner")
    return _WHERE_WORDS[position], _BARE_WORDS[position]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _listing(words: list[_Words], rng: np.random.Generator) -> str:
    # "a large red circle in the top left and a small blue square at the bottom"
    return _join([f"{w.noun_phrase()} {w.where}" for w in words])


def _there_is(words: list[_Words], rng: np.random.Generator) -> str:
    return "there is " + _listing(words, rng)


def _terse(words: list[_Words], rng: np.random.Generator) -> str:
    # "a red circle, large, top left; a small blue square, bottom"
    return "; ".join(f"{_article(w.colour)} {w.colour} {w.kind}, {w.size}, {w.bare_where}" for w in words)


def _position_first(words: list[_Words], rng: np.random.Generator) -> str:
    # "in the top left there is a big red circle and at the bottom a small blue square"
    first, *rest = words
    clauses = [f"{first.where} there is {first.noun_phrase()}"]
    clauses += [f"{w.where} {w.noun_phrase()}" for w in rest]
    return _join(clauses)


def _picture_of(words: list[_Words], rng: np.random.Generator) -> str:
    opener = _pick(rng, ("a picture of", "an image showing", "a drawing of"))
    return f"{opener} {_listing(words, rng)}"


def _counted(words: list[_Words], rng: np.random.Generator) -> str:
    # "two shapes: a big red circle in the top left and a small blue square at the bottom"
    noun = "shape" if len(words) == 1 else "shapes"
    return f"{_NUMBER_WORDS[len(words)]} {noun}: {_listing(words, rng)}"


_TEMPLATES: tuple[Callable[[list[_Words], np.random.Generator], str], ...] = (
    _listing,
    _there_is,
    _terse,
    _position_first,
    _picture_of,
    _counted,
)
