"""Text-only rows in the Chameleon mixtures: drawn by their weight against image_text (and the speech kinds),
realising the configured kind frequencies and the text:image token ratio they imply; the image–text stream is
unchanged without them; val/loss_text stays the captions' loss and val/loss_text_only is logged only when the
mixture has text-only rows."""

import json

import numpy as np
import pytest
import torch

from mot.config import find_run
from mot.config.load import load_config
from mot.data.sequences import TextChunks, TokenizedSplit
from mot.settings import objective_for
from mot.settings.chameleon import ChameleonSequences
from mot.settings.chameleon_speech import ChameleonSpeechSequences
from mot.settings.mixture import mixture_metrics, realised_mixture
from mot.train.loop import Trainer
from mot.vocabulary import IMAGE, TEXT, Vocabulary
from tests.conftest import REPO
from tests.settings.test_chameleon_speech import VOCAB as SPEECH_VOCAB, speech

VOCAB = Vocabulary(text_size=20, image_codes=8, pad=0, bos=1, eos=2, boi=3, eoi=4)
SEQ_LEN = 16
IMAGE_TOKENS, CAPTION_TOKENS = 4, 3


def split(n=4) -> TokenizedSplit:
    """n images of 4 codes, each with 2 captions of 3 text ids."""
    codes = (np.arange(n * IMAGE_TOKENS).reshape(n, IMAGE_TOKENS) % 8).astype(np.int16)
    captions = np.full((n, 2, 5), -1)
    captions[:, :, :CAPTION_TOKENS] = [7, 12, 15]
    return TokenizedSplit(codes, captions, np.full((n, 2), CAPTION_TOKENS), np.array([f"k{i}" for i in range(n)]))


def text_chunks(n_docs=5) -> TextChunks:
    """Documents `<bos> 8 9 ... <eos>` of 6..(5 + n_docs) tokens in rows of SEQ_LEN + 1."""
    return TextChunks.from_documents([[1, *range(8, 12 + d), 2] for d in range(n_docs)], SEQ_LEN + 1)


def builder(mixture, **kw) -> ChameleonSequences:
    return ChameleonSequences(split(), VOCAB, SEQ_LEN, 0.5, (0, 1), 2, mixture=mixture, text_only=text_chunks(), **kw)


def expected_ratio(weights: dict) -> float:
    """text:image targets the weights imply: an image–text row has the caption + <boi> <eoi> <eos> as text
    targets and the codes as image targets (no caption dropout); a text-only row all but its first token."""
    total = sum(weights.values())
    image_text, text_only = weights.get("image_text", 0) / total, weights.get("text_only", 0) / total
    rows = text_chunks()
    text_only_targets = float(np.mean(rows.lengths - 1))
    return (image_text * (CAPTION_TOKENS + 3) + text_only * text_only_targets) / (image_text * IMAGE_TOKENS)


# --- drawing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [{"image_text": 2, "text_only": 1}, {"image_text": 1, "text_only": 1},
                                     {"image_text": 0.3, "text_only": 0.7}])
def test_realised_kind_frequencies_and_token_ratio_match_the_config_within_two_percent(weights):
    realised = realised_mixture(builder(weights), n_batches=200, batch_size=64, seed=3)
    total = sum(weights.values())
    for kind, weight in weights.items():
        assert realised["configured"][kind] == pytest.approx(weight / total)
        assert abs(realised["kind_fractions"][kind] - weight / total) < 0.02, realised["kind_fractions"]
    assert realised["text_image_ratio"] == pytest.approx(expected_ratio(weights), rel=0.02)
    assert realised["tokens"]["text_only"] == {"text": sum(realised["tokens"]["text_only"].values())}
    assert realised["totals"]["image"] == realised["sequences"]["image_text"] * IMAGE_TOKENS


def test_realised_counts_are_the_training_batches_targets():
    b = builder({"image_text": 1, "text_only": 1})
    realised = realised_mixture(b, n_batches=5, batch_size=8, seed=1)
    counts = np.sum([b.train_batch(step, 8, seed=1).target_counts for step in range(5)], axis=0)
    assert (realised["totals"]["text"], realised["totals"]["image"]) == (counts[TEXT], counts[IMAGE])
    metrics = mixture_metrics(realised)
    assert metrics["mixture/text_image_token_ratio"] == pytest.approx(counts[TEXT] / counts[IMAGE])
    assert metrics["mixture/fraction_image_text"] + metrics["mixture/fraction_text_only"] == pytest.approx(1)


def test_text_only_rows_are_whole_text_rows_from_the_tokenized_documents():
    b = builder({"text_only": 1})
    rows = {tuple(text_chunks().row(i)) for i in range(len(text_chunks()))}
    batch = b.train_batch(0, 32, seed=0)
    assert batch.target_counts[IMAGE] == 0 and (batch.input_modality == TEXT).all()
    for row, length in zip(batch.tokens, (batch.targets != -100).sum(1)):
        assert tuple(row[: length + 1].tolist()) in rows or length + 1 > SEQ_LEN


