"""The training loop of one run: one Snakemake job, one MLflow run, resumable from its checkpoints."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from mot.config import RunSpec, flatten
from mot.data.sequences import ChameleonSequences, TokenizedSplit, Vocabulary
from mot.models.accounting import analytic_parameters, flops_per_token
from mot.models.factory import build_model
from mot.models.plan import MODALITIES
from mot.paths import StudyPaths
from mot.tracking import RunLogger, experiment_name
from mot.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mot.train.loss import modality_loss_sums, validation_loss
from mot.train.optim import build_optimizer, lr_at

log = logging.getLogger("mot.train")


class NonFiniteLoss(RuntimeError):
    pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def load_vocabulary(paths: StudyPaths) -> Vocabulary:
    return Vocabulary(**json.loads((paths.tokenizers / "vocab.json").read_text()))


def sequences_for(split: str, paths: StudyPaths, config: dict, model) -> ChameleonSequences:
    plan = model.cfg.plan
    return ChameleonSequences(TokenizedSplit.load(paths.tokens / f"{split}.npz"), load_vocabulary(paths),
                              config["sequences"]["seq_len"], config["sequences"]["captioning_fraction"],
                              plan.group_of_modality, plan.n_groups,
                              config["sequences"]["caption_dropout"] if split == "train" else 0.0)


def run_tags(run: RunSpec) -> dict[str, str]:
    return {"setting": run.setting, "arch": run.arch, "ablation": run.ablation, "seed": str(run.seed),
            "run": run.base_name, "study": run.study}


def train(config: dict, run: RunSpec) -> None:
    paths = StudyPaths.from_config(config)
    tcfg = run.train
    torch.set_num_threads(tcfg["threads"])
    torch.manual_seed(run.seed)
    device = pick_device(tcfg["device"])
    vocab = load_vocabulary(paths)
    seq_len = config["sequences"]["seq_len"]
    model = build_model(run, vocab.size, seq_len).to(device)
    train_data = sequences_for("train", paths, config, model)
    val_data = sequences_for("val", paths, config, model)
    optimizer = build_optimizer(model, tcfg)
    step_model = torch.compile(model) if tcfg["compile"] else model
    autocast = autocast_for(device, tcfg["precision"])

    cfg = model.cfg
    flops_token = flops_per_token(cfg, seq_len)["train"]
    params = analytic_parameters(cfg)
    train_dir = paths.train_dir(run.setting, run.name)
    logger = RunLogger.start_or_resume(
        config["results_dir"], experiment_name(run.study, run.setting), run.name,
        paths.run_id_file(run.setting, run.name), run_tags(run),
        {**flatten(run.as_dict()), **flatten({k: config[k] for k in ("data", "tokenizers", "sequences")}),
         "params.total": str(params["total"]), "params.non_embedding": str(params["non_embedding"]),
         "perf.flops_per_token": str(flops_token)})

    start_step, wall_clock, tokens_seen = 0, 0.0, 0
    checkpoint_path = latest_checkpoint(train_dir / "checkpoints")
    if checkpoint_path is not None:
        state = load_checkpoint(checkpoint_path, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, wall_clock, tokens_seen = state["step"], state["wall_clock"], state["tokens_seen"]
        log.info("%s/%s: resumed from %s", run.setting, run.name, checkpoint_path.name)

    def evaluate_and_log(step: int) -> None:
        losses = validation_loss(model, val_data.eval_batches(config["eval"]["batch_size"]), device,
                                 run.modalities, autocast)
        logger.log_metrics({**{f"val/loss_{m}": v for m, v in losses.items()},
                            "val/cum_flops": tokens_seen * flops_token, "val/wall_clock_s": wall_clock}, step)
        log.info("%s/%s step %d: %s", run.setting, run.name, step,
                 " ".join(f"val/{m}={v:.4f}" for m, v in losses.items()))

    if start_step == 0:
        evaluate_and_log(0)
    interval_sums = torch.zeros(len(MODALITIES), device=device)
    interval_counts = [0] * len(MODALITIES)
    interval_time, interval_tokens = 0.0, 0
    moe_layers = model.moe_layers()
    model.train()
    bar = tqdm(range(start_step, tcfg["steps"]), desc=f"train {run.setting}/{run.name}",
               initial=start_step, total=tcfg["steps"], mininterval=2.0)
    for step in bar:
        t0 = time.perf_counter()
        batch = train_data.train_batch(step, tcfg["batch_size"], run.seed).to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tcfg)
        with autocast:
            logits = step_model(batch.tokens, batch.groups)
        loss, sums = modality_loss_sums(logits, batch)
        aux = model.aux_loss()
        total = loss + run.moe["aux_loss_weight"] * aux if aux is not None else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        optimizer.step()
        interval_sums += sums.detach()
        interval_counts = [a + b for a, b in zip(interval_counts, batch.target_counts)]
        if device.type == "cuda":
            torch.cuda.synchronize() if (step + 1) % tcfg["log_every"] == 0 else None
        dt = time.perf_counter() - t0
        interval_time += dt
        wall_clock += dt
        interval_tokens += batch.n_tokens
        tokens_seen += batch.n_tokens
        done = step + 1
        if done % tcfg["log_every"] == 0 or done == tcfg["steps"]:
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(f"{run.setting}/{run.name}: non-finite loss {loss_value} at step {done}; "
                                    f"the last good checkpoint is kept in {train_dir / 'checkpoints'}")
            metrics = {"train/loss": loss_value, "train/lr": lr_at(step, tcfg), "train/grad_norm": float(grad_norm),
                       "perf/tokens_per_s": interval_tokens / max(interval_time, 1e-9),
                       "perf/flops_per_token": flops_token, "perf/cum_flops": tokens_seen * flops_token,
                       "perf/wall_clock_s": wall_clock}
            for m in run.modalities:
                i = MODALITIES.index(m)
                if interval_counts[i]:
                    metrics[f"train/loss_{m}"] = float(interval_sums[i]) / interval_counts[i]
            if moe_layers:
                metrics["moe/aux_loss"] = float(aux)
                loads = torch.stack([m.last_load for m in moe_layers if m.last_load is not None]).mean(0)
                metrics.update({f"moe/load_expert{e}": float(x) for e, x in enumerate(loads)})
            logger.log_metrics(metrics, done)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            interval_sums.zero_()
            interval_counts = [0] * len(MODALITIES)
            interval_time, interval_tokens = 0.0, 0
        if done % tcfg["eval_every"] == 0 or done == tcfg["steps"]:
            evaluate_and_log(done)
        if done % tcfg["checkpoint_every"] == 0 or done == tcfg["steps"]:
            save_checkpoint(train_dir / "checkpoints", done, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
                "wall_clock": wall_clock, "tokens_seen": tokens_seen})

    final = paths.final_checkpoint(run.setting, run.name)
    tmp = final.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "run": run.as_dict(), "vocab": vocab.as_dict(),
                "seq_len": seq_len, "step": tcfg["steps"]}, tmp)
    tmp.replace(final)
    logger.finish()
    log.info("%s/%s: finished %d steps in %.0f s", run.setting, run.name, tcfg["steps"], wall_clock)
