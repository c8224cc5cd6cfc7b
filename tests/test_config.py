"""A config is checked as a whole before any job runs; errors name the file and the key."""

import pytest
import yaml

from mot.config import ConfigError, find_run, load_config, run_specs
from tests.conftest import REPO, snakemake


def write(tmp_path, content: dict, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def base():
    return yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())


def test_default_and_smoke_configs_are_valid():
    for name in ("pipeline.yaml", "smoke.yaml"):
        config = load_config([REPO / "configs" / name])
        assert {s.name for s in run_specs(config)} >= {"dense", "mot"}


def test_defaults_are_filled_and_run_overrides_only_what_they_name(tmp_path):
    config = base()
    config["settings"]["chameleon"]["model"] = {"d_model": 48}
    config["settings"]["chameleon"]["runs"]["mot"]["model"] = {"n_layers": 3}
    loaded = load_config([write(tmp_path, config)])
    mot, dense = find_run(loaded, "chameleon", "mot"), find_run(loaded, "chameleon", "dense")
    assert (mot.model["d_model"], mot.model["n_layers"]) == (48, 3)
    assert (dense.model["d_model"], dense.model["n_layers"]) == (48, 2)
    assert loaded["train"]["grad_clip"] == 1.0  # schema default


def test_unknown_key_names_file_and_key_path(tmp_path):
    config = base()
    config["model"]["d_modle"] = 64
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"^{path}: model\.d_modle: unknown key \(expected one of: .*d_model"):
        load_config([path])


def test_wrong_type_names_file_and_key_path(tmp_path):
    config = base()
    config["train"]["steps"] = "many"
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"^{path}: train\.steps: expected integer, got str 'many'"):
        load_config([path])


def test_error_points_at_the_file_that_set_the_key(tmp_path):
    override = write(tmp_path, {"settings": {"chameleon": {"runs": {"mot": {"untie": ["atn"]}}}}}, "override.yaml")
    with pytest.raises(ConfigError, match=rf"^{override}: settings\.chameleon\.runs\.mot\.untie\[0\]: expected one of"):
        load_config([REPO / "configs" / "smoke.yaml", override])


def test_malformed_config_stops_snakemake_before_any_job(tmp_path):
    config = base()
    config["results_dir"] = str(tmp_path / "results")
    config["model"]["d_modle"] = 64
    path = write(tmp_path, config)
    result = snakemake("-n", "--cores", "1", "--configfile", str(path))
    assert result.returncode != 0
    assert f"{path}: model.d_modle: unknown key" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_dry_run_plans_every_stage_in_order(smoke_config):
    result = snakemake("-n", "--cores", "1", "--configfile", str(smoke_config))
    assert result.returncode == 0, result.stderr
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and not parts[0].endswith(":"):
            counts[parts[0]] = int(parts[1])
    assert counts == {"init_tracking": 1, "data": 1, "fit_tokenizers": 1, "tokenize": 1, "train": 2,
                      "evaluate": 2, "report": 1, "all": 1, "total": 10}
    graph = snakemake("--rulegraph", "--configfile", str(smoke_config)).stdout
    labels = {line.split("[")[0].strip(): line.split('label = "')[1].split('"')[0]
              for line in graph.splitlines() if "label = " in line}
    edges = {(labels[a.strip()], labels[b.strip().rstrip(";")])
             for line in graph.splitlines() if "->" in line for a, b in [line.split("->")]}
    for upstream, downstream in [("data", "fit_tokenizers"), ("fit_tokenizers", "tokenize"), ("tokenize", "train"),
                                 ("train", "evaluate"), ("evaluate", "report"), ("init_tracking", "data")]:
        assert (upstream, downstream) in edges
