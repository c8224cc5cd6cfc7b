"""The one table of where every stage reads and writes: results/{study}/... .

The Python stages and the Snakemake rules (workflow/rules/common.smk: PATHS) both take their file names
from here, so a name lives in one place. The rules pass wildcard patterns ("{setting}", "{run}") where a
method takes a setting or a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"   # every shard folder's manifest (data, data/speech, data/text, token shards)
TOKEN_SOURCES = ("image_text", "text_only", "speech")  # the token sources training rows come from


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
    def tracking_marker(self) -> Path:
        return self.root / "tracking.json"

    def log(self, *parts: str) -> Path:
        """A job's log: log("data") is logs/data.log, log("train", setting, run) logs/train/{setting}/{run}.log."""
        return self.root / "logs" / Path(*parts[:-1]) / f"{parts[-1]}.log"

    # --- data (webdataset shards, each folder with its manifest) ---------------------------------

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

    @staticmethod
    def manifest(shard_dir: Path) -> Path:
        return Path(shard_dir) / MANIFEST

    # --- tokenizers -------------------------------------------------------------------------------

    @property
    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    @property
    def text_tokenizer(self) -> Path:
        return self.tokenizers / "text_bpe.json"

    @property
    def image_tokenizer(self) -> Path:
        """The VQ-VAE of the discrete image tokens."""
        return self.tokenizers / "vqvae.pt"

    @property
    def vocab(self) -> Path:
        """Written last by fit_tokenizers: its presence means both tokenizers are complete."""
        return self.tokenizers / "vocab.json"

    @property
    def fit_summary(self) -> Path:
        return self.tokenizers / "fit_summary.json"

    @property
    def image_vae(self) -> Path:
        """Transfusion's continuous image tokenizer (a diffusers folder)."""
        return self.tokenizers / "image_vae"

    @property
    def speech_units(self) -> Path:
        return self.tokenizers / "speech_units.npz"

    # --- tokenized data ---------------------------------------------------------------------------

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def tokens_stats(self) -> Path:
        """Image codes + caption ids of every split (written last by tokenize)."""
        return self.tokens / "stats.json"

    @property
    def latents_stats(self) -> Path:
        return self.tokens / "latents_stats.json"

    @property
    def speech_stats(self) -> Path:
        return self.tokens / "speech_stats.json"

    @property
    def text_stats(self) -> Path:
        return self.tokens / "text_stats.json"

    def split_tokens(self, split: str) -> Path:
        return self.tokens / f"{split}.npz"

    def split_latents(self, split: str) -> Path:
        return self.tokens / f"{split}_latents.npy"

    def split_speech(self, split: str) -> Path:
        return self.tokens / f"{split}_speech.npz"

    def split_text(self, split: str) -> Path:
        return self.tokens / f"{split}_text.npz"

    def source_rows(self, source: str, split: str) -> Path:
        """The tokenized rows of one token source (what its token shards are cut from)."""
        return {"image_text": self.split_tokens, "text_only": self.split_text,
                "speech": self.split_speech}[source](split)

    def source_stats(self, source: str) -> Path:
        """The file whose presence means a token source's rows are complete (its shards' input)."""
        return {"image_text": self.tokens_stats, "text_only": self.text_stats, "speech": self.speech_stats}[source]

    def token_shards(self, source: str) -> Path:
        return self.tokens / "shards" / source

    # --- evaluation references --------------------------------------------------------------------

    @property
    def references(self) -> Path:
        """Evaluation references fitted once per study: tiny CLIP, FID statistics."""
        return self.root / "references"

    @property
    def clip(self) -> Path:
        return self.references / "clip.pt"

    def fid_reference(self, extractor: str) -> Path:
        return self.references / f"fid_{extractor}.npz"

    def fid_summary(self, extractor: str) -> Path:
        return self.references / f"fid_{extractor}.json"

    def fid_random(self, setting: str) -> Path:
        """The FID of a setting's images decoded from random tokenizer inputs (its untrained-generator floor)."""
        return self.references / setting / "fid_random.json"

    # --- runs -------------------------------------------------------------------------------------

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

    def snapshot(self, setting: str, run: str, step: int) -> Path:
        """Model weights kept at a step evaluated over training (eval.over_training)."""
        return self.train_dir(setting, run) / "snapshots" / f"step_{step:07d}.pt"

    def eval_metrics(self, setting: str, run: str) -> Path:
        return self.eval_dir(setting, run) / "metrics.json"

    def report_dir(self, setting: str) -> Path:
        return self.root / setting / "report"

    def report_md(self, setting: str) -> Path:
        return self.report_dir(setting) / "report.md"
