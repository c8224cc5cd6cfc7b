import hashlib
import json
import os
import time

import numpy as np
import pytest
import soundfile as sf

from mot.config import ConfigError
from mot.data.shards import DataError, load_manifest
from mot.data.speech import (
    SpeechSample, build_librispeech_dataset, build_speech_dataset, caption_slot, encode_audio, iter_librispeech,
    load_speech_split, read_speech_split, render_espeak, render_speech, speech_renderer, speech_symbols,
    write_speech_split,
)
from mot.data.synthetic import iter_synthetic

PCM16_STEP = 1.0 / 32768  # FLAC/WAV store 16-bit samples


def _captions(n, seed):
    samples = list(iter_synthetic(n, seed=seed))
    return [s.key for s in samples], [s.captions for s in samples]


# --- the renderer -------------------------------------------------------------------------------


def test_render_is_deterministic_float32_in_range():
    text = "a large red circle in the top left"
    first, second = render_speech(text), render_speech(text)
    assert first.dtype == np.float32 and first.ndim == 1
    assert first.tobytes() == second.tobytes()
    assert 0 < np.abs(first).max() <= 1.0


def test_different_captions_give_different_audio():
    _, captions = _captions(40, seed=5)
    texts = sorted({c for caps in captions for c in caps})
    digests = {hashlib.sha256(render_speech(t).tobytes()).hexdigest() for t in texts}
    assert len(digests) == len(texts)


def test_duration_is_40_to_60_ms_per_letter_plus_short_word_gaps():
    text = "a tiny cyan rhombus"  # 16 letters (7 vowels, y included), 3 word gaps
    seconds = render_speech(text).size / 16000
    assert seconds == pytest.approx((9 * 0.040 + 7 * 0.060) + 3 * 0.020)
    assert render_speech(text, sample_rate=8000).size == render_speech(text).size // 2


def test_text_is_normalised_before_rendering():
    assert speech_symbols("  A Big,  RED\tcafé!  ") == list("a big,red cafe")
    assert np.array_equal(render_speech("2 shapes"), render_speech("two shapes"))
    assert np.array_equal(render_speech("A RED Circle."), render_speech("a red circle"))
    assert render_speech("").size == 0 and render_speech("!?").size == 0


def test_rendering_a_caption_is_fast():
    text = "a small blue square at the bottom left"
    render_speech(text)
    start = time.perf_counter()
    for _ in range(50):
        render_speech(text + " ")  # a new string each time, same symbols
    assert (time.perf_counter() - start) / 50 < 0.010


def test_espeak_renderer_missing_is_one_line_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data\.speech\.renderer: 'espeak' needs the espeak-ng program") as info:
        speech_renderer("espeak", 16000)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown renderer 'festival'"):
        speech_renderer("festival", 16000)


