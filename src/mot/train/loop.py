"""The training loop of one run: one Snakemake job, one MLflow run, resumable from its checkpoints."""

from __future__ import annotations

import dataclasses

import logging
import math
import time

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from mot.config import RunSpec
from mot.config.inputs import run_fingerprint
from mot.models.accounting import analytic_parameters, flops_per_token
from mot.grouping import MODALITIES
from mot.paths import StudyPaths
from mot.runtime import autocast_for, pick_device
from mot.settings import objective_for
from mot.tracking import RunLogger, experiment_name, flatten
from mot.train import distributed
from mot.train.checkpoint import (discard_training_state, full_model_state, is_complete, latest_checkpoint,
                                  load_checkpoint, load_sharded_checkpoint, mark_complete, rng_state,
                                  save_checkpoint, save_sharded_checkpoint, set_rng_state)
from mot.train.optim import build_optimizer, lr_at

log = logging.getLogger("mot.train")


class NonFiniteLoss(RuntimeError):
    pass


def run_tags(run: RunSpec) -> dict[str, str]:
    return {"setting": run.setting, "arch": run.arch, "ablation": run.ablation, "seed": str(run.seed),
            "run": run.base_name, "study": run.study}


class _NoLogger:
    """What ranks other than 0 log to: nothing (only rank 0 talks to MLflow)."""

    def log_metrics(self, metrics, step, flush=True) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


