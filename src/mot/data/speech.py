"""Speech data: spoken captions rendered from text, LibriSpeech-style imports, and their shards.

The default renderer is a tiny deterministic formant synthesiser: every letter is a
40 ms (consonant) or 60 ms (vowel) segment -- vowels voiced with letter-specific formants,
consonants a mix of voicing and band-limited "frozen" noise, formants pulled a quarter of
the way toward the next letter's -- and words are separated by 20 ms of silence (60 ms at
punctuation). The same text always gives the same audio and the audio follows the text,
about one 20 ms speech unit per letter. ``renderer: espeak`` uses the espeak-ng program.

Shards are the image shards' format (shards.write_records/read_records): one record
per utterance with the audio (FLAC or WAV bytes) and its transcript (``txt``); bad
samples are skipped and counted by reason, corrupt shards raise a one-line DataError.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import soundfile as sf

from mot.config.files import ConfigError
from mot.data.shards import (
    BadSample, DataError, MANIFEST, check_bad_fraction, load_manifest, read_records, require_fields,
    write_manifest, write_records,
)

AUDIO_FORMATS = ("flac", "wav")
RENDERERS = ("synthetic", "espeak")
CAPTION_CHOICES = ("cycle", "shortest")
TRANSCRIPT_FIELD = "txt"


# --- the synthetic renderer ----------------------------------------------------------

F0_HZ = 100.0  # a 10 ms period: every 20 ms frame inside a segment holds whole periods, so all see one spectrum
VOWEL_MS, CONSONANT_MS, WORD_GAP_MS, PAUSE_MS = 60, 40, 20, 60
COARTICULATION = 0.25  # fraction of the way a letter's formants move toward the next letter's
_LEVEL = 0.12  # RMS of a fully voiced or fully noisy segment
_FORMANT_GAINS = (1.0, 0.6, 0.35)
_FORMANT_BANDWIDTHS = (90.0, 120.0, 180.0)


@dataclass(frozen=True)
class _Letter:
    voicing: float  # amplitude of the harmonic part
    formants: tuple[float, float, float]  # Hz
    noise: float  # amplitude of the band-limited noise part
    noise_hz: float  # centre of the noise band
    ms: int


def _vowel(f1: float, f2: float, f3: float) -> _Letter:
    return _Letter(1.0, (f1, f2, f3), 0.0, 0.0, VOWEL_MS)


def _consonant(voicing: float, formants: tuple[float, float, float], noise: float = 0.0, noise_hz: float = 0.0):
    return _Letter(voicing, formants, noise, noise_hz, CONSONANT_MS)


_NEUTRAL = (500.0, 1500.0, 2500.0)
LETTERS: dict[str, _Letter] = {
    "a": _vowel(730, 1090, 2440), "e": _vowel(530, 1840, 2480), "i": _vowel(270, 2290, 3010),
    "o": _vowel(570, 840, 2410), "u": _vowel(300, 870, 2240), "y": _vowel(420, 2050, 2600),
    "l": _consonant(0.6, (360, 1300, 2700)), "r": _consonant(0.6, (460, 1190, 1590)),
    "w": _consonant(0.6, (290, 610, 2150)), "m": _consonant(0.45, (280, 900, 2200)),
    "n": _consonant(0.45, (280, 1700, 2600)),
    "v": _consonant(0.4, (300, 1200, 2400), 0.3, 3500), "z": _consonant(0.4, (300, 1600, 2600), 0.4, 5000),
    "j": _consonant(0.4, (300, 1900, 2700), 0.4, 2800),
    "b": _consonant(0.35, (300, 900, 2300), 0.35, 1200), "d": _consonant(0.35, (300, 1700, 2600), 0.35, 3500),
    "g": _consonant(0.35, (300, 1500, 2400), 0.35, 2000),
    "p": _consonant(0.0, _NEUTRAL, 0.5, 900), "t": _consonant(0.0, _NEUTRAL, 0.6, 4200),
    "k": _consonant(0.0, _NEUTRAL, 0.55, 2400), "c": _consonant(0.0, _NEUTRAL, 0.55, 3000),
    "q": _consonant(0.0, _NEUTRAL, 0.5, 1600), "x": _consonant(0.0, _NEUTRAL, 0.6, 5500),
    "f": _consonant(0.0, _NEUTRAL, 0.4, 7000), "s": _consonant(0.0, _NEUTRAL, 0.7, 6000),
    "h": _consonant(0.15, _NEUTRAL, 0.3, 1800),
}
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PAUSE_CHARS = set(",;:.!?")


def speech_symbols(text: str) -> list[str]:
    """Text -> the renderer's symbols: letters a-z, " " (word gap) and "," (pause).

    Lowercased, accents stripped, digits spoken as words; other characters are ignored.
    """
    flat = unicodedata.normalize("NFKD", text.lower())
    symbols: list[str] = []
    for char in flat:
        if char in LETTERS:
            symbols.append(char)
        elif char.isdigit() and char.isascii():
            symbols += [" ", *_DIGITS[int(char)], " "]
        elif char in _PAUSE_CHARS:
            symbols.append(",")
        elif char.isspace() or char in "-/":
            symbols.append(" ")
    return _collapse_gaps(symbols)


def _collapse_gaps(symbols: list[str]) -> list[str]:
    collapsed: list[str] = []
    for symbol in symbols:
        if symbol in " ," and collapsed and collapsed[-1] in " ,":
            collapsed[-1] = "," if "," in (symbol, collapsed[-1]) else " "
        else:
            collapsed.append(symbol)
    while collapsed and collapsed[0] in " ,":
        collapsed.pop(0)
    while collapsed and collapsed[-1] in " ,":
        collapsed.pop()
    return collapsed


def render_speech(text: str, sample_rate: int = 16000) -> np.ndarray:
    """Deterministic synthetic speech for text: float32 mono waveform in [-1, 1] (empty if nothing to say)."""
    symbols = speech_symbols(text)
    pieces = []
    for i, symbol in enumerate(symbols):
        if symbol == " ":
            pieces.append(_silence(WORD_GAP_MS, sample_rate))
        elif symbol == ",":
            pieces.append(_silence(PAUSE_MS, sample_rate))
        else:
            following = symbols[i + 1] if i + 1 < len(symbols) else ""
            pieces.append(_letter_segment(symbol, following if following in LETTERS else "", sample_rate))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces)


@lru_cache(maxsize=None)
def _silence(ms: int, sample_rate: int) -> np.ndarray:
    return np.zeros(_n_samples(ms, sample_rate), dtype=np.float32)


def _n_samples(ms: float, sample_rate: int) -> int:
    return int(round(ms * sample_rate / 1000))


@lru_cache(maxsize=None)
def _letter_segment(letter: str, following: str, sample_rate: int) -> np.ndarray:
    """One letter's audio, coarticulated with the letter that follows ("" at a word's end).

    Both parts are periodic in the 10 ms pitch period (the noise is "frozen": harmonics with
    random but fixed phases), so every analysis frame inside a segment sees the same spectrum.
    """
    spec = LETTERS[letter]
    formants = np.asarray(spec.formants, dtype=np.float64)
    if following and LETTERS[following].voicing > 0:
        formants += COARTICULATION * (np.asarray(LETTERS[following].formants) - formants)
    n_harmonics = int(min(0.45 * sample_rate, 7500.0) // F0_HZ)
    k = np.arange(1, n_harmonics + 1)
    freqs = k * F0_HZ
    t = np.arange(_n_samples(spec.ms, sample_rate)) / sample_rate
    segment = np.zeros(t.size, dtype=np.float64)
    if spec.voicing > 0:
        envelope = sum(
            gain / (1.0 + ((freqs - f) / bw) ** 2)
            for gain, f, bw in zip(_FORMANT_GAINS, formants, _FORMANT_BANDWIDTHS)
        )
        phases = np.pi * k**2 / n_harmonics  # Schroeder phases keep the waveform's peaks low
        segment += spec.voicing * _LEVEL * _harmonic_sum(envelope / k**0.5, freqs, phases, t)  # k^-0.5: glottal tilt
    if spec.noise > 0:
        # below 16 kHz the noise bands move down with the bandwidth, so fricatives stay distinct
        centre = spec.noise_hz * min(1.0, 0.45 * sample_rate / 7500.0)
        width = 0.2 * centre + 200.0
        envelope = np.exp(-0.5 * ((freqs - centre) / width) ** 2)
        phases = np.random.default_rng([ord(letter), ord(following or " ")]).uniform(0, 2 * np.pi, n_harmonics)
        segment += spec.noise * _LEVEL * _harmonic_sum(envelope, freqs, phases, t)
    segment = np.clip(segment, -1.0, 1.0).astype(np.float32)
    segment.flags.writeable = False  # shared by the cache
    return segment


def _harmonic_sum(amplitudes: np.ndarray, freqs: np.ndarray, phases: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Sum of sinusoids, scaled to unit RMS."""
    wave = amplitudes @ np.sin(2 * np.pi * np.outer(freqs, t) + phases[:, None])
    return wave / np.sqrt(np.mean(wave**2))


