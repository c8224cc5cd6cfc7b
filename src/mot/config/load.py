"""Loading a study: read and merge the config files, validate them against the schema (filling its defaults),
then against the rules the schema cannot express and what each setting declares (mot.config.checks), the run roles'
selections and the declared claims against the runs they name (evaluation.roles, evaluation.claims)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from evaluation.claims import claim_problems
from evaluation.roles import role_problems
from mot.config.checks import missing_paths, semantic_problems
from mot.config.files import ConfigError, check_schema, config_sources, located, merge_files


def validate(config: dict, files: list[Path], check_paths: bool = True) -> dict:
    """Validate a merged config (filling defaults in place); raise ConfigError on the first problem.
    check_paths=False accepts data and pretrained paths that do not exist (yet): planning a study on a machine
    without its data (`snakemake -n`, `mot params`); `missing_paths` then names them."""
    sources = config_sources(config, files)
    check_schema(config, sources)
    for path, what in semantic_problems(config):
        raise ConfigError(located(path, what, sources))
    for path, what in [*role_problems(config), *claim_problems(config)]:  # used by the report; checked before any job
        raise ConfigError(located(path, what, sources))
    if check_paths:
        for line in missing_paths(config, files):
            raise ConfigError(line)
    return config


def load_config(files: Iterable[str | Path], check_paths: bool = True) -> dict:
    """Read, merge (in order) and validate config files, as `snakemake --configfile A B` would."""
    merged, files = merge_files(files)
    return validate(merged, files, check_paths)
