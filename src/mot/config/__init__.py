"""Study configuration: load the YAML files, validate them (schema, then the cross-field rules and what each
setting declares), resolve the run grid, and fingerprint what each stage reads.

    files   reading, merging, the schema with its defaults, where an error is (file and key)
    checks  the rules the schema cannot express; paths outside results/
    grid    the run grid: RunSpec per (setting, run, seed), resolved sections
    inputs  fingerprints: what each stage's and each run's outputs depend on

Errors are one line naming the config file, the key path and what was expected, and happen here, at the
edge; everything downstream trusts the validated config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mot.config.checks import missing_paths, semantic_problems
from mot.config.files import ConfigError, check_schema, config_sources, deep_merge, located, merge_files, read_yaml
from mot.config.grid import (COMPONENTS, RunSpec, find_run, resolve_section, run_seeds, run_specs, seed_run_name,
                             setting_sequences, text_only_seq_len, uses_text_only)
from mot.config.inputs import (evaluation_fingerprint, fingerprint, image_data, run_fingerprint, setting_inputs,
                               setting_stage_fingerprint, stage_fingerprint,
                               token_shard_sources)

__all__ = ["COMPONENTS", "ConfigError", "RunSpec", "deep_merge", "evaluation_fingerprint", "find_run", "fingerprint", "image_data",
           "load_config", "missing_paths", "read_yaml", "resolve_section", "run_fingerprint", "run_seeds",
           "run_specs", "seed_run_name", "setting_inputs", "setting_stage_fingerprint", "setting_sequences", "stage_fingerprint",
           "text_only_seq_len", "token_shard_sources", "uses_text_only", "validate"]


def validate(config: dict, files: list[Path], check_paths: bool = True) -> dict:
    """Validate a merged config (filling defaults in place); raise ConfigError on the first problem.
    check_paths=False accepts data and pretrained paths that do not exist (yet): planning a study on a machine
    without its data (`snakemake -n`, `mot params`); `missing_paths` then names them."""
    sources = config_sources(config, files)
    check_schema(config, sources)
    for path, what in semantic_problems(config):
        raise ConfigError(located(path, what, sources))
    if check_paths:
        for line in missing_paths(config, files):
            raise ConfigError(line)
    return config


def load_config(files: Iterable[str | Path], check_paths: bool = True) -> dict:
    """Read, merge (in order) and validate config files, as `snakemake --configfile A B` would."""
    merged, files = merge_files(files)
    return validate(merged, files, check_paths)
