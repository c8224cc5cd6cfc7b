"""Atomic checkpoints: a killed job resumes from the newest complete one; a finished run is marked as such."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

CHECKPOINT = re.compile(r"step_(\d+)\.pt$")
# Written after final.pt. Snakemake deletes final.pt before it reruns a job (forced, or changed params or
# inputs), so only this marker tells a finished run (a rerun starts over) from a killed one (it resumes).
COMPLETE = "complete"


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:07d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact
    for old in sorted(checkpoints(directory))[:-keep]:
        old[1].unlink(missing_ok=True)
    return path


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.exists():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT.search(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    found = checkpoints(directory)
    return found[-1][1] if found else None


def load_checkpoint(path: Path, device="cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=False)


def mark_complete(train_dir: Path, step: int) -> None:
    (train_dir / COMPLETE).write_text(f"{step}\n")


def is_complete(train_dir: Path) -> bool:
    return (train_dir / COMPLETE).exists()


def discard_training_state(train_dir: Path) -> None:
    """Checkpoints, snapshots and the completion marker of a run, so that it trains again from step 0."""
    for state in ("checkpoints", "snapshots"):
        shutil.rmtree(train_dir / state, ignore_errors=True)
    (train_dir / COMPLETE).unlink(missing_ok=True)  # last: a kill before this point discards again next time
