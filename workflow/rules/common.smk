# Config validation (before any job runs) and the run grid. The stages re-read the same files.
from snakemake.logging import logger

from mot.cluster import request_keys, rule_job
from mot.config import ConfigError, find_run, run_specs, uses_text_only
from mot.config.inputs import (evaluation_fingerprint, report_fingerprint, run_fingerprint, setting_stage_fingerprint,
                               stage_fingerprint, token_shard_sources)
from mot.config.load import missing_paths, validate
from mot.paths import TOKEN_SOURCES, StudyPaths
from mot.settings import objective_class

if workflow.config_settings.config:
    raise WorkflowError("--config overrides are not passed on to the `mot` stages: put them in a YAML file and add it with --configfile")

CONFIG_FILES = [str(f) for f in (workflow.overwrite_configfiles or ["configs/pipeline.yaml"])]
# A dry run plans a study whose data is not on this machine (a paper-scale config on a laptop); a real run
# stops before any job when a data or pretrained path is missing.
DRY_RUN = workflow.output_settings.dryrun
try:
    validate(config, CONFIG_FILES, check_paths=not DRY_RUN)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None
if DRY_RUN:
    for line in missing_paths(config, CONFIG_FILES):
        logger.warning(f"config warning: {line} (planned anyway: this is a dry run)")

PATHS = StudyPaths.from_config(config)  # every file name the rules use (src/mot/paths.py)
CFG = " ".join(CONFIG_FILES)
SETTINGS = list(config["settings"])
RUNS = {setting: [spec.name for spec in run_specs(config, setting)] for setting in SETTINGS}
THREADS = config["train"]["threads"]


wildcard_constraints:
    setting="|".join(SETTINGS),
    run="|".join(sorted({r for runs in RUNS.values() for r in runs}, key=len, reverse=True)),


def stage_params(stage: str) -> str:
    """A stage's `params` rerun trigger: the fingerprint of the config keys it reads (mot.config.inputs.STAGE_KEYS)."""
    return stage_fingerprint(config, stage)


def run_params(wildcards) -> str:
    return run_fingerprint(config, find_run(config, wildcards.setting, wildcards.run))


def evaluation_params(wildcards) -> str:
    return evaluation_fingerprint(config, find_run(config, wildcards.setting, wildcards.run))


def setting_tokens(wildcards):
    """The tokenized data a setting's train and evaluate jobs read: the files its Objective declares, the text-only
    rows its mixture draws (so data/text is built only when some setting draws them), and its token shards."""
    setting = wildcards.setting
    return ([str(getattr(PATHS, name)) for name in objective_class(config, setting).token_files]
            + ([str(PATHS.text_stats)] if uses_text_only(config, setting) else [])
            + [str(PATHS.manifest(PATHS.token_shards(source))) for source in token_shard_sources(config, setting)])


def train_launch(wildcards) -> str:
    """How a training job starts `mot`: one plain process; on one node with train.gpus_per_node > 1, torchrun with
    one process per GPU; on train.nodes > 1 (SLURM), `srun` starts one torchrun per node and they rendezvous (c10d)
    on the job's first node, at a port derived from the job id. (`--` ends torchrun's own options: it would
    take mot's --run for an abbreviation of its --run-path.)"""
    train = find_run(config, wildcards.setting, wildcards.run).train
    nodes, per_node = train["nodes"], train["gpus_per_node"]
    if nodes == 1 and per_node == 1:
        return "mot"
    if nodes == 1:
        return f"torchrun --standalone --nproc-per-node={per_node} -m mot --"
    gres = f" --gres=gpu:{per_node}" if train["device"] == "cuda" else ""
    return (f"srun --nodes={nodes} --ntasks-per-node=1 --cpus-per-task={train['threads'] * per_node}{gres} "
            f"torchrun --nnodes={nodes} --nproc-per-node={per_node} --rdzv-backend=c10d "
            "--rdzv-endpoint=$(hostname):$((29500 + SLURM_JOB_ID % 10000)) --rdzv-id=$SLURM_JOB_ID -m mot --")


def train_job(wildcards) -> dict:
    """A run's training job as a scheduler sees it (mot.cluster.train_job: nodes, GPUs, tasks, CPUs)."""
    return rule_job(config, "train", wildcards.setting, wildcards.run)


def job_resources(rule) -> dict:
    """A rule's scheduler request derived from the config (mot.cluster.rule_job): its `resources:` entries."""
    return {key: (lambda key: lambda w: rule_job(config, rule, w.get("setting"), w.get("run"))[key])(key)
            for key in request_keys(rule)}


def train_resource(key):
    return lambda wildcards: train_job(wildcards)[key]
