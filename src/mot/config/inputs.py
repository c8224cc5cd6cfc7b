"""What each stage's outputs depend on: canonical fingerprints of the resolved config values a stage reads.

Snakemake's `params` rerun trigger holds these (workflow/rules/common.smk), so a stage reruns exactly when
what it reads changes. The keys of every stage are declared once, in STAGE_KEYS; a run's fingerprint covers
its own resolved config and its setting's inputs (data, tokenizers, sequences, the setting's extra sections).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mot.config.grid import RunSpec, setting_sequences, text_only_seq_len, uses_text_only
from mot.paths import TOKEN_SOURCES
from mot.settings import registry  # a module reference: mot.settings imports mot.config too


def fingerprint(*objects: Any) -> str:
    """Canonical hash of resolved config values (sorted-key JSON): the same content in any key order, from any
    file, gives the same string. One object hashes itself, several hash as their list. Snakemake's `params`
    rerun trigger holds these, so a stage reruns exactly when what it reads changes."""
    content = objects[0] if len(objects) == 1 else list(objects)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# train keys that change how a run is computed, not what it computes (the same batches, the same result)
RESULT_NEUTRAL_TRAIN_KEYS = ("data_workers", "sorted_attention")


def run_inputs(config: dict, run: RunSpec) -> dict:
    """Everything that determines a run's result: its resolved run config (less the result-neutral train keys), the
    steps whose weights it keeps, and what its setting reads (data, tokenizers, sequences, objective)."""
    as_dict = run.as_dict()
    as_dict["train"] = {k: v for k, v in run.train.items() if k not in RESULT_NEUTRAL_TRAIN_KEYS}
    return {"run": as_dict, "snapshots": run.snapshot_steps(config), **setting_inputs(config, run.setting)}


def run_fingerprint(config: dict, run: RunSpec) -> str:
    """Hash of run_inputs (Snakemake reruns the run when it changes)."""
    return fingerprint(run_inputs(config, run))


def image_data(config: dict) -> dict:
    """The data section without the speech and text-only parts (what the image-text shards depend on)."""
    return {k: v for k, v in config["data"].items() if k not in ("speech", "text_only", "token_shard_rows")}


def token_shard_sources(config: dict, setting: str) -> list[str]:
    """The token sources a setting's training reads from webdataset token shards (sequences.store: shards): the
    image-text rows, and the sources of the other sequence kinds its mixture draws."""
    sequences = setting_sequences(config, setting)
    if sequences["store"] != "shards":
        return []
    sources = registry.objective_class(config, setting).sequence_sources
    drawn = {sources[kind] for kind, weight in sequences["mixture"].items() if weight > 0}
    return [source for source in TOKEN_SOURCES if source == "image_text" or source in drawn]


def setting_inputs(config: dict, setting: str) -> dict:
    """The resolved config values a setting's runs read beyond their own run config: the data, the
    tokenizers the setting uses, its sequences (study section overridden by the setting's) and extras."""
    sequences = setting_sequences(config, setting)
    if not sequences["mixture"].get("text_only"):
        # a zero weight is no text-only data at all: such runs keep the fingerprint they had before the kind existed
        sequences["mixture"] = {k: v for k, v in sequences["mixture"].items() if k != "text_only"}
    # likewise iid sampling from memory (the defaults) leaves the fingerprints of runs from before streams as they were
    if sequences["store"] == "memory":
        del sequences["store"]
    if sequences["sampling"] == "iid":
        del sequences["sampling"], sequences["streams"]
    else:
        sequences["shard_rows"] = config["data"]["token_shard_rows"]  # streams walk shards of this many rows
    objective = registry.objective_class(config, setting)
    inputs = {"data": image_data(config), "sequences": sequences,
              "tokenizers": {k: config["tokenizers"][k] for k in objective.tokenizers}}
    if "speech" in objective.tokenizers:  # speech units are fitted on the spoken-caption data
        inputs["speech_data"] = config["data"]["speech"]
    if uses_text_only(config, setting):
        inputs["text_only_data"] = {**config["data"]["text_only"], "row_tokens": text_only_seq_len(config) + 1}
    inputs.update({section: config[section] for section in objective.config_sections})
    return inputs


# The config values each stage's outputs depend on: dotted keys, and two derived values: IMAGE_DATA, the
# image-text data section (image_data), and TEXT_ROW, the text-only row length its settings need.
IMAGE_DATA, TEXT_ROW = "<image data>", "<text-only seq_len>"
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "data": (IMAGE_DATA,),
    "speech_data": ("data.speech", "data.shard_size", "data.max_bad_fraction"),
    "text_data": (IMAGE_DATA, "data.text_only"),
    "fit_tokenizers": (IMAGE_DATA, "tokenizers.text", "tokenizers.image_vq"),
    "tokenize": (IMAGE_DATA, "tokenizers.text", "tokenizers.image_vq", "sequences.max_caption_tokens",
                 "sequences.seq_len"),
    "fit_image_vae": (IMAGE_DATA, "tokenizers.image_vae"),
    "fit_speech_units": ("data.speech", "tokenizers.speech", "tokenizers.text", "sequences.max_caption_tokens"),
    "tokenize_text": (IMAGE_DATA, "data.text_only", "tokenizers.text", TEXT_ROW),
    "shard_tokens": ("data.token_shard_rows",),
    "fit_clip": ("eval.clip", "eval.split"),
    "fid_reference": ("eval.split", "eval.fid_extractor", "eval.inception_weights", "eval.images.n",
                      "eval.images.seed"),
    "fid_random": ("eval.split", "eval.fid_extractor", "eval.inception_weights", "eval.images.n",
                   "eval.images.seed"),
    "report": ("report", "claims"),
}


def config_value(config: dict, key: str) -> Any:
    """A resolved config value by its dotted key, e.g. "eval.clip"."""
    if key in (IMAGE_DATA, TEXT_ROW):
        return image_data(config) if key == IMAGE_DATA else text_only_seq_len(config)
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def stage_fingerprint(config: dict, stage: str) -> str:
    return fingerprint([config_value(config, key) for key in STAGE_KEYS[stage]])


def setting_stage_fingerprint(config: dict, stage: str, setting: str) -> str:
    """A per-setting stage also depends on the setting's inputs (its tokenizers decode what it scores)."""
    return fingerprint(stage_fingerprint(config, stage), setting_inputs(config, setting))


def report_fingerprint(config: dict, setting: str) -> str:
    """A setting's report: the report section, the declared claims and the setting's run roles decide what it says."""
    return fingerprint([config_value(config, key) for key in STAGE_KEYS["report"]]
                       + [config["settings"][setting].get("roles")])


def evaluation_fingerprint(config: dict, run: RunSpec) -> str:
    """An evaluation reruns when its run's result or the eval section changes."""
    return fingerprint(run_fingerprint(config, run), config["eval"])
