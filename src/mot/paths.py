"""Where every stage reads and writes: results/{study}/... (DESIGN §8). The .smk rules use the same layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudyPaths:
    results_dir: Path
    study: str

    @classmethod
    def from_config(cls, config: dict) -> "StudyPaths":
        return cls(Path(config["results_dir"]), config["study"])

    @property
    def root(self) -> Path:
        return self.results_dir / self.study

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def speech_data(self) -> Path:
        """Spoken-caption shards of the chameleon_speech setting (their own manifest)."""
        return self.data / "speech"

    @property
    def text_data(self) -> Path:
        """Text-only documents of sequences.mixture.text_only (their own manifest)."""
        return self.data / "text"

    @property
    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def references(self) -> Path:
        """Evaluation references fitted once per study: tiny CLIP, FID statistics."""
        return self.root / "references"

    def fid_reference(self, extractor: str) -> Path:
        return self.references / f"fid_{extractor}.npz"

    def fid_summary(self, extractor: str) -> Path:
        return self.references / f"fid_{extractor}.json"

    def snapshot(self, setting: str, run: str, step: int) -> Path:
        """Model weights kept at a step evaluated over training (eval.over_training)."""
        return self.train_dir(setting, run) / "snapshots" / f"step_{step:07d}.pt"

    @property
    def tracking_marker(self) -> Path:
        return self.root / "tracking.json"

    def run_dir(self, setting: str, run: str) -> Path:
        return self.root / setting / run

    def train_dir(self, setting: str, run: str) -> Path:
        return self.run_dir(setting, run) / "train"

    def eval_dir(self, setting: str, run: str) -> Path:
        return self.run_dir(setting, run) / "eval"

    def run_id_file(self, setting: str, run: str) -> Path:
        return self.train_dir(setting, run) / "mlflow_run_id"

    def final_checkpoint(self, setting: str, run: str) -> Path:
        return self.train_dir(setting, run) / "final.pt"

    def report_dir(self, setting: str) -> Path:
        return self.root / setting / "report"
