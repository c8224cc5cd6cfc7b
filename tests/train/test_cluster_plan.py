"""The same DAG on a SLURM cluster: every study in configs/experiments/ plans with the slurm profile (data that
is not on this machine only warns in a dry run), and each training job is launched as its config says: one
plain `mot` process, torchrun with one process per GPU, or srun + torchrun with c10d rendezvous on several
nodes. A real run without the data stops before any job with the one-line config error."""

import re

import pytest

from mot.config import ConfigError
from mot.config.load import load_config

from tests.conftest import REPO, snakemake

EXPERIMENTS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
SLURM = str(REPO / "workflow" / "profiles" / "slurm")


def plan(tmp_path, *configs) -> tuple[str, list[str]]:
    """(stdout + stderr, the train jobs' shell commands) of `snakemake -n -p --profile slurm`."""
    result = snakemake("-n", "-p", "--profile", SLURM, "--configfile", *map(str, configs), cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    commands = [line.split("Shell command: ", 1)[1] for line in out.splitlines()
                if line.startswith("Shell command: ") and " train --config " in line]
    assert commands, out[-3000:]
    return out, commands


def with_base(path) -> list:
    """A study file alone; an overlay after its base: the files its own documented command puts first
    (`--configfile configs/experiments/tiny_untuned.yaml configs/experiments/tiny_seeds.yaml`), else the experiment
    its name extends (tiny_mixture-1to1.yaml after tiny_mixture.yaml), else the default study."""
    try:
        load_config([path], check_paths=False)
        return [path]
    except ConfigError:
        documented = re.search(rf"--configfile ((?:\S+\.yaml )+)configs/experiments/{re.escape(path.name)}",
                               re.sub(r" *\\\n# *", " ", path.read_text()))  # a command over comment lines is one
        if documented:
            return [*(REPO / base for base in documented.group(1).split()), path]
        bases = [p for p in EXPERIMENTS if p != path and path.stem.startswith(p.stem)]
        return [max(bases, key=lambda p: len(p.stem)) if bases else REPO / "configs" / "pipeline.yaml", path]


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_plans_with_the_slurm_profile(tmp_path, experiment):
    out, commands = plan(tmp_path, *with_base(experiment))
    if experiment.name.endswith("_paper.yaml"):  # 4 nodes x 8 GPUs, FSDP2
        for command in commands:
            assert command.startswith("srun --nodes=4 --ntasks-per-node=1 --cpus-per-task=64 --gres=gpu:8 torchrun "
                                      "--nnodes=4 --nproc-per-node=8 --rdzv-backend=c10d "), command
            assert "--rdzv-id=$SLURM_JOB_ID -m mot -- train --config " in command
        assert "config warning: " in out and "data.coco.train_json: path 'data/coco/annotations" in out
        assert "does not exist (planned anyway: this is a dry run)" in out
    else:
        assert all(command.startswith("mot train --config ") for command in commands), commands


@pytest.mark.parametrize("setting_file, size, launch", [
    ("transfusion_paper.yaml", "443m", "torchrun --standalone --nproc-per-node=8 -m mot -- train "),
    ("chameleon_speech_paper.yaml", "1.5b", "srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=64 --gres=gpu:8 "
                                            "torchrun --nnodes=2 --nproc-per-node=8 "),
])
def test_a_paper_size_overlay_changes_the_launch_and_the_results_dir(tmp_path, setting_file, size, launch):
    experiments = REPO / "configs" / "experiments"
    out, commands = plan(tmp_path, experiments / setting_file, experiments / "sizes" / f"{size}.yaml")
    assert all(command.startswith(launch) for command in commands), commands
    assert all(re.search(rf"> results/{re.escape(size)}/\w+/logs/train/", command) for command in commands)


def test_a_real_run_without_the_data_stops_before_any_job(tmp_path):
    result = snakemake("--cores", "1", "--configfile", str(REPO / "configs" / "experiments" / "chameleon_paper.yaml"),
                       cwd=tmp_path)
    assert result.returncode != 0
    assert ("config error: " + str(REPO / "configs" / "experiments" / "chameleon_paper.yaml")
            + ": data.coco.train_json: path 'data/coco/annotations/captions_train2017.json' does not exist") in result.stderr
    assert not (tmp_path / "results").exists()
