"""Data-parallel training with PyTorch's own engine (torchrun, DDP, FSDP2), applied to a model from outside.

torchrun starts one process per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK; `init` joins its process
group. `parallelize` applies activation checkpointing, torch.compile and DDP or FSDP2 to a `TrainingStep`
(the objective's loss on the model), never to the model's code. `micro_batches` gives each rank its own
disjoint slice of the step's global batch, regrouped by modality on the host. Only rank 0 talks to MLflow
and writes files; metrics are summed across ranks here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from mot.data.sequences import Batch
from mot.grouping import MODALITIES

log = logging.getLogger("mot.train")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The accelerator of this process: one GPU per local rank."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device


def init(train_cfg: dict, device: torch.device) -> World:
    """Join torchrun's process group (env://: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), NCCL on
    GPUs and gloo on CPU. A plain process with train.parallel ddp/fsdp gets a group of one, so the same code
    (and the same sharded checkpoints) run without torchrun."""
    parallel = train_cfg["parallel"]
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and parallel == "none":
        raise RuntimeError(f"started with {size} processes but train.parallel is none: set it to ddp or fsdp")
    if parallel == "none":
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "WORLD_SIZE" not in os.environ:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend, device_id=world.device(device) if device.type == "cuda" else None)
    return world


_host_group = None  # a gloo group for host-side sums beside NCCL (sum_counts)


def teardown() -> None:
    global _host_group
    _host_group = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity in a single process)."""
    if is_distributed() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# --- the step the parallel wrappers see ------------------------------------------------------------


class TrainingStep(nn.Module):
    """forward(batch) = (loss + MoE aux loss, loss, per-modality loss sums, aux loss) of the setting's
    objective on the model. DDP and FSDP2 wrap this module, so their hooks (gradient sync, all-gathers)
    fire for every setting, whichever model methods its loss calls (Transfusion calls `hidden` and `head`)."""

    def __init__(self, model: nn.Module, objective, aux_loss_weight: float = 0.0):
        super().__init__()
        self.model, self.aux_loss_weight = model, aux_loss_weight
        self._loss = objective.loss  # a bound method, not a module: the objective holds no parameters

    def forward(self, batch: Batch):
        loss, sums = self._loss(self.model, batch)
        aux = self.model.aux_loss()
        total = loss + self.aux_loss_weight * aux if aux is not None else loss
        return total, loss, sums, aux


def checkpoint_activations(block: nn.Module) -> None:
    """Recompute the block's activations in backward instead of keeping them. The block's forward is wrapped
    in place (no wrapper module), so parameter names, final.pt and checkpoints stay the same."""
    forward = block.forward

    def checkpointed_forward(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed_forward


def parallelize(step: TrainingStep, train_cfg: dict, device: torch.device, world: World) -> nn.Module:
    """Activation checkpointing and torch.compile per transformer block, then DDP or FSDP2 (fully_shard per
    block, then the root; bf16 parameters with fp32 gradient reduction when train.precision is bf16).
    Returns the module to call for a training step (the model's own parameters are what the optimizer sees)."""
    model = step.model
    for block in model.blocks:
        if train_cfg["activation_checkpointing"]:
            checkpoint_activations(block)
        if train_cfg["compile"]:
            block.compile()  # in place: parameter names unchanged
    has_moe = bool(model.moe_layers())  # an MoE expert may get no token on a rank: unused parameters
    if train_cfg["parallel"] == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=has_moe)
    if train_cfg["parallel"] == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (world.size,))
        bf16 = train_cfg["precision"] == "bf16"
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                      reduce_dtype=torch.float32 if bf16 else None)
        for block in model.blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        # the root keeps the batch as it is (float latents and noise of Transfusion stay fp32)
        root_policy = dataclasses.replace(policy, cast_forward_inputs=False)
        fully_shard(step, mesh=mesh, mp_policy=root_policy)
        if has_moe:
            step.set_reduce_scatter_unused_params(True)
        return step
    return step


