"""Discrete speech units: k-means over log-mel frames, fitted on training audio.

A waveform becomes log-mel frames (``win_ms`` Hann windows every ``hop_ms``, no centring
padding, so frames start at 0, hop, 2*hop, ...), each frame is standardised with the
training frames' mean and std and replaced by its nearest centroid's index; with
``dedup`` consecutive repeats collapse to one unit (as in HuBERT-unit LMs).
Saved as ``.npz`` (arrays + a JSON config string), loaded without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

LOG_FLOOR = 1e-5  # mel power floor before the log: digital silence maps to one constant frame
FIT_BATCH_SIZE = 4096


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_mels: int = 40
    hop_ms: float = 20.0
    win_ms: float = 20.0

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_ms * self.sample_rate / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.win_ms * self.sample_rate / 1000))


def log_mel(waveform: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """[frames, n_mels] float32 log mel power; a waveform shorter than one window has no frames.

    Equal to log(librosa.feature.melspectrogram(center=False, n_fft=win_length, ...)), computed
    with a cached filterbank: librosa rebuilds it on every call, which dominates short clips.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    win, hop = cfg.win_length, cfg.hop_length
    if waveform.size < win:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(waveform, win)[::hop]
    window, filterbank = _analysis_filters(cfg.sample_rate, win, cfg.n_mels)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    with _blas_threads(1):
        mel = power.astype(np.float32) @ filterbank.T
    return np.log(np.maximum(mel, LOG_FLOOR))


@lru_cache(maxsize=8)
def _analysis_filters(sample_rate: int, n_fft: int, n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    import librosa  # imported here: it loads numba, slow to import

    window = librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    return window, librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # scanning the loaded libraries costs ~10 ms: do it once


def _blas_threads(n: int):
    # these matrices are tiny: BLAS threads on a busy machine cost 10-100x
    return _blas_controller().limit(limits=n, user_api="blas")


def dedup_units(units: np.ndarray) -> np.ndarray:
    """Collapse runs of the same unit to one: [3, 3, 7, 7, 7, 3] -> [3, 7, 3]."""
    units = np.asarray(units)
    if units.size == 0:
        return units
    keep = np.ones(units.shape[0], dtype=bool)
    keep[1:] = units[1:] != units[:-1]
    return units[keep]


def unit_stats(units: np.ndarray | Iterable[np.ndarray], n_units: int) -> dict[str, float]:
    """usage: fraction of the n_units used at least once; perplexity: exp(entropy of unit frequencies)."""
    if not isinstance(units, np.ndarray):
        units = np.concatenate([np.asarray(u, dtype=np.int64).ravel() for u in units] or [np.zeros(0, np.int64)])
    counts = np.bincount(units.ravel().astype(np.int64), minlength=n_units).astype(np.float64)
    if counts.sum() == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    probs = counts[counts > 0] / counts.sum()
    return {"usage": float((counts > 0).mean()), "perplexity": float(np.exp(-(probs * np.log(probs)).sum()))}


class SpeechUnits:
    """Nearest-centroid quantiser of standardised log-mel frames."""

    def __init__(self, centroids: np.ndarray, mean: np.ndarray, std: np.ndarray, mel: MelConfig, dedup: bool = True):
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.mel = mel
        self.dedup = dedup
        self._centroids64 = self.centroids.astype(np.float64)
        self._centroid_sq = (self._centroids64**2).sum(axis=1)

    @property
    def n_units(self) -> int:
        return self.centroids.shape[0]

    @classmethod
    def fit(
        cls,
        waveforms: Iterable[np.ndarray],
        sample_rate: int,
        n_units: int = 64,
        seed: int = 0,
        max_frames: int = 100_000,
        n_mels: int = 40,
        hop_ms: float = 20.0,
        win_ms: float = 20.0,
        dedup: bool = True,
        n_init: int = 3,
        threads: int = 1,
    ) -> SpeechUnits:
        """k-means (scikit-learn MiniBatchKMeans, fixed random_state) on up to max_frames frames
        drawn uniformly from all of waveforms' frames (one pass, memory bounded by max_frames)."""
        from sklearn.cluster import MiniBatchKMeans  # imported here: only fitting needs scikit-learn

        mel = MelConfig(sample_rate, n_mels, hop_ms, win_ms)
        frames = _sample_frames((log_mel(w, mel) for w in waveforms), max_frames, seed)
        if frames.shape[0] < n_units:
            raise ValueError(f"speech units: {frames.shape[0]} frames are fewer than n_units={n_units}")
        mean = frames.mean(axis=0)
        std = frames.std(axis=0) + 1e-3  # constant bands (e.g. above the audio's bandwidth) stay finite
        kmeans = MiniBatchKMeans(
            n_clusters=n_units, random_state=seed, n_init=n_init, batch_size=FIT_BATCH_SIZE, max_iter=100,
        )
        with threadpool_limits(limits=threads):
            kmeans.fit((frames - mean) / std)
        return cls(kmeans.cluster_centers_, mean, std, mel, dedup)

    def frame_units(self, waveform: np.ndarray) -> np.ndarray:
        """One unit per frame (no dedup)."""
        features = (log_mel(waveform, self.mel) - self.mean) / self.std
        if features.shape[0] == 0:
            return np.zeros(0, dtype=np.int16)
        with _blas_threads(1):  # argmin ||x - c||^2 = argmin ||c||^2 - 2 x.c
            products = features.astype(np.float64) @ self._centroids64.T
        return (self._centroid_sq[None, :] - 2.0 * products).argmin(axis=1).astype(np.int16)

    def encode(self, waveform: np.ndarray, dedup: bool | None = None) -> np.ndarray:
        """int16 unit ids of a float waveform at mel.sample_rate; dedup defaults to the fitted setting."""
        units = self.frame_units(waveform)
        return dedup_units(units) if (self.dedup if dedup is None else dedup) else units

    def save(self, path: Path) -> None:
        config = {"mel": asdict(self.mel), "dedup": self.dedup, "n_units": self.n_units}
        with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
            np.savez(f, centroids=self.centroids, mean=self.mean, std=self.std, config=np.array(json.dumps(config)))

    @classmethod
    def load(cls, path: Path) -> SpeechUnits:
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(str(data["config"]))
            return cls(data["centroids"], data["mean"], data["std"], MelConfig(**config["mel"]), config["dedup"])


def _sample_frames(feature_stream: Iterable[np.ndarray], max_frames: int, seed: int) -> np.ndarray:
    """A uniform sample without replacement of max_frames rows over all arrays of the stream:
    every row gets a random key and the max_frames smallest keys are kept."""
    rng = np.random.default_rng(seed)
    key_chunks: list[np.ndarray] = []
    row_chunks: list[np.ndarray] = []
    n_held = 0
    for features in feature_stream:
        key_chunks.append(rng.random(features.shape[0]))
        row_chunks.append(features)
        n_held += features.shape[0]
        if n_held > 2 * max_frames:
            keys, rows = _smallest(np.concatenate(key_chunks), np.concatenate(row_chunks), max_frames)
            key_chunks, row_chunks, n_held = [keys], [rows], max_frames
    if not row_chunks:
        raise ValueError("speech units: no waveforms to fit on")
    keys, rows = np.concatenate(key_chunks), np.concatenate(row_chunks)
    if keys.size > max_frames:
        keys, rows = _smallest(keys, rows, max_frames)
    return rows[np.argsort(keys, kind="stable")]


def _smallest(keys: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.argpartition(keys, k - 1)[:k]
    return keys[index], rows[index]
