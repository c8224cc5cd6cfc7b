"""The DAG on SLURM: every rule's scheduler request as the rules compute it (mot.cluster.rule_job, called by
workflow/rules/common.smk), and the preflight's refusals on recorded `sinfo` / `scontrol show config` output."""

import re

import pytest
import yaml

from mot.cluster import SINFO_FORMAT, gres_gpus, parse_sinfo, preflight, rule_job
from mot.config.load import load_config

from tests.conftest import REPO, snakemake

# `sinfo -h -N -o "%P|%N|%c|%m|%G"` on the box of workflow/cluster/slurm-box.sh (recorded)
BOX_SINFO = "cpu*|box1|2|16000|(null)\ncpu*|box2|2|16000|(null)\n"
BOX_SCONTROL = "AccountingStorageType   = accounting_storage/slurmdbd\nMinJobAge               = 300 sec\n"
# A GPU cluster in the same format: two 8-GPU nodes (one default partition) and a CPU partition
GPU_SINFO = ("gpu*|g01|64|512000|gpu:a100:8(S:0-1)\ngpu*|g02|64|512000|gpu:a100:8(S:0-1)\n"
             "cpu|c01|128|256000|(null)\n")
RULES = sorted({m for f in (REPO / "workflow" / "rules").glob("*.smk")
                for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)})


def config_with(tmp_path, train: dict, run_train: dict | None = None) -> dict:
    """configs/smoke.yaml with a study-wide `train` override (and one for chameleon/mot)."""
    overlay = {"train": train}
    if run_train:
        overlay["settings"] = {"chameleon": {"runs": {"mot": {"train": run_train}}}}
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return load_config([REPO / "configs" / "smoke.yaml", path], check_paths=False)


def test_every_rule_of_the_workflow_has_a_request_and_every_rule_file_asks_for_it():
    assert {"train", "evaluate", "fit_tokenizers", "data", "report"} <= set(RULES)
    for f in (REPO / "workflow" / "rules").glob("*.smk"):
        text = f.read_text()
        for rule in re.findall(r"^rule (\w+):", text, re.M):
            assert f'**job_resources("{rule}")' in text, f"{f.name}: rule {rule} does not use job_resources"


def test_cpu_only_study_asks_for_no_gpu_anywhere_and_never_one_task_per_gpu(tmp_path):
    config = config_with(tmp_path, {"device": "cpu"})
    for rule in RULES:
        job = rule_job(config, rule, "chameleon", "dense")
        assert job["gpu"] == 0 and job["tasks_per_gpu"] == 0, rule
    assert rule_job(config, "train", "chameleon", "dense") == {
        "threads": 1, "nodes": 1, "tasks": 1, "tasks_per_gpu": 0, "gpu": 0, "gres": "", "mpi": ""}


def test_one_node_with_several_gpus(tmp_path):
    config = config_with(tmp_path, {"device": "cuda", "threads": 4},
                         {"parallel": "ddp", "gpus_per_node": 4})
    assert rule_job(config, "train", "chameleon", "mot") == {
        "threads": 16, "nodes": 1, "tasks": 1, "tasks_per_gpu": 0, "gpu": 4, "gres": "", "mpi": ""}
    assert rule_job(config, "train", "chameleon", "dense")["gpu"] == 1
    assert rule_job(config, "evaluate", "chameleon", "mot") == {"gpu": 1, "tasks_per_gpu": 0}
    # the tokenizers, CLIP and FID stages run on CPU whatever the training device
    for rule in set(RULES) - {"train", "evaluate"}:
        assert rule_job(config, rule)["gpu"] == 0, rule


def test_several_nodes_ask_for_gpus_per_node_one_task_per_node_and_bring_their_own_srun(tmp_path):
    config = config_with(tmp_path, {"device": "cuda", "threads": 8, "batch_size": 32},
                         {"parallel": "fsdp", "nodes": 4, "gpus_per_node": 8})
    assert rule_job(config, "train", "chameleon", "mot") == {
        "threads": 64, "nodes": 4, "tasks": 4, "tasks_per_gpu": 0, "gpu": 0, "gres": "gpu:8", "mpi": "srun"}
    cpu = config_with(tmp_path, {"device": "cpu"}, {"parallel": "ddp", "nodes": 2})
    assert rule_job(cpu, "train", "chameleon", "mot") == {
        "threads": 1, "nodes": 2, "tasks": 2, "tasks_per_gpu": 0, "gpu": 0, "gres": "", "mpi": "srun"}
    assert rule_job(cpu, "evaluate", "chameleon", "mot")["gpu"] == 0


def test_auto_device_asks_for_no_gpu(tmp_path):
    """`auto` trains on a GPU only where one happens to be visible: the scheduler is asked for none."""
    config = config_with(tmp_path, {"device": "auto"})
    assert rule_job(config, "train", "chameleon", "dense")["gpu"] == 0
    assert rule_job(config, "evaluate", "chameleon", "dense")["gpu"] == 0


def job(rule="train", **resources):
    threads = resources.pop("threads", 1)
    return (rule, {"slurm_partition": "cpu", "mem_mb": 4000, **resources}, threads)


