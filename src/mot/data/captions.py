"""Caption statistics of a split."""

from __future__ import annotations

from collections import Counter
from typing import Iterable


def most_frequent_caption(captions: Iterable[str]) -> str:
    """The most common caption after lowercasing and whitespace normalisation; ties go to the first seen."""
    counts = Counter(" ".join(caption.lower().split()) for caption in captions)
    if not counts:
        raise ValueError("most_frequent_caption: no captions given")
    # Counter keeps first-insertion order and max returns the first maximal key
    return max(counts, key=counts.__getitem__)