def test_without_text_only_the_image_text_stream_is_what_it_was():
    plain = ChameleonSequences(split(), VOCAB, SEQ_LEN, 0.5, (0, 1), 2, caption_dropout=0.1)
    zero = builder({"image_text": 1, "text_only": 0}, caption_dropout=0.1)
    assert plain.kinds == zero.kinds == ("image_text",)
    a, b, c = (np.random.default_rng(5) for _ in range(3))
    for _ in range(50):  # no kind is drawn: the same generator calls as the image–text draw alone
        expected = plain.draw_image_text(c)
        assert plain.draw(a).tolist() == zero.draw(b).tolist() == expected.tolist()


def test_speech_mixtures_draw_text_only_rows_as_a_fifth_kind():
    mixture = {"image_text": 0.4, "speech_to_text": 0.2, "text_to_speech": 0.1, "speech_only": 0.1, "text_only": 0.2}
    b = ChameleonSpeechSequences(split(), SPEECH_VOCAB, SEQ_LEN, 0.5, (0, 1, 2), 3, speech=speech(), mixture=mixture,
                                 text_only=text_chunks())
    realised = realised_mixture(b, n_batches=150, batch_size=64, seed=0)
    assert b.kinds[-1] == "text_only"
    for kind, weight in mixture.items():
        assert abs(realised["kind_fractions"][kind] - weight) < 0.02, (kind, realised["kind_fractions"])
    without = {k: v for k, v in mixture.items() if k != "text_only"}
    old = ChameleonSpeechSequences(split(), SPEECH_VOCAB, SEQ_LEN, 0.5, (0, 1, 2), 3, speech=speech(), mixture=without)
    assert old.kinds == ("image_text", "speech_to_text", "text_to_speech", "speech_only")


def test_a_text_only_weight_without_tokenized_rows_is_an_error():
    with pytest.raises(ValueError, match="mot tokenize-text"):
        ChameleonSequences(split(), VOCAB, SEQ_LEN, 0.5, (0, 1), 2, mixture={"image_text": 1, "text_only": 1})


# --- validation -------------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)


def objective_with_tokens(tmp_path, text_only: float):
    """The smoke study's chameleon objective over a tiny tokenized study written to tmp_path."""
    config = load_config([REPO / "configs" / "smoke.yaml"])
    config["results_dir"] = str(tmp_path)
    config["sequences"]["mixture"]["text_only"] = text_only
    objective = objective_for(config, "chameleon")
    objective.paths.tokenizers.mkdir(parents=True)
    objective.paths.tokens.mkdir(parents=True)
    (objective.paths.tokenizers / "vocab.json").write_text(json.dumps(VOCAB.as_dict()))
    for name in ("train", "val"):
        split(6).save(objective.paths.tokens / f"{name}.npz")
        text_chunks(7).save(objective.paths.split_text(name))
    return config, objective


def evaluated_metrics(config, objective) -> dict:
    """What Trainer.evaluate_and_log logs at step 0 for the dense run (model, data and logger stand-ins)."""
    run = find_run(config, "chameleon", "dense")
    torch.manual_seed(0)
    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.run, trainer.train_cfg, trainer.objective = config, run, run.train, objective
    trainer.model = objective.build_model(run)
    trainer.device, trainer.autocast = torch.device("cpu"), torch.autocast("cpu", enabled=False)
    trainer.val_data = objective.sequences("val", trainer.model)
    trainer.tokens_seen, trainer.flops_token, trainer.wall_clock, trainer.logger = 0, 1.0, 0.0, Recorder()
    trainer.sharded = False
    trainer.evaluate_and_log(0)
    return trainer.logger.metrics[0]


def test_val_loss_text_only_is_logged_only_when_the_mixture_has_text_only_rows(tmp_path):
    config, objective = objective_with_tokens(tmp_path / "with", text_only=0.5)
    logged = evaluated_metrics(config, objective)
    assert {"val/loss_text", "val/loss_image", "val/loss_text_only"} <= set(logged)
    assert np.isfinite(logged["val/loss_text_only"]) and logged["val/loss_text_only"] != logged["val/loss_text"]

    config, objective = objective_with_tokens(tmp_path / "without", text_only=0.0)
    logged_without = evaluated_metrics(config, objective)
    assert "val/loss_text_only" not in logged_without
    # val/loss_text keeps meaning the captions of the image–text val sequences, mixture or not
    assert logged_without["val/loss_text"] == pytest.approx(logged["val/loss_text"])


def test_text_only_validation_is_the_text_loss_of_the_val_rows_in_fixed_order(tmp_path):
    config, objective = objective_with_tokens(tmp_path, text_only=1.0)
    model = objective.build_model(find_run(config, "chameleon", "mot"))
    score = lambda batches, modalities: objective.validation_loss(model, batches, "cpu", modalities)  # noqa: E731
    full = objective.extra_validation(model, batch_size=3, score=score)
    assert set(full) == {"text_only"}
    assert objective.extra_validation(model, batch_size=5, score=score) == pytest.approx(full)
    first = objective.extra_validation(model, batch_size=3, score=score, limit=2)["text_only"]
    assert first != pytest.approx(full["text_only"])
    # the eval builder's sequences are the image–text ones only; training draws text-only rows
    rows = [r.tolist() for r in objective.sequences("val", model).eval_sequences()]
    assert all(VOCAB.boi in r for r in rows)
    assert "text_only" in objective.sequences("train", model).kinds
