"""The DAG on a SLURM cluster: what each rule asks the scheduler for, and a preflight that checks it.

`rule_job` is every rule's scheduler request derived from the config (the rules call it through
workflow/rules/common.smk), in the resource keys of snakemake-executor-plugin-slurm 2.8: sbatch reads GPUs
only from `gpu` (one node) or `gres` (per node); `tasks_per_gpu: 0` keeps the plugin from starting one task
per GPU; `mpi` makes it run the command as it is (a multi-node job brings its own srun).

`preflight` checks the jobs' resources, as the profile resolved them, against the partitions `sinfo` reports
and the accounting `scontrol show config` reports, before any job is submitted (workflow/rules/cluster.smk
runs it at DAG start): one line per problem, naming the resource key.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from mot.config import find_run

# What every job of the DAG runs on. Only training and evaluation place tensors on a device (train.device);
# data building, tokenizer fitting (mot.tokenizers), CLIP fitting, FID features and reports run on CPU.
GPU_RULES = {"train", "evaluate"}
# `sinfo -h -N -o SINFO_FORMAT`: one line per (node, partition)
SINFO_FORMAT = "%P|%N|%c|%m|%G"
# The plugin's squeue status needs a finished job to stay visible between two status checks
MIN_JOB_AGE_FOR_SQUEUE = 120


def train_job(train: dict) -> dict:
    """A training run's job (its resolved `train` config). One node: the job's GPUs (`gpu`) and one task that
    runs torchrun. Several nodes: GPUs per node (`gres`), one task per node, and an `mpi` job."""
    nodes, per_node = train["nodes"], train["gpus_per_node"]
    gpus = per_node if train["device"] == "cuda" else 0
    return {"threads": train["threads"] * per_node, "nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0,
            "gpu": gpus if nodes == 1 else 0, "gres": f"gpu:{gpus}" if nodes > 1 and gpus else "",
            "mpi": "srun" if nodes > 1 else ""}


def request_keys(rule: str) -> tuple[str, ...]:
    """The resource keys rule_job sets for a rule (threads aside: a rule's `threads:`)."""
    return ("nodes", "tasks", "tasks_per_gpu", "gpu", "gres", "mpi") if rule == "train" else ("gpu", "tasks_per_gpu")


def rule_job(config: dict, rule: str, setting: str | None = None, run: str | None = None) -> dict:
    """The scheduler request of one job of `rule` (setting and run for the per-run rules)."""
    if rule == "train":
        return train_job(find_run(config, setting, run).train)
    if rule == "evaluate":  # evaluates on the device its run trained on (evaluation.stage: run.train.device)
        return {"gpu": 1 if find_run(config, setting, run).train["device"] == "cuda" else 0, "tasks_per_gpu": 0}
    return {"gpu": 0, "tasks_per_gpu": 0}


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int
    cpus: int  # the most any one node has
    mem_mb: int
    gpus: int


def parse_sinfo(text: str) -> tuple[dict[str, Partition], str | None]:
    """Partitions (name -> largest node) and the default partition from `sinfo -h -N -o SINFO_FORMAT`."""
    nodes: dict[str, dict[str, tuple[int, int, int]]] = {}
    default = None
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 5:
            raise ValueError(f"sinfo: unexpected line {line!r} (expected {SINFO_FORMAT})")
        name, node, cpus, mem, gres = fields
        if name.endswith("*"):
            name = default = name[:-1]
        nodes.setdefault(name, {})[node] = (int(cpus), int(mem.rstrip("+")), gres_gpus(gres))
    partitions = {name: Partition(name, len(members), max(c for c, _, _ in members.values()),
                                  max(m for _, m, _ in members.values()), max(g for _, _, g in members.values()))
                  for name, members in nodes.items()}
    return partitions, default


def gres_gpus(gres: str) -> int:
    """GPUs in a node's GRES string: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,shard:8"; "(null)" has none."""
    total = 0
    for item in gres.split(","):
        if item.startswith("gpu"):
            match = re.match(r"gpu(?::[^:(]+)?:(\d+)", item)
            total += int(match.group(1)) if match else 1
    return total


def _int(value) -> int:
    return int(value) if value not in (None, "") else 0


def check_job(resources: dict, threads: int, partitions: dict[str, Partition], default: str | None) -> list[str]:
    """A job's problems against the cluster, each one line naming the resource key."""
    name = resources.get("slurm_partition") or default
    if not name:
        return [f"slurm_partition is not set and the cluster has no default partition"]
    if name not in partitions:
        return [f"slurm_partition={name!r} does not exist (partitions: {', '.join(sorted(partitions))})"]
    part = partitions[name]
    problems = []
    nodes = _int(resources.get("nodes")) or 1
    if nodes > part.nodes:
        problems.append(f"nodes={nodes} is more than partition {name!r} has ({part.nodes})")
    mem = _int(resources.get("mem_mb"))
    if mem > part.mem_mb:  # the plugin's --mem: per node
        problems.append(f"mem_mb={mem} is more than any node of partition {name!r} has ({part.mem_mb})")
    cpus_key = "cpus_per_task" if resources.get("cpus_per_task") else "threads"
    cpus = _int(resources.get("cpus_per_task")) or threads
    tasks_per_node = max(1, (_int(resources.get("tasks")) or 1) // nodes) if resources.get("mpi") else 1
    if cpus * tasks_per_node > part.cpus:
        problems.append(f"{cpus_key}={cpus} x {tasks_per_node} task(s) per node is more CPUs than any "
                        f"node of partition {name!r} has ({part.cpus})")
    gpus = _int(resources.get("gpu")) or gres_gpus(str(resources.get("gres") or ""))
    key = "gpu" if _int(resources.get("gpu")) else "gres"
    if gpus and not part.gpus:
        problems.append(f"{key} asks for {gpus} GPU(s) but partition {name!r} has none")
    elif gpus > part.gpus:
        problems.append(f"{key} asks for {gpus} GPU(s) but no node of partition {name!r} has more "
                        f"than {part.gpus}")
    if _int(resources.get("gpus")):
        problems.append(f"gpus is not read by sbatch (snakemake-executor-plugin-slurm): use gpu or gres")
    return problems


def check_status_command(status_command: str | None, scontrol_config: str) -> list[str]:
    """The plugin's job status source must work here: sacct needs accounting (with AccountingStorageType=
    accounting_storage/none it fails and the plugin waits forever), squeue needs MinJobAge >= 120 s."""
    accounting = re.search(r"^AccountingStorageType\s*=\s*(\S+)", scontrol_config, re.M)
    min_age = re.search(r"^MinJobAge\s*=\s*(\d+)", scontrol_config, re.M)
    command = status_command or ("sacct" if shutil.which("sacct") else "squeue")  # the plugin's own default
    if command == "sacct" and accounting and accounting.group(1) == "accounting_storage/none":
        return ["slurm-status-command: sacct cannot see jobs on this cluster (AccountingStorageType="
                "accounting_storage/none): set `slurm-status-command: squeue` in the profile"]
    if command == "squeue" and min_age and int(min_age.group(1)) < MIN_JOB_AGE_FOR_SQUEUE:
        return [f"slurm-status-command: squeue loses finished jobs after MinJobAge={min_age.group(1)} s "
                f"(needs >= {MIN_JOB_AGE_FOR_SQUEUE}): use sacct with accounting, or raise MinJobAge"]
    return []


def preflight(jobs, sinfo_text: str, scontrol_config: str = "", status_command: str | None = None) -> list[str]:
    """Problems of `jobs` ((rule, resources, threads) per job) on this cluster: one line per problem, naming the
    rules that have it (the jobs of a rule, and often all rules, share one profile entry)."""
    partitions, default = parse_sinfo(sinfo_text)
    found: dict[str, list[str]] = {}
    for rule, resources, threads in jobs:
        for problem in check_job(resources, threads, partitions, default):
            rules = found.setdefault(problem, [])
            if rule not in rules:
                rules.append(rule)
    return check_status_command(status_command, scontrol_config) + [
        f"rule{'s' if len(rules) > 1 else ''} {', '.join(rules)}: {problem}" for problem, rules in found.items()]


def cluster_state() -> tuple[str, str]:
    """(`sinfo` in SINFO_FORMAT, `scontrol show config`) from the running cluster."""
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, check=True)
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True)
    return sinfo.stdout, config.stdout