# --- espeak-ng ------------------------------------------------------------------------


def render_espeak(text: str, sample_rate: int = 16000, voice: str = "en-us", words_per_minute: int = 160) -> np.ndarray:
    """Speech from the espeak-ng program, resampled to sample_rate (float32 mono)."""
    program = _espeak_program()
    with tempfile.TemporaryDirectory() as tmp:
        wav, text_file = Path(tmp) / "speech.wav", Path(tmp) / "text.txt"
        text_file.write_text(text, encoding="utf-8")  # a file, so no text is read as an option
        result = subprocess.run(
            [program, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), "-f", str(text_file)],
            capture_output=True, text=True,
        )
        if result.returncode != 0 or not wav.is_file():
            message = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"espeak-ng failed on {text[:40]!r}: {message}")
        waveform, rate = sf.read(wav, dtype="float32", always_2d=True)
    return _resample(waveform.mean(axis=1), rate, sample_rate)


def _espeak_program() -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        raise ConfigError(
            "data.speech.renderer: 'espeak' needs the espeak-ng program, which is not installed "
            "(apt-get install espeak-ng, or use renderer: synthetic)"
        )
    return program


def speech_renderer(name: str, sample_rate: int) -> Callable[[str], np.ndarray]:
    """The text -> waveform function for data.speech.renderer; checks espeak-ng is installed up front."""
    if name == "synthetic":
        return lambda text: render_speech(text, sample_rate)
    if name == "espeak":
        _espeak_program()
        return lambda text: render_espeak(text, sample_rate)
    raise ConfigError(f"data.speech.renderer: unknown renderer {name!r} (expected one of {', '.join(RENDERERS)})")


