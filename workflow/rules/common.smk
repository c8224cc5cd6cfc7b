# Config validation (before any job runs) and the run grid. The stages re-read the same files.
from mot.config import ConfigError, find_run, run_specs, validate

if workflow.config_settings.config:
    raise WorkflowError("--config overrides are not passed on to the `mot` stages: put them in a YAML file and add it with --configfile")

CONFIG_FILES = [str(f) for f in (workflow.overwrite_configfiles or ["configs/pipeline.yaml"])]
try:
    validate(config, CONFIG_FILES)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None

ROOT = f"{config['results_dir']}/{config['study']}"
CFG = " ".join(CONFIG_FILES)
SETTINGS = list(config["settings"])
RUNS = {setting: [spec.name for spec in run_specs(config, setting)] for setting in SETTINGS}
THREADS = config["train"]["threads"]


wildcard_constraints:
    setting="|".join(SETTINGS),
    run="|".join(sorted({r for runs in RUNS.values() for r in runs}, key=len, reverse=True)),


def section_fingerprint(*sections):
    """Hash of the config sections a stage depends on: Snakemake reruns the stage when it changes."""
    import hashlib, json
    return hashlib.sha256(json.dumps([config[s] for s in sections], sort_keys=True).encode()).hexdigest()[:16]


def run_fingerprint(wildcards):
    return find_run(config, wildcards.setting, wildcards.run).fingerprint(config)
