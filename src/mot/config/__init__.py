"""Study configuration, in layers:

    files   reading, merging, the schema with its defaults, where an error is (file and key)
    grid    the run grid: RunSpec per (setting, run, seed), resolved sections
    checks  the rules the schema cannot express, and what each setting's Objective declares; paths outside results/
    inputs  fingerprints: what each stage's and each run's outputs depend on
    load    load_config / validate: files, then checks (the edge to mot.settings)

This package's top level is the low layer (files and grid) that data, tokenizers and models may use; checks,
inputs and load read each setting's Objective (mot.settings), so they are imported by name where needed.
Errors are one line naming the config file, the key path and what was expected, and happen at the edge;
everything downstream trusts the validated config.
"""

from mot.config.files import ConfigError, deep_merge, read_yaml
from mot.config.grid import (COMPONENTS, RunSpec, find_run, resolve_section, run_seeds, run_specs, seed_run_name,
                             setting_sequences, text_only_seq_len, uses_text_only)

__all__ = ["COMPONENTS", "ConfigError", "RunSpec", "deep_merge", "find_run", "read_yaml", "resolve_section",
           "run_seeds", "run_specs", "seed_run_name", "setting_sequences", "text_only_seq_len", "uses_text_only"]