def _resample(waveform: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    if rate == sample_rate:
        return waveform.astype(np.float32, copy=False)
    import librosa  # imported here: it loads numba, slow to import

    return librosa.resample(waveform, orig_sr=rate, target_sr=sample_rate).astype(np.float32)


# --- samples, validation, shards ----------------------------------------------------------


@dataclass
class SpeechSample:
    """One utterance, as produced by a renderer or an importer.

    audio: float waveform (mono [n] or [n, channels]), encoded audio bytes (may be corrupt), or None if missing.
    sample_rate: the waveform's rate; for bytes the file's own header is used.
    transcript: str, or bytes (may not be valid UTF-8).
    """

    key: str
    audio: np.ndarray | bytes | None
    transcript: str | bytes | None
    sample_rate: int | None = None


def validate_speech(sample: SpeechSample, sample_rate: int, resample: bool = False) -> tuple[np.ndarray, str]:
    """Return (float32 mono waveform at sample_rate, transcript) or raise BadSample with the reason."""
    transcript = _validate_transcript(sample.transcript)
    waveform, rate = _decode_audio(sample.audio, sample.sample_rate)
    if waveform.size == 0 or not np.any(waveform):
        raise BadSample("empty_audio")
    if rate != sample_rate:
        if not resample:
            raise BadSample("wrong_sample_rate")
        waveform = _resample(waveform, rate, sample_rate)
    return np.clip(waveform, -1.0, 1.0), transcript


def _validate_transcript(transcript: str | bytes | None) -> str:
    if isinstance(transcript, (bytes, bytearray)):
        try:
            transcript = bytes(transcript).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadSample("non_utf8_transcript") from exc
    if transcript is None or not transcript.strip():
        raise BadSample("empty_transcript")
    return transcript.strip()


def _decode_audio(audio: np.ndarray | bytes | None, rate: int | None) -> tuple[np.ndarray, int]:
    if audio is None:
        raise BadSample("missing_audio")
    if isinstance(audio, (bytes, bytearray, memoryview)):
        try:
            data, rate = sf.read(io.BytesIO(bytes(audio)), dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises several types on corrupt input
            raise BadSample("unreadable_audio") from exc
        audio = data
    if not isinstance(audio, np.ndarray) or audio.ndim not in (1, 2) or rate is None:
        raise BadSample("unreadable_audio")
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio / float(np.iinfo(audio.dtype).max + 1)
    elif not np.issubdtype(audio.dtype, np.floating):
        raise BadSample("unreadable_audio")
    waveform = (audio.mean(axis=1) if audio.ndim == 2 else audio).astype(np.float32)
    if not np.all(np.isfinite(waveform)):
        raise BadSample("unreadable_audio")
    return waveform, int(rate)


def encode_audio(waveform: np.ndarray, sample_rate: int, audio_format: str = "flac") -> bytes:
    """16-bit PCM FLAC or WAV bytes (deterministic: the same waveform gives the same bytes)."""
    buffer = io.BytesIO()
    sf.write(buffer, waveform, sample_rate, format=audio_format.upper(), subtype="PCM_16")
    return buffer.getvalue()


def write_speech_split(
    samples: Iterable[SpeechSample],
    out_dir: Path,
    split: str,
    shard_size: int,
    sample_rate: int = 16000,
    audio_format: str = "flac",
    resample: bool = False,
    total: int | None = None,
) -> dict:
    """Write valid utterances to ``{out_dir}/{split}-{i:05d}.tar``; return the split's manifest entry."""
    if audio_format not in AUDIO_FORMATS:
        raise ConfigError(f"data.speech.audio_format: {audio_format!r} is not one of {', '.join(AUDIO_FORMATS)}")

    n_audio_samples = 0

    def encode(sample: SpeechSample) -> tuple[str, dict[str, bytes]]:
        nonlocal n_audio_samples
        waveform, transcript = validate_speech(sample, sample_rate, resample)
        n_audio_samples += waveform.size
        fields = {audio_format: encode_audio(waveform, sample_rate, audio_format),
                  TRANSCRIPT_FIELD: transcript.encode("utf-8")}
        return sample.key, fields

    entry = write_records(samples, encode, out_dir, split, shard_size, total, unit="utt")
    entry["audio_seconds"] = round(n_audio_samples / sample_rate, 3)
    return entry


def read_speech_split(data_dir: Path, split: str, verify: bool = False) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yield (key, float32 waveform, transcript) for a split of a speech data dir, in shard order."""
    manifest = load_manifest(data_dir)
    audio_format, sample_rate = _speech_manifest_fields(manifest, Path(data_dir))

    def decode(path: Path, record: dict) -> tuple[str, np.ndarray, str]:
        key = require_fields(path, record, (audio_format, TRANSCRIPT_FIELD))
        try:
            waveform, rate = sf.read(io.BytesIO(record[audio_format]), dtype="float32")
            transcript = record[TRANSCRIPT_FIELD].decode("utf-8")
        except Exception as exc:  # any decode failure means the shard content is corrupt
            raise DataError(f"{path}: sample {key!r} is corrupt ({type(exc).__name__}: {exc})") from exc
        if rate != sample_rate:
            raise DataError(f"{path}: sample {key!r} is {rate} Hz, manifest says {sample_rate} Hz")
        return key, waveform, transcript

    yield from read_records(data_dir, split, decode, verify)


def load_speech_split(data_dir: Path, split: str) -> tuple[list[str], list[np.ndarray], list[str], int]:
    """Read a whole split into memory: keys, float32 waveforms, transcripts, sample rate."""
    _, sample_rate = _speech_manifest_fields(load_manifest(data_dir), Path(data_dir))
    keys, waveforms, transcripts = [], [], []
    for key, waveform, transcript in read_speech_split(data_dir, split):
        keys.append(key)
        waveforms.append(waveform)
        transcripts.append(transcript)
    return keys, waveforms, transcripts, sample_rate


def _speech_manifest_fields(manifest: dict, data_dir: Path) -> tuple[str, int]:
    audio_format, sample_rate = manifest.get("audio_format"), manifest.get("sample_rate")
    if audio_format not in AUDIO_FORMATS or not isinstance(sample_rate, int):
        raise DataError(f"{data_dir / MANIFEST}: not a speech manifest (needs audio_format and sample_rate)")
    return audio_format, sample_rate


# --- spoken captions (synthetic set) ------------------------------------------------------------


def caption_slot(index: int, captions: Sequence[str], seed: int, choice: str = "cycle") -> int:
    """Which of an image's captions is spoken: "cycle" walks the slots with the index, "shortest" picks the shortest."""
    if choice == "cycle":
        return (seed + index) % len(captions)
    if choice == "shortest":
        return min(range(len(captions)), key=lambda j: len(captions[j]))
    raise ConfigError(f"data.speech.caption_choice: {choice!r} is not one of {', '.join(CAPTION_CHOICES)}")


def iter_spoken_captions(
    keys: Sequence[str],
    captions: Sequence[Sequence[str]],
    render: Callable[[str], np.ndarray],
    sample_rate: int,
    seed: int = 0,
    choice: str = "cycle",
) -> Iterator[SpeechSample]:
    """One spoken caption per image, keyed like the image."""
    if len(keys) != len(captions):
        raise ValueError(f"{len(keys)} keys but {len(captions)} caption lists")
    for i, (key, caps) in enumerate(zip(keys, captions)):
        if not caps:
            yield SpeechSample(key, None, "")  # counted as empty_transcript
            continue
        text = caps[caption_slot(i, caps, seed, choice)]
        yield SpeechSample(key, render(text), text, sample_rate)


def build_speech_dataset(
    captions_by_split: Mapping[str, tuple[Sequence[str], Sequence[Sequence[str]]]],
    out_dir: Path,
    *,
    sample_rate: int = 16000,
    renderer: str = "synthetic",
    seed: int = 0,
    caption_choice: str = "cycle",
    audio_format: str = "flac",
    shard_size: int = 2000,
    max_bad_fraction: float = 0.05,
) -> dict:
    """Render one spoken caption per image for every split; write shards and manifest.json; return the manifest.

    captions_by_split: split -> (image keys, caption lists), e.g. from shards.load_split_arrays.
    """
    render = speech_renderer(renderer, sample_rate)
    caption_slot(0, ["x"], seed, caption_choice)  # fails on a bad choice before anything is written
    samples_by_split = {
        split: (iter_spoken_captions(keys, captions, render, sample_rate, seed, caption_choice), len(keys))
        for split, (keys, captions) in captions_by_split.items()
    }
    source = {"source": "synthetic", "renderer": renderer, "caption_choice": caption_choice, "seed": seed}
    return _build(samples_by_split, Path(out_dir), source, sample_rate, audio_format, False, shard_size,
                  max_bad_fraction)


def _build(
    samples_by_split: Mapping[str, tuple[Iterable[SpeechSample], int | None]],
    out_dir: Path,
    source: dict,
    sample_rate: int,
    audio_format: str,
    resample: bool,
    shard_size: int,
    max_bad_fraction: float,
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # an old manifest must not vouch for shards being rewritten
    splits = {}
    for split, (samples, total) in samples_by_split.items():
        for stale in out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].tar"):
            stale.unlink()
        entry = write_speech_split(samples, out_dir, split, shard_size, sample_rate, audio_format, resample, total)
        check_bad_fraction(split, entry, max_bad_fraction)
        splits[split] = entry
    manifest = {**source, "sample_rate": sample_rate, "audio_format": audio_format, "splits": splits,
                "created_by": "mot data (speech)"}
    write_manifest(out_dir, manifest)
    return manifest


# --- LibriSpeech-style folders ----------------------------------------------------------------


def iter_librispeech(root: Path, audio_suffix: str = ".flac") -> Iterator[SpeechSample]:
    """Yield one SpeechSample per line of every ``speaker-chapter.trans.txt`` under root (sorted).

    Lines are ``UTTID TEXT``; the audio is ``UTTID.flac`` beside the transcript file (its raw
    bytes, None when missing). Bad audio or text is left for write_speech_split to count.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: LibriSpeech folder not found")
    transcript_files = sorted(root.rglob("*.trans.txt"))
    if not transcript_files:
        raise DataError(f"{root}: no *.trans.txt transcript files (expected speaker/chapter/speaker-chapter.trans.txt)")
    for transcript_file in transcript_files:
        for line in transcript_file.read_bytes().splitlines():
            if not line.strip():
                continue
            utterance_id, _, text = line.strip().partition(b" ")
            key = utterance_id.decode("utf-8", errors="replace")
            audio_path = transcript_file.parent / f"{key}{audio_suffix}"
            audio = audio_path.read_bytes() if audio_path.is_file() else None
            yield SpeechSample(key=key, audio=audio, transcript=text)


def build_librispeech_dataset(
    roots_by_split: Mapping[str, Path],
    out_dir: Path,
    *,
    sample_rate: int = 16000,
    resample: bool = False,
    audio_format: str = "flac",
    shard_size: int = 2000,
    max_bad_fraction: float = 0.05,
) -> dict:
    """Import LibriSpeech-style folders (split -> root) into speech shards; return the manifest."""
    samples_by_split = {split: (iter_librispeech(Path(root)), None) for split, root in roots_by_split.items()}
    source = {"source": "librispeech", "roots": {split: str(root) for split, root in roots_by_split.items()}}
    return _build(samples_by_split, Path(out_dir), source, sample_rate, audio_format, resample, shard_size,
                  max_bad_fraction)
