"""Atomic checkpoints: a killed job resumes from the newest complete one; a finished run is marked as such.

One process saves `step_N.pt` (torch.save); ddp / fsdp runs save `step_N.dcp/`, a torch.distributed.checkpoint
directory with every rank's shards of the model and optimizer, the train state (step, wall clock, tokens seen)
and each rank's RNG state. Either appears under its final name only once it is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

CHECKPOINT = re.compile(r"step_(\d+)\.(pt|dcp)$")
TRAIN_STATE = "train_state.json"
# Written after final.pt. Snakemake deletes final.pt before it reruns a job (forced, or changed params or
# inputs), so only this marker tells a finished run (a rerun starts over) from a killed one (it resumes).
COMPLETE = "complete"


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:07d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact
    _keep_last(directory, keep)
    return path


def _keep_last(directory: Path, keep: int) -> None:
    for _, old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_sharded_checkpoint(directory: Path, step: int, model, optimizer, train_state: dict, rank: int,
                            keep: int = 2) -> Path:
    """Every rank writes its shards of model + optimizer (get_state_dict: FSDP2 DTensors stay sharded, DDP
    replicas are written once) into step_N.dcp.tmp/, then its RNG state; rank 0 writes the train state and
    renames the directory when all ranks are done (a kill before that leaves the previous checkpoint)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    path = directory / f"step_{step:07d}.dcp"
    tmp = directory / f"step_{step:07d}.dcp.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed attempt
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        (tmp / TRAIN_STATE).write_text(json.dumps(train_state))
        os.replace(tmp, path)
        _keep_last(directory, keep)
    dist.barrier()
    return path


def load_sharded_checkpoint(path: Path, model, optimizer, rank: int) -> dict:
    """Load a step_N.dcp checkpoint into the (already parallelized) model and optimizer; returns the train
    state. DCP reshards, so a run may resume on another number of GPUs (RNG states then start afresh)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng = path / f"rng_rank{rank}.pt"
    if rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((path / TRAIN_STATE).read_text())


def full_model_state(model) -> dict:
    """The consolidated model state dict (what final.pt and snapshots hold). Under a process group it is
    gathered from the shards onto rank 0's CPU (a collective: every rank calls it; others get {})."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


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