def test_espeak_renderer_reads_and_resamples_the_programs_wav(monkeypatch, tmp_path):
    # A stand-in espeak-ng that copies a 0.5 s, 22.05 kHz wav to the path after -w.
    sf.write(tmp_path / "said.wav", 0.3 * np.sin(np.arange(11025) * 0.05), 22050)
    fake = tmp_path / "espeak-ng"
    fake.write_text(
        "#!/bin/sh\n"
        f'while [ $# -gt 0 ]; do [ "$1" = "-w" ] && cp "{tmp_path / "said.wav"}" "$2"; shift; done\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    waveform = speech_renderer("espeak", 16000)("hello")
    assert waveform.dtype == np.float32 and waveform.size == 8000
    assert np.array_equal(waveform, render_espeak("hello", 16000))


# --- spoken-caption shards ----------------------------------------------------------------------


@pytest.fixture
def spoken(tmp_path):
    """Spoken captions for 12 train and 5 val synthetic images, in shards of 5."""
    splits = {"train": _captions(12, seed=1), "val": _captions(5, seed=2)}
    manifest = build_speech_dataset(splits, tmp_path, seed=3, shard_size=5)
    return tmp_path, splits, manifest


def test_spoken_captions_round_trip_with_keys_audio_and_transcripts(spoken):
    data_dir, splits, manifest = spoken
    assert manifest["sample_rate"] == 16000 and manifest["audio_format"] == "flac"
    for split, (keys, captions) in splits.items():
        read_keys, waveforms, transcripts, rate = load_speech_split(data_dir, split)
        assert rate == 16000 and read_keys == keys
        assert transcripts == [caps[(3 + i) % len(caps)] for i, caps in enumerate(captions)]
        for waveform, transcript in zip(waveforms, transcripts):
            expected = render_speech(transcript)
            assert waveform.dtype == np.float32 and waveform.shape == expected.shape
            np.testing.assert_allclose(waveform, expected, atol=PCM16_STEP)


def test_manifest_counts_hashes_and_is_byte_identical_across_builds(spoken, tmp_path):
    data_dir, splits, manifest = spoken
    assert load_manifest(data_dir) == manifest
    train = manifest["splits"]["train"]
    assert train["n_samples"] == 12 and train["n_bad"] == 0 and train["bad_by_reason"] == {}
    assert [s["path"] for s in train["shards"]] == ["train-00000.tar", "train-00001.tar", "train-00002.tar"]
    assert [s["n_samples"] for s in train["shards"]] == [5, 5, 2]
    assert train["audio_seconds"] > 12 * 0.5
    for shard in train["shards"]:
        assert shard["sha256"] == hashlib.sha256((data_dir / shard["path"]).read_bytes()).hexdigest()
    again = build_speech_dataset(splits, tmp_path / "again", seed=3, shard_size=5)
    assert again["splits"] == manifest["splits"]


def test_wav_format_and_shortest_caption_choice(tmp_path):
    keys, captions = _captions(6, seed=4)
    build_speech_dataset({"val": (keys, captions)}, tmp_path, audio_format="wav", caption_choice="shortest")
    _, waveforms, transcripts, _ = load_speech_split(tmp_path, "val")
    assert transcripts == [min(caps, key=len) for caps in captions]
    np.testing.assert_allclose(waveforms[0], render_speech(transcripts[0]), atol=PCM16_STEP)


def test_caption_slot_choices():
    captions = ["a b c", "a b", "a b c d"]
    assert [caption_slot(i, captions, seed=1) for i in range(4)] == [1, 2, 0, 1]
    assert caption_slot(7, captions, seed=0, choice="shortest") == 1
    with pytest.raises(ConfigError, match="caption_choice: 'longest'"):
        caption_slot(0, captions, seed=0, choice="longest")


def test_bad_samples_are_skipped_and_counted_by_reason(tmp_path):
    tone = 0.3 * np.sin(np.arange(1600) * 0.1).astype(np.float32)
    flac = encode_audio(tone, 16000)
    samples = [
        SpeechSample("ok-array", tone, "a red circle", 16000),
        SpeechSample("ok-flac-bytes", flac, b"  a blue square  "),
        SpeechSample("ok-int16-stereo", np.stack([(tone * 32767).astype(np.int16)] * 2, axis=1), "two", 16000),
        SpeechSample("missing", None, "a caption"),
        SpeechSample("random-bytes", np.random.default_rng(0).bytes(300), "a caption"),
        SpeechSample("truncated-flac", flac[: len(flac) // 2], "a caption"),
        SpeechSample("nan-array", np.full(100, np.nan, dtype=np.float32), "a caption", 16000),
        SpeechSample("zero-length", np.zeros(0, dtype=np.float32), "a caption", 16000),
        SpeechSample("all-silent", np.zeros(800, dtype=np.float32), "a caption", 16000),
        SpeechSample("8khz-array", tone, "a caption", 8000),
        SpeechSample("8khz-flac", encode_audio(tone, 8000), "a caption"),
        SpeechSample("blank-transcript", tone, " \n ", 16000),
        SpeechSample("no-transcript", tone, None, 16000),
        SpeechSample("latin1-transcript", tone, b"caf\xe9", 16000),
    ]
    entry = write_speech_split(samples, tmp_path, "val", shard_size=4)
    assert entry["n_samples"] == 3 and entry["n_bad"] == 11
    assert entry["bad_by_reason"] == {
        "missing_audio": 1, "unreadable_audio": 3, "empty_audio": 2, "wrong_sample_rate": 2,
        "empty_transcript": 2, "non_utf8_transcript": 1,
    }
    _write_speech_manifest(tmp_path, {"val": entry})
    read = {key: transcript for key, _, transcript in read_speech_split(tmp_path, "val")}
    assert read == {"ok-array": "a red circle", "ok-flac-bytes": "a blue square", "ok-int16-stereo": "two"}

    resampled = write_speech_split(samples[9:11], tmp_path / "resampled", "val", shard_size=4, resample=True)
    assert resampled["n_samples"] == 2 and resampled["audio_seconds"] == pytest.approx(2 * 1600 / 8000, abs=1e-3)


def test_too_many_bad_samples_fail_the_build(tmp_path):
    keys, captions = _captions(4, seed=1)
    captions[2] = []
    with pytest.raises(DataError, match=r"train: 1 of 4 samples are bad \(empty_transcript=1\)"):
        build_speech_dataset({"train": (keys, captions)}, tmp_path, max_bad_fraction=0.1)
    assert not (tmp_path / "manifest.json").exists()


def _write_speech_manifest(data_dir, splits, sample_rate=16000):
    manifest = {"source": "test", "sample_rate": sample_rate, "audio_format": "flac", "splits": splits}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))


def test_a_modified_shard_raises_data_error_naming_it(spoken):
    data_dir, _, _ = spoken
    path = data_dir / "train-00001.tar"
    data = bytearray(path.read_bytes())
    data[3000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-00001\.tar: sha256 mismatch"):
        list(read_speech_split(data_dir, "train", verify=True))


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_a_truncated_shard_raises_one_line_data_error_naming_it(spoken, fraction):
    data_dir, _, _ = spoken
    path = data_dir / "train-00000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DataError) as info:
        load_speech_split(data_dir, "train")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "@" not in message


def test_an_image_manifest_or_a_missing_split_is_a_data_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {"train": {"shards": []}}}))
    with pytest.raises(DataError, match="not a speech manifest"):
        load_speech_split(tmp_path, "train")
    _write_speech_manifest(tmp_path, {})
    with pytest.raises(DataError, match="no split 'train'"):
        load_speech_split(tmp_path, "train")