class Trainer:
    """Owns one run's model, optimizer, data and MLflow run; `fit()` trains (or resumes) to the end.
    Under torchrun every rank builds a Trainer; rank 0 alone logs and writes files (distributed.py)."""

    def __init__(self, config: dict, run: RunSpec):
        self.config, self.run, self.train_cfg = config, run, run.train
        self.paths = StudyPaths.from_config(config)
        torch.set_num_threads(self.train_cfg["threads"])
        torch.manual_seed(run.seed)
        device = pick_device(self.train_cfg["device"])
        self.world = distributed.init(self.train_cfg, device)
        self.device = self.world.device(device)
        if not self.world.is_main:
            logging.getLogger("mot").setLevel(logging.WARNING)
        self.objective = objective_for(config, run.setting, run)
        self.vocab, self.seq_len = self.objective.vocab, self.objective.seq_len
        with torch.device(self.device):  # built where it trains: no full host copy per process at scale
            self.model = self.objective.build_model(run).to(self.device)
        if self.train_cfg["sorted_attention"] and self.device.type != "cuda":
            raise ValueError(f"{run.setting}/{run.name}: train.sorted_attention needs a GPU (flex attention has no CPU "
                             f"backward in this torch); expected false on {self.device.type}")
        self.model.sorted_attention = self.train_cfg["sorted_attention"]
        self.train_data = self.objective.sequences("train", self.model)
        self.val_data = self.objective.sequences("val", self.model)
        # with streams on several ranks each rank builds only its own rows of every global batch
        self.own_rows = self.objective.streams("train") is not None and self.world.size > 1
        aux_weight = run.moe["aux_loss_weight"] if run.moe else 0.0
        # activation checkpointing, compile, DDP / FSDP2 applied from outside; the optimizer sees the result
        self.step_model = distributed.parallelize(distributed.TrainingStep(self.model, self.objective, aux_weight),
                                                  self.train_cfg, self.device, self.world)
        self.sharded = self.train_cfg["parallel"] != "none"  # DCP checkpoints, validation through the wrapper
        self.optimizer = build_optimizer(self.model, self.train_cfg)
        self.autocast = autocast_for(self.device, self.train_cfg["precision"])
        self.train_dir = self.paths.train_dir(run.setting, run.name)
        if self.world.is_main:
            self._discard_stale_state(run_fingerprint(config, run))
        distributed.barrier()
        self.flops_token = flops_per_token(self.model.cfg, self.seq_len)["train"]
        params = analytic_parameters(self.model.cfg)
        self.logger = _NoLogger() if not self.world.is_main else RunLogger.start_or_resume(
            config["results_dir"], experiment_name(run.study, run.setting), run.name,
            self.paths.run_id_file(run.setting, run.name), run_tags(run),
            {**flatten(run.as_dict()), **flatten({k: config[k] for k in ("data", "tokenizers", "sequences")}),
             "params.total": str(params["total"]), "params.non_embedding": str(params["non_embedding"]),
             "perf.flops_per_token": str(self.flops_token)})
        self.step, self.wall_clock, self.tokens_seen = 0, 0.0, 0
        self.snapshot_steps = set(run.snapshot_steps(config))

    def _discard_stale_state(self, fingerprint: str) -> None:
        """Only a job killed mid-run resumes. A run whose config changed, or a finished run that is rerun (forced,
        or its inputs changed), trains afresh from step 0 into a new MLflow run; the old one is tagged `superseded`."""
        marker = self.train_dir / "fingerprint"
        if marker.exists() and marker.read_text().strip() != fingerprint:
            reason = "config changed since the last attempt"
        elif is_complete(self.train_dir):
            reason = "rerun of a finished run"
        else:
            reason = None
        if reason:
            log.info("%s/%s: %s; starting over from step 0 in a new MLflow run", self.run.setting, self.run.name, reason)
            run_id_file = self.paths.run_id_file(self.run.setting, self.run.name)
            if run_id_file.exists():
                RunLogger.attach(self.config["results_dir"], run_id_file).set_tags(
                    {"superseded": "true", "superseded_because": reason})
                run_id_file.unlink()
            discard_training_state(self.train_dir)
        self.train_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint + "\n")

    def fit(self) -> None:
        try:
            self._resume()
            if self.step == 0 and self.world.is_main:  # the text:image token ratio it trains on, over <= 4096 rows
                batches = max(1, min(self.train_cfg["steps"], 100, 4096 // self.train_cfg["batch_size"]))
                self.logger.log_metrics(self.objective.mixture_metrics(
                    self.train_data, batches, self.train_cfg["batch_size"], self.run.seed), 0)
            if self.step == 0:
                self.evaluate_and_log(0)
            self._loop()
            self._save_final()
            self.logger.finish()
            if self.world.is_main:
                mark_complete(self.train_dir, self.step)  # last: a job killed before this resumes, not starts over
        except BaseException as err:
            self.logger.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        log.info("%s/%s: finished %d steps in %.0f s", self.run.setting, self.run.name, self.step, self.wall_clock)

    def _resume(self) -> None:
        checkpoint_path = latest_checkpoint(self.train_dir / "checkpoints")
        if checkpoint_path is None:
            log.info("%s/%s: training from step 0", self.run.setting, self.run.name)
            return
        if checkpoint_path.suffix == ".dcp":
            state = load_sharded_checkpoint(checkpoint_path, self.model, self.optimizer, self.world.rank)
        else:
            state = load_checkpoint(checkpoint_path, self.device)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if "rng" in state:
                set_rng_state(state["rng"])
        self.step, self.wall_clock, self.tokens_seen = state["step"], state["wall_clock"], state["tokens_seen"]
        log.info("%s/%s: resumed from %s", self.run.setting, self.run.name, checkpoint_path.name)

    def evaluate_and_log(self, step: int) -> None:
        # the curve may use a fixed val subset (train.eval_samples): a fine grid of steps at a small cost
        batches = self.val_data.eval_batches(self.config["eval"]["batch_size"], self.train_cfg["eval_samples"])
        losses = self._validation_loss(batches, self.run.modalities)
        # beyond the modalities, e.g. text_only: the text-only val rows of a mixture that trains on them
        losses.update(self.objective.extra_validation(self.model, self.config["eval"]["batch_size"],
                                                      self._validation_loss, self.train_cfg["eval_samples"]))
        self.logger.log_metrics({**{f"val/loss_{m}": v for m, v in losses.items()},
                                 "val/cum_flops": self.tokens_seen * self.flops_token,
                                 "val/wall_clock_s": self.wall_clock}, step)
        log.info("%s/%s step %d: %s", self.run.setting, self.run.name, step,
                 " ".join(f"val/{m}={v:.4f}" for m, v in losses.items()))

    def _validation_loss(self, batches, modalities) -> dict[str, float]:
        if self.sharded:  # each rank its share of the batches, through the parallel wrapper, reduced across ranks
            return distributed.validation_loss(self.step_model, batches, self.device, modalities, self.autocast,
                                               self.world)
        return self.objective.validation_loss(self.model, batches, self.device, modalities, self.autocast)

    def _batches(self, start: int):
        """The host batches of steps start, start + 1, ...: the global batch, or with streams on several ranks this
        rank's rows of it; built here or by train.data_workers DataLoader workers ahead of the step."""
        batch_size = self.train_cfg["batch_size"]
        dataset = StepBatches(self.train_data, start, self.train_cfg["steps"], batch_size, self.run.seed,
                              distributed.rank_rows(batch_size, self.world) if self.own_rows else None)
        if not self.train_cfg["data_workers"]:
            return iter(dataset)
        return iter(DataLoader(dataset, batch_size=None, num_workers=self.train_cfg["data_workers"], prefetch_factor=2))

    def _train_step(self, step: int, batch):
        """One optimizer step on the (seed, step) global batch: this rank's micro-batches (train.grad_accum),
        gradients accumulated here and averaged across ranks by DDP / FSDP2. Returns the global batch's target
        counts and tokens, this rank's share of the step's loss and its loss sums (summed across ranks when logged)."""
        plan = self.model.cfg.plan
        if self.own_rows:  # the loss normaliser is the global batch's target count
            batch = dataclasses.replace(batch, target_counts=distributed.sum_counts(batch.target_counts))
        parts = distributed.micro_batches(batch, self.world, self.train_cfg["grad_accum"], plan.group_of_modality,
                                          plan.n_groups, rows_of_rank=self.own_rows)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.train_cfg)
        self.optimizer.zero_grad(set_to_none=True)
        step_loss, step_sums = 0.0, 0.0
        for index, part in enumerate(parts):
            with distributed.gradient_sync(self.step_model, index == len(parts) - 1):
                with self.autocast:
                    total, loss, sums, aux = self.step_model(part.to(self.device))
                (total / len(parts) if len(parts) > 1 else total).backward()
            step_loss, step_sums = step_loss + loss.detach(), step_sums + sums.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg["grad_clip"])
        self.optimizer.step()
        aux = aux.detach() if aux is not None else None
        n_tokens = batch.n_tokens * (self.world.size if self.own_rows else 1)  # the global batch's tokens
        return (batch.target_counts, n_tokens), step_loss / (len(parts) * self.world.size), step_sums, aux, grad_norm

    def _loop(self) -> None:
        train_cfg, run = self.train_cfg, self.run
        interval = _Interval(self.device)
        moe_layers = self.model.moe_layers()
        self.model.train()
        bar = tqdm(range(self.step, train_cfg["steps"]), desc=f"train {run.setting}/{run.name}",
                   initial=self.step, total=train_cfg["steps"], mininterval=5.0, disable=not self.world.is_main)
        batches = self._batches(self.step)
        for step in bar:
            t0 = time.perf_counter()
            batch, loss, sums, aux, grad_norm = self._train_step(step, next(batches))
            done = step + 1
            log_now = done % train_cfg["log_every"] == 0 or done == train_cfg["steps"]
            if log_now and self.device.type == "cuda":
                torch.cuda.synchronize()  # honest step times; the only sync, once per log interval
            dt = time.perf_counter() - t0
            interval.add(sums, batch, dt, moe_layers)
            self.wall_clock += dt
            self.tokens_seen += batch[1]
            self.step = done
            if log_now:
                loss_value = float(distributed.sum_across_ranks(loss))
                distributed.sum_across_ranks(interval.sums)
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(f"{run.setting}/{run.name}: non-finite loss {loss_value} at step {done}; "
                                        f"the last good checkpoint is kept in {self.train_dir / 'checkpoints'}")
                metrics = {"train/loss": loss_value, "train/lr": lr_at(step, train_cfg), "train/grad_norm": float(distributed.grad_norm_value(grad_norm)),
                           "perf/tokens_per_s": interval.tokens / max(interval.seconds, 1e-9),
                           "perf/flops_per_token": self.flops_token, "perf/cum_flops": self.tokens_seen * self.flops_token,
                           "perf/wall_clock_s": self.wall_clock, **interval.modality_losses(run.modalities)}
                if self.device.type == "cuda":
                    metrics["perf/mfu"] = (metrics["perf/tokens_per_s"] * self.flops_token
                                           / (train_cfg["peak_tflops"] * 1e12 * self.world.size))
                if moe_layers:
                    metrics["moe/aux_loss"] = float(aux)
                    metrics.update({f"moe/load_expert{e}": x for e, x in enumerate(interval.moe_load())})
                self.logger.log_metrics(metrics, done)
                bar.set_postfix(loss=f"{loss_value:.3f}")
                interval = _Interval(self.device)
            if done % train_cfg["eval_every"] == 0 or done == train_cfg["steps"]:
                self.evaluate_and_log(done)
            if done in self.snapshot_steps:
                state = full_model_state(self.model)  # gathered from every rank's shards
                if self.world.is_main:
                    snapshot = self.paths.snapshot(run.setting, run.name, done)
                    snapshot.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({"model": state, "step": done}, snapshot)
            if done % train_cfg["checkpoint_every"] == 0 or done == train_cfg["steps"]:
                self._save_checkpoint(done)

    def _save_checkpoint(self, step: int) -> None:
        directory, keep = self.train_dir / "checkpoints", self.train_cfg["keep_checkpoints"]
        train_state = {"step": step, "wall_clock": self.wall_clock, "tokens_seen": self.tokens_seen}
        if self.sharded:  # torch.distributed.checkpoint: every rank writes its shards
            save_sharded_checkpoint(directory, step, self.model, self.optimizer, train_state, self.world.rank, keep)
        else:
            save_checkpoint(directory, step, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                              "rng": rng_state(), **train_state}, keep)

    def _save_final(self) -> None:
        """final.pt: the consolidated model (gathered from the shards under FSDP2), written by rank 0."""
        state = full_model_state(self.model)
        if not self.world.is_main:
            return
        final = self.paths.final_checkpoint(self.run.setting, self.run.name)
        tmp = final.with_suffix(".tmp")
        torch.save({"model": state, "run": self.run.as_dict(), "vocab": self.vocab.as_dict(),
                    "seq_len": self.seq_len, "step": self.step}, tmp)
        tmp.replace(final)


