# Config validation (before any job runs) and the run grid. The stages re-read the same files.
from mot.config import ConfigError, find_run, fingerprint, image_data, run_specs, validate

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


def config_value(key):
    """A resolved (defaults-filled) config value by its dotted key, e.g. "eval.clip"."""
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def config_fingerprint(*keys):
    """Canonical hash of the config values a stage's outputs depend on: its `params` rerun trigger."""
    return fingerprint([config_value(key) for key in keys])


def run_fingerprint(wildcards):
    return find_run(config, wildcards.setting, wildcards.run).fingerprint(config)


def image_data_fingerprint(*keys):
    """config_fingerprint over the image-text data (data.speech excluded) and the given keys."""
    return fingerprint([image_data(config)] + [config_value(key) for key in keys])


# The tokenized data each setting trains on (the stage outputs its train and evaluate jobs need).
SETTING_TOKENS = {
    "chameleon": [f"{ROOT}/tokens/stats.json"],
    "chameleon_speech": [f"{ROOT}/tokens/stats.json", f"{ROOT}/tokens/speech_stats.json"],
    "transfusion": [f"{ROOT}/tokens/stats.json", f"{ROOT}/tokens/latents_stats.json"],
}


def setting_tokens(wildcards):
    return SETTING_TOKENS[wildcards.setting]