def gradient_sync(step_module: nn.Module, sync: bool):
    """DDP all-reduces gradients only on the last micro-batch of a step (no_sync before); FSDP2 reduce-scatters
    every micro-batch (its gradients stay sharded)."""
    if not sync and hasattr(step_module, "no_sync"):
        return step_module.no_sync()
    return contextlib.nullcontext()


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s total norm as a plain tensor (a DTensor under FSDP2)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# --- each rank's share of the data -------------------------------------------------------------------


def rank_rows(batch_size: int, world: World) -> range:
    """The rows of every global batch that this rank trains on."""
    share = batch_size // world.size
    return range(world.rank * share, (world.rank + 1) * share)


def sum_counts(counts: tuple[int, ...]) -> tuple[int, ...]:
    """Per-modality target counts summed over ranks, as host ints: a gloo all-reduce on CPU tensors (a CPU group
    beside NCCL), so the loss normaliser of a rank that built only its own rows needs no device sync."""
    global _host_group
    if not is_distributed() or dist.get_world_size() == 1:
        return counts
    if _host_group is None:
        _host_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    total = torch.tensor(counts, dtype=torch.float64)
    dist.all_reduce(total, group=_host_group)
    return tuple(int(c) for c in total.tolist())


def micro_batches(batch: Batch, world: World, grad_accum: int, group_of_modality, n_groups: int,
                  rows_of_rank: bool = False) -> list[Batch]:
    """This rank's micro-batches of a global batch: rows [rank·n, (rank+1)·n) with n = B / world (or all rows of a
    batch that holds only this rank's rows: rows_of_rank), in
    `grad_accum` equal parts, so the ranks' rows are disjoint and their union is the 1-process batch.
    Each part's target_counts are the global batch's divided by the number of parts over all ranks: the
    objective's loss (sums / counts) then scales so that the averaged, accumulated gradient is the gradient
    of the global batch's token-weighted mean loss, as one process computes it."""
    parts = world.size * grad_accum
    if parts == 1:
        return [batch]
    scaled = tuple(count / parts for count in batch.target_counts)
    if rows_of_rank:  # the batch holds only this rank's rows (streams), with the global batch's counts
        size, first = batch.tokens.shape[0] // grad_accum, 0
    else:
        size, first = batch.tokens.shape[0] // parts, world.rank * grad_accum
    return [dataclasses.replace(batch.rows((first + i) * size, (first + i + 1) * size, group_of_modality,
                                        n_groups), target_counts=scaled)
            for i in range(grad_accum)]


def rank_share(batches: Iterable[Batch], world: World) -> Iterator[tuple[Batch, bool]]:
    """(batch, counts) over this rank's share of the validation batches (every world-th one), padded with
    uncounted repeats so that every rank runs the same number of forwards (FSDP2 all-gathers in each)."""
    seen = mine = 0
    last = None
    for index, batch in enumerate(batches):
        seen, last = index + 1, batch
        if index % world.size == world.rank:
            mine += 1
            yield batch, True
    for _ in range(-(-seen // world.size) - mine):
        yield last, False


@torch.no_grad()
def validation_loss(step: nn.Module, batches: Iterable[Batch], device, modalities: Iterable[str], autocast,
                    world: World) -> dict[str, float]:
    """Objective.validation_loss for a parallel step module: each rank scores its share of the batches through
    the wrapper (so FSDP2 gathers the parameters), and torchmetrics' MeanMetric reduces across ranks. Every
    rank computes every modality (compute() is a collective); one without targets on any rank is left out."""
    from torchmetrics.aggregation import MeanMetric

    step.eval()
    means = {m: MeanMetric().to(device) for m in modalities}
    for batch, counted in rank_share(batches, world):
        batch = batch.to(device)
        with autocast:
            _, _, sums, _ = step(batch)
        for m in modalities:
            count = batch.target_counts[MODALITIES.index(m)]
            if counted and count:
                means[m].update(sums[MODALITIES.index(m)] / count, weight=count)
    step.train()
    values = {m: float(metric.compute()) for m, metric in means.items()}
    return {m: v for m, v in values.items() if v == v}  # NaN: no targets of m anywhere