def test_sinfo_parsing_finds_the_largest_node_and_the_default_partition():
    partitions, default = parse_sinfo(GPU_SINFO)
    assert default == "gpu"
    assert (partitions["gpu"].nodes, partitions["gpu"].cpus, partitions["gpu"].mem_mb, partitions["gpu"].gpus) == \
        (2, 64, 512000, 8)
    assert partitions["cpu"].gpus == 0
    assert [gres_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,shard:8", "gpu")] == [0, 4, 4, 2, 1]
    with pytest.raises(ValueError, match=re.escape(SINFO_FORMAT)):
        parse_sinfo("cpu box1 2 16000")


def test_the_box_profile_passes_and_every_refusal_is_one_line_naming_the_key():
    ok = [job("init_tracking", mem_mb=2000), job(threads=2), job(nodes=2, tasks=2, mpi="srun"),
          job("evaluate", gpu=0, tasks_per_gpu=0)]
    assert preflight(ok, BOX_SINFO, BOX_SCONTROL, None) == []
    refusals = {
        "slurm_partition": (job(slurm_partition="gpu"),
                            "rule train: slurm_partition='gpu' does not exist (partitions: cpu)"),
        "mem_mb": (job(mem_mb=128000), "rule train: mem_mb=128000 is more than any node of partition 'cpu' has (16000)"),
        "threads": (job(threads=4), "rule train: threads=4 x 1 task(s) per node is more CPUs than any node of "
                                    "partition 'cpu' has (2)"),
        "cpus_per_task": (job(cpus_per_task=3), "rule train: cpus_per_task=3 x 1 task(s) per node is more CPUs"),
        "nodes": (job(nodes=3, tasks=3, mpi="srun"), "rule train: nodes=3 is more than partition 'cpu' has (2)"),
        "gpu": (job("evaluate", gpu=1), "rule evaluate: gpu asks for 1 GPU(s) but partition 'cpu' has none"),
        "gres": (job(nodes=2, tasks=2, mpi="srun", gres="gpu:8"),
                 "rule train: gres asks for 8 GPU(s) but partition 'cpu' has none"),
        "gpus": (job("fit_tokenizers", gpus=1), "rule fit_tokenizers: gpus is not read by sbatch"),
    }
    for key, (bad, message) in refusals.items():
        problems = preflight([bad], BOX_SINFO, BOX_SCONTROL, None)
        assert len(problems) == 1 and problems[0].startswith(message), (key, problems)
        assert "\n" not in problems[0] and key in problems[0]
    # the jobs of one rule, and the rules with the same problem, share one line
    assert preflight([job(mem_mb=99999)] * 5 + [job("evaluate", mem_mb=99999), job("report", mem_mb=2000)],
                     BOX_SINFO, BOX_SCONTROL, None) == [
        "rules train, evaluate: mem_mb=99999 is more than any node of partition 'cpu' has (16000)"]


def test_an_unset_partition_is_the_default_one_and_gpus_are_checked_per_node():
    gpu_job = ("train", {"mem_mb": 100000, "gpu": 8}, 8)
    assert preflight([gpu_job], GPU_SINFO) == []
    too_many = ("train", {"mem_mb": 100000, "gpu": 9}, 8)
    assert preflight([too_many], GPU_SINFO) == [
        "rule train: gpu asks for 9 GPU(s) but no node of partition 'gpu' has more than 8"]
    multi = ("train", {"slurm_partition": "gpu", "nodes": 2, "tasks": 2, "mpi": "srun", "gres": "gpu:8",
                            "mem_mb": 500000}, 64)
    assert preflight([multi], GPU_SINFO) == []
    assert preflight([("evaluate", {"slurm_partition": "cpu", "gpu": 1}, 1)], GPU_SINFO) == [
        "rule evaluate: gpu asks for 1 GPU(s) but partition 'cpu' has none"]


def test_the_status_command_must_work_with_the_clusters_accounting():
    no_accounting = "AccountingStorageType   = accounting_storage/none\nMinJobAge               = 300 sec\n"
    short_age = "AccountingStorageType   = accounting_storage/none\nMinJobAge               = 60 sec\n"
    [sacct] = preflight([], BOX_SINFO, no_accounting, "sacct")
    assert sacct.startswith("slurm-status-command: sacct cannot see jobs") and "squeue" in sacct
    assert preflight([], BOX_SINFO, no_accounting, "squeue") == []
    [squeue] = preflight([], BOX_SINFO, short_age, "squeue")
    assert squeue.startswith("slurm-status-command: squeue loses finished jobs after MinJobAge=60 s")
    assert preflight([], BOX_SINFO, BOX_SCONTROL, "sacct") == []


def test_the_slurm_profile_asks_for_gpus_only_through_keys_sbatch_reads():
    for name in ("slurm", "slurm-box"):
        profile = yaml.safe_load((REPO / "workflow" / "profiles" / name / "config.yaml").read_text())
        for rule, resources in {"*": profile.get("default-resources", {}), **profile.get("set-resources", {})}.items():
            assert not {"gpus", "gpu", "gres", "tasks_per_gpu"} & set(resources), (name, rule)


def test_a_bare_snakemake_finds_the_default_profile_and_it_never_overrides_the_slurm_profile(tmp_path, smoke_config):
    result = snakemake("-n", "--cores", "2", "--configfile", str(smoke_config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Using workflow specific profile {REPO / 'profiles' / 'default'} " in result.stderr
    # snakemake layers it over any --profile: it may only repeat what the slurm profile says (no `cores`)
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert default and all(slurm.get(key) == value for key, value in default.items()), default