# --- LibriSpeech-style folders ------------------------------------------------------------------


def _utterance(seed, seconds=0.25, rate=16000):
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(int(seconds * rate))).clip(-1, 1).astype(np.float32)


@pytest.fixture
def librispeech(tmp_path):
    """root/speaker/chapter/*.flac + speaker-chapter.trans.txt, 2 speakers x 2 chapters.

    19-198-0002 is not a FLAC file, 26-496-0001 is recorded at 8 kHz, 26-495-0002 has no audio file.
    """
    root = tmp_path / "LibriSpeech" / "dev-clean"
    expected, seed = {}, 0
    for speaker, chapters in {"19": ["198", "227"], "26": ["495", "496"]}.items():
        for chapter in chapters:
            folder = root / speaker / chapter
            folder.mkdir(parents=True)
            lines = []
            for n in range(3):
                uid = f"{speaker}-{chapter}-{n:04d}"
                text = f"UTTERANCE {seed} OF SPEAKER {speaker}"
                lines.append(f"{uid} {text}")
                seed += 1
                if uid == "19-198-0002":
                    (folder / f"{uid}.flac").write_bytes(b"fLaC" + bytes(100))
                elif uid == "26-496-0001":
                    sf.write(folder / f"{uid}.flac", _utterance(seed, rate=8000), 8000)
                elif uid != "26-495-0002":
                    audio = _utterance(seed)
                    sf.write(folder / f"{uid}.flac", audio, 16000)
                    expected[uid] = (audio, text)
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root, expected


def test_librispeech_importer_yields_every_transcript_line_in_order(librispeech):
    root, _ = librispeech
    samples = list(iter_librispeech(root))
    assert len(samples) == 12
    assert [s.key for s in samples[:4]] == ["19-198-0000", "19-198-0001", "19-198-0002", "19-227-0000"]
    assert samples[0].transcript == b"UTTERANCE 0 OF SPEAKER 19"
    assert next(s for s in samples if s.key == "26-495-0002").audio is None


def test_librispeech_round_trips_into_speech_shards_counting_bad_files(librispeech, tmp_path):
    root, expected = librispeech
    manifest = build_librispeech_dataset({"train": root}, tmp_path / "speech", shard_size=4, max_bad_fraction=0.5)
    entry = manifest["splits"]["train"]
    assert entry["n_samples"] == 9
    assert entry["bad_by_reason"] == {"missing_audio": 1, "unreadable_audio": 1, "wrong_sample_rate": 1}
    keys, waveforms, transcripts, rate = load_speech_split(tmp_path / "speech", "train")
    assert rate == 16000 and keys == sorted(expected)
    for key, waveform, transcript in zip(keys, waveforms, transcripts):
        audio, text = expected[key]
        assert transcript == text
        np.testing.assert_allclose(waveform, audio, atol=PCM16_STEP)


def test_librispeech_resample_keeps_other_rates(librispeech, tmp_path):
    root, _ = librispeech
    manifest = build_librispeech_dataset({"val": root}, tmp_path / "speech", resample=True, max_bad_fraction=0.5)
    assert manifest["splits"]["val"]["n_samples"] == 10
    keys, waveforms, _, _ = load_speech_split(tmp_path / "speech", "val")
    assert waveforms[keys.index("26-496-0001")].size == 4000  # 0.25 s at 8 kHz -> 16 kHz


def test_librispeech_folder_without_transcripts_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no \\*.trans.txt transcript files"):
        list(iter_librispeech(tmp_path))
    with pytest.raises(DataError, match="LibriSpeech folder not found"):
        list(iter_librispeech(tmp_path / "missing"))
