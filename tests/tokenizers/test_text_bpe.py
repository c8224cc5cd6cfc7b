import itertools

import pytest

from mot.tokenizers.text_bpe import SPECIAL_TOKENS, TextTokenizer

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]
PLACES = ["top left", "top right", "bottom left", "bottom right", "centre"]


def make_captions() -> list[str]:
    return [
        f"a {size} {colour} {shape} in the {place}"
        for size, colour, shape, place in itertools.product(["small", "large"], COLOURS, SHAPES, PLACES)
    ]


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return make_captions()


@pytest.fixture(scope="module")
def tokenizer(captions) -> TextTokenizer:
    return TextTokenizer.fit(captions, vocab_size=120)


def test_special_tokens_get_ids_0_to_6_in_order(tokenizer):
    assert [tokenizer.token_id(name) for name in SPECIAL_TOKENS] == list(range(7))
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.boi_id, tokenizer.eoi_id) == (0, 1, 2, 3, 4)


def test_round_trip_of_training_captions(tokenizer, captions):
    for caption in captions[::7]:
        ids = tokenizer.encode(caption)
        assert all(i >= len(SPECIAL_TOKENS) for i in ids), "encode must not add special tokens"
        assert tokenizer.decode(ids) == caption


def test_bpe_merges_shorten_frequent_words(tokenizer):
    # "triangle" is in a quarter of the captions, so it should be far fewer tokens than letters.
    assert len(tokenizer.encode("triangle")) < len("triangle") // 2


def test_round_trip_returns_normalised_text(tokenizer):
    assert tokenizer.decode(tokenizer.encode("  A  Small RED\tcircle ")) == "a small red circle"
    assert tokenizer.normalize("  A  Small RED\tcircle ") == "a small red circle"


def test_decode_skips_special_tokens(tokenizer):
    ids = [tokenizer.bos_id, *tokenizer.encode("a blue star"), tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(ids) == "a blue star"


@pytest.mark.parametrize("requested", [80, 120, 5000])
def test_vocab_size_never_exceeds_request(captions, requested):
    tokenizer = TextTokenizer.fit(captions, vocab_size=requested)
    assert tokenizer.vocab_size <= requested
    assert max(tokenizer.encode(" ".join(captions[:20]))) < tokenizer.vocab_size


def test_small_corpus_gives_fewer_tokens_than_requested(captions):
    assert TextTokenizer.fit(captions, vocab_size=5000).vocab_size < 5000


def test_vocab_size_below_specials_plus_alphabet_is_rejected(captions):
    with pytest.raises(ValueError, match="vocab_size"):
        TextTokenizer.fit(captions, vocab_size=20)


def test_unseen_word_falls_back_to_characters(tokenizer):
    text = "a zebra, 42 quux!"
    ids = tokenizer.encode(text)
    assert len(ids) >= len("zebra")
    assert tokenizer.decode(ids) == text


def test_save_load_gives_identical_encodings(tokenizer, captions, tmp_path):
    path = tmp_path / "sub" / "text_tokenizer.json"
    tokenizer.save(path)
    loaded = TextTokenizer.load(path)
    assert loaded.vocab_size == tokenizer.vocab_size
    for text in [*captions[:10], "an unseen jackalope"]:
        assert loaded.encode(text) == tokenizer.encode(text)


def test_load_of_garbage_file_raises_value_error_naming_path(tmp_path):
    path = tmp_path / "garbage.json"
    path.write_text("this is not a tokenizer {")
    with pytest.raises(ValueError, match="garbage.json: not a text tokenizer file"):
        TextTokenizer.load(path)


def test_load_of_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="missing.json"):
        TextTokenizer.load(tmp_path / "missing.json")