class StepBatches(IterableDataset):
    """Training batches of steps [start, steps) in order; a DataLoader worker w of n builds steps start + w,
    start + w + n, ... (the DataLoader hands them back in step order), so resuming at a step replays nothing."""

    def __init__(self, sequences, start: int, steps: int, batch_size: int, seed: int, rows: range | None):
        self.sequences, self.start, self.steps = sequences, start, steps
        self.batch_size, self.seed, self.rows = batch_size, seed, rows

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + worker, self.steps, workers):
            if self.rows is None:
                yield self.sequences.train_batch(step, self.batch_size, self.seed)
            else:
                yield self.sequences.train_batch(step, self.batch_size, self.seed, self.rows)


class _Interval:
    """Per-modality loss sums (on the device, read once per log interval) and throughput."""

    def __init__(self, device):
        self.sums = torch.zeros(len(MODALITIES), device=device)
        self.counts = [0] * len(MODALITIES)
        self.seconds, self.tokens = 0.0, 0
        self.load_sum, self.load_steps = None, 0

    def add(self, sums: torch.Tensor, batch: tuple[tuple[int, ...], int], seconds: float, moe_layers=()) -> None:
        """batch: the global batch's (target counts per modality, tokens)."""
        self.sums += sums.detach()
        loads = [m.last_load for m in moe_layers if m.last_load is not None]
        if loads:  # fraction of tokens per expert, averaged over MoE layers and the interval's steps
            mean_load = torch.stack(loads).mean(0)
            self.load_sum = mean_load if self.load_sum is None else self.load_sum + mean_load
            self.load_steps += 1
        counts, n_tokens = batch
        self.counts = [a + b for a, b in zip(self.counts, counts)]
        self.seconds += seconds
        self.tokens += n_tokens

    def moe_load(self) -> list[float]:
        return [] if self.load_sum is None else (self.load_sum / self.load_steps).tolist()

    def modality_losses(self, modalities) -> dict[str, float]:
        sums = self.sums.tolist()
        return {f"train/loss_{m}": sums[MODALITIES.index(m)] / self.counts[MODALITIES.index(m)]
                for m in modalities if self.counts[MODALITIES.index(m)]}


def train(config: dict, run: RunSpec) -> None:
    try:
        Trainer(config, run).fit()
    finally:
        distributed.teardown()
