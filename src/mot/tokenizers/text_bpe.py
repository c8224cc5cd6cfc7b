"""Byte-pair-encoding text tokenizer for the synthetic captions (HF `tokenizers`).

Captions are normalised (NFKC, lowercase, whitespace collapsed), split on spaces
with a Metaspace pre-tokenizer and encoded with BPE.  The Metaspace decoder turns
the "▁" word markers back into spaces, so ``decode(encode(s)) == normalise(s)``.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<bos_speech>", "<eos_speech>")

# Always in the vocabulary, so words unseen at fit time still encode (letter by letter).
BASE_ALPHABET = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),  # one space between words: lossless round trip
            normalizers.Strip(),
        ]
    )


class TextTokenizer:
    """Thin wrapper around a `tokenizers.Tokenizer` with fixed special-token ids 0..6."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        _check_special_ids(tokenizer)
        self.pad_id = self.token_id("<pad>")
        self.bos_id = self.token_id("<bos>")
        self.eos_id = self.token_id("<eos>")
        self.boi_id = self.token_id("<boi>")
        self.eoi_id = self.token_id("<eoi>")

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> TextTokenizer:
        """Train BPE on `texts`; the result has at most `vocab_size` tokens (fewer if merges run out)."""
        min_size = len(SPECIAL_TOKENS) + len(BASE_ALPHABET) + 1  # +1 for the "▁" word marker
        if vocab_size < min_size:
            raise ValueError(f"vocab_size={vocab_size} is below the minimum {min_size} (specials + alphabet)")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = _normalizer()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),  # added first, so they get ids 0..6
            initial_alphabet=BASE_ALPHABET + ["▁"],
            limit_alphabet=vocab_size - len(SPECIAL_TOKENS),  # over budget, the rarest extra characters go
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        assert tokenizer.get_vocab_size() <= vocab_size, "BpeTrainer overshot the vocabulary budget"
        return cls(tokenizer)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        try:
            tokenizer = Tokenizer.from_file(str(path))
            return cls(tokenizer)
        except Exception as err:  # tokenizers raises plain Exception on malformed JSON
            raise ValueError(f"{path}: not a text tokenizer file ({err})") from None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without any special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, dropping special tokens."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def normalize(self, text: str) -> str:
        """The form of `text` that a round trip through encode/decode returns."""
        return self._tok.normalizer.normalize_str(text)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def token_id(self, name: str) -> int:
        token_id = self._tok.token_to_id(name)
        if token_id is None:
            raise KeyError(f"token {name!r} is not in the vocabulary")
        return token_id


def _check_special_ids(tokenizer: Tokenizer) -> None:
    for expected_id, name in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(name) != expected_id:
            raise ValueError(f"special token {name!r} must have id {expected_id}")
