import numpy as np
import pytest

from mot.data.speech import render_speech, speech_symbols
from mot.data.synthetic import iter_synthetic
from mot.tokenizers.speech_units import MelConfig, SpeechUnits, dedup_units, log_mel, unit_stats

N_UNITS = 64


def _spoken_captions(n, seed):
    texts = [s.captions[i % len(s.captions)] for i, s in enumerate(iter_synthetic(n, seed=seed))]
    return texts, [render_speech(t) for t in texts]


@pytest.fixture(scope="module")
def train_audio():
    return _spoken_captions(300, seed=11)[1]


@pytest.fixture(scope="module")
def val_captions():
    return _spoken_captions(120, seed=12)


@pytest.fixture(scope="module")
def units(train_audio):
    return SpeechUnits.fit(train_audio, 16000, n_units=N_UNITS, seed=0, max_frames=20_000)


def test_fit_is_stable_under_a_fixed_seed(units, train_audio, val_captions):
    again = SpeechUnits.fit(train_audio, 16000, n_units=N_UNITS, seed=0, max_frames=20_000)
    assert np.array_equal(again.centroids, units.centroids)
    for waveform in val_captions[1][:20]:
        assert np.array_equal(again.encode(waveform), units.encode(waveform))


def test_units_use_most_of_the_codebook_on_held_out_captions(units, val_captions):
    encoded = [units.encode(w) for w in val_captions[1]]
    stats = unit_stats(encoded, N_UNITS)
    assert stats["usage"] >= 0.8
    assert stats["perplexity"] > 20


def test_a_deduplicated_caption_has_about_one_unit_per_letter(units, val_captions):
    for text, waveform in zip(*val_captions):
        encoded = units.encode(waveform)
        assert encoded.dtype == np.int16 and encoded.min() >= 0 and encoded.max() < N_UNITS
        assert len(encoded) <= len(speech_symbols(text))  # each letter or word gap is at most one unit
        if 30 <= len(text) <= 45:
            assert len(encoded) <= 48


def test_dedup_removes_consecutive_repeats_only(units, val_captions):
    assert dedup_units(np.array([3, 3, 7, 7, 7, 3, 5])).tolist() == [3, 7, 3, 5]
    assert dedup_units(np.array([], dtype=np.int16)).size == 0
    waveform = val_captions[1][0]
    frames = units.encode(waveform, dedup=False)
    hop = units.mel.hop_length
    assert len(frames) == (waveform.size - units.mel.win_length) // hop + 1
    deduped = units.encode(waveform)
    assert np.array_equal(deduped, dedup_units(frames))
    assert np.all(deduped[1:] != deduped[:-1]) and len(deduped) < len(frames)


def test_save_and_load_round_trip_without_pickle(units, val_captions, tmp_path):
    path = tmp_path / "speech_units.npz"
    units.save(path)
    assert path.is_file()
    np.load(path, allow_pickle=False).close()
    loaded = SpeechUnits.load(path)
    assert loaded.mel == units.mel and loaded.dedup == units.dedup and loaded.n_units == N_UNITS
    for waveform in val_captions[1][:20]:
        assert np.array_equal(loaded.encode(waveform), units.encode(waveform))


def test_short_waveforms_have_no_units(units):
    assert units.encode(np.zeros(100, dtype=np.float32)).size == 0


def test_unit_stats_usage_and_perplexity():
    stats = unit_stats(np.array([0, 0, 1, 1]), 4)
    assert stats["usage"] == 0.5 and stats["perplexity"] == pytest.approx(2.0)
    stats = unit_stats([np.array([0, 1]), np.array([2])], 3)
    assert stats["usage"] == 1.0 and stats["perplexity"] == pytest.approx(3.0)
    assert unit_stats([], 8) == {"usage": 0.0, "perplexity": 0.0}


def test_log_mel_matches_librosa():
    import librosa

    waveform = render_speech("a big red circle at the top")
    cfg = MelConfig(sample_rate=16000, n_mels=32, hop_ms=10.0, win_ms=25.0)
    reference = librosa.feature.melspectrogram(
        y=waveform, sr=16000, n_fft=cfg.win_length, hop_length=cfg.hop_length, win_length=cfg.win_length,
        center=False, n_mels=32,
    )
    ours = log_mel(waveform, cfg)
    assert ours.shape == (reference.shape[1], 32)
    np.testing.assert_allclose(ours, np.log(np.maximum(reference.T, 1e-5)), atol=1e-4)


def test_fit_needs_enough_frames():
    with pytest.raises(ValueError, match="fewer than n_units"):
        SpeechUnits.fit([render_speech("a red circle")], 16000, n_units=64)
