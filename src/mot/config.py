"""Study configuration: load YAML files, validate against the schema, resolve the run grid.

Errors are one line naming the config file, the key path and what was expected, and
happen here, at the edge; everything downstream trusts the validated config.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
COMPONENTS = ("attn", "ffn", "norm")


class ConfigError(ValueError):
    """A config problem, phrased as `file: key.path: what was expected`."""


def deep_merge(base: dict, override: dict) -> dict:
    """Merge like Snakemake merges several config files: later files win, dicts merge."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that rejects a key given twice in one mapping (e.g. two runs with one name)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return loaded


def _without_defaults(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_defaults(v) for k, v in schema.items() if k != "default"}
    return schema


def _schema() -> dict:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for section in ("model", "train", "sequences"):
        schema["$defs"][f"{section}_override"] = _without_defaults(schema["$defs"][section])
    return schema


def _filling_validator():
    """Draft 2020-12 validator that also fills `default`s in (as Snakemake's validate does)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": fill_defaults})


def _key_path(path: Iterable) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _file_defining(path: list, sources: list[tuple[Path, dict]]) -> Path:
    """The last config file that defines the longest prefix of `path` (where the user should look)."""
    best, best_depth = sources[-1][0], -1
    for file, content in sources:
        node, depth = content, 0
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
            depth += 1
        if depth >= best_depth:
            best, best_depth = file, depth
    return best


def _describe(error: jsonschema.ValidationError) -> tuple[list, str]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return path + [extra[0]], f"unknown key (expected one of: {', '.join(allowed)})"
    if error.validator == "type":
        return path, f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "enum":
        return path, f"expected one of {error.validator_value}, got {error.instance!r}"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return path + [missing[0]], "required key is missing"
    return path, error.message


def validate(config: dict, files: list[Path], check_paths: bool = True) -> dict:
    """Validate a merged config (filling defaults in place); raise ConfigError on the first problem.
    check_paths=False accepts data and pretrained paths that do not exist (yet): planning a study on a machine
    without its data (`snakemake -n`, `mot params`); `missing_paths` then names them."""
    sources = _sources(config, files)
    validator = _filling_validator()(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        path, what = _describe(errors[0])
        raise ConfigError(f"{_file_defining(path, sources)}: {_key_path(path)}: {what}")
    for path, what in _semantic_problems(config):
        raise ConfigError(f"{_file_defining(path, sources)}: {_key_path(path)}: {what}")
    from evaluation.claims import claim_problems  # checked where claims are evaluated; here so no job runs first
    for path, what in claim_problems(config):
        raise ConfigError(f"{_file_defining(path, sources)}: {_key_path(path)}: {what}")
    if check_paths:
        for line in missing_paths(config, files):
            raise ConfigError(line)
    return config


def _sources(config: dict, files: list[Path]) -> list[tuple[Path, dict]]:
    return [(Path(f), read_yaml(Path(f))) for f in files] or [(Path("<config>"), config)]


def missing_paths(config: dict, files: list[Path]) -> list[str]:
    """`file: key.path: path '...' does not exist` for every data, pretrained-tokenizer or feature-extractor path
    of a validated config that is not on this machine."""
    sources = _sources(config, files)
    return [f"{_file_defining(path, sources)}: {_key_path(path)}: path {value!r} does not exist"
            for path, value in _data_paths(config) if not Path(value).exists()]


def _data_paths(config: dict):
    """(key path, value) of every file or folder the study reads from outside results/."""
    data = config["data"]
    if data["source"] == "coco" and "coco" in data:
        for key, value in data["coco"].items():
            if key.endswith(("_json", "_images")) and value is not None:
                yield ["data", "coco", key], value
    if "chameleon_speech" in config["settings"] and data["speech"]["source"] == "librispeech":
        for split, value in (data["speech"].get("librispeech") or {}).items():
            if value is not None:
                yield ["data", "speech", "librispeech", split], value
    if "transfusion" in config["settings"] and config["tokenizers"]["image_vae"]["pretrained"]:
        yield ["tokenizers", "image_vae", "pretrained"], config["tokenizers"]["image_vae"]["pretrained"]
    if config["eval"]["fid_extractor"] == "inception" and config["eval"]["inception_weights"]:
        yield ["eval", "inception_weights"], config["eval"]["inception_weights"]
    if _imports_text(config) and data["text_only"]["path"]:
        yield ["data", "text_only", "path"], data["text_only"]["path"]


def _text_only_problems(config: dict):
    """Text-only rows need a Chameleon setting, and an import needs its path (whose existence _data_paths checks)."""
    for setting in config["settings"]:
        if uses_text_only(config, setting) and setting not in TEXT_ONLY_SETTINGS:
            yield ["settings", setting, "sequences", "mixture", "text_only"], (
                f"text-only sequences are drawn by the {' and '.join(TEXT_ONLY_SETTINGS)} settings, not {setting}")
    text_only = config["data"]["text_only"]
    if _imports_text(config) and not text_only["path"]:
        yield ["data", "text_only", "path"], f"required when data.text_only.source is {text_only['source']}"


def _imports_text(config: dict) -> bool:
    """Whether the study reads a text-only corpus from outside results/ (an import that some mixture draws)."""
    return (config["data"]["text_only"]["source"] != "synthetic"
            and any(uses_text_only(config, s) for s in config["settings"]))


def _semantic_problems(config: dict):
    """Cross-field rules the schema cannot express."""
    yield from _text_only_problems(config)
    for setting, setting_cfg in config["settings"].items():
        modalities = setting_cfg["modalities"]
        for run_name, run_cfg in setting_cfg["runs"].items():
            at = ["settings", setting, "runs", run_name]
            model = resolve_section(config, setting, run_name, "model")
            if model["d_model"] % model["n_heads"]:
                yield at + ["model", "n_heads"], (
                    f"d_model={model['d_model']} must be divisible by n_heads={model['n_heads']}")
            if (model["d_model"] // model["n_heads"]) % 2:
                yield at + ["model", "n_heads"], "head dimension d_model/n_heads must be even (rotary embeddings)"
            groups = run_cfg.get("groups")
            if groups is not None:
                flat = [m for group in groups for m in group]
                unknown = sorted(set(flat) - set(modalities))
                if unknown:
                    yield at + ["groups"], f"modality {unknown[0]!r} is not in this setting's modalities {modalities}"
                elif sorted(flat) != sorted(modalities):
                    yield at + ["groups"], f"expected a partition of {modalities} (each modality exactly once)"
            moe_modalities = (run_cfg.get("moe") or {}).get("modalities") or []
            unknown = sorted(set(moe_modalities) - set(modalities))
            if unknown:
                yield at + ["moe", "modalities"], f"modality {unknown[0]!r} is not in this setting's modalities {modalities}"
            elif moe_modalities and "ffn" not in run_cfg.get("untie", []) and set(moe_modalities) != set(modalities):
                yield at + ["moe", "modalities"], ("a shared FFN is an MoE for every modality: list all of "
                                                   f"{modalities} or add ffn to untie")
            yield from _parallel_problems(config, setting, run_name)
        names = {}
        for run_name in setting_cfg["runs"]:
            seeds = run_seeds(config, setting, run_name)
            for seed in seeds:
                name = seed_run_name(run_name, seed, len(seeds))
                if name in names:
                    yield ["settings", setting, "runs", run_name, "seeds"], (
                        f"run {run_name!r} with seed {seed} is named {name!r}, like a seed of run {names[name]!r}; "
                        "rename one of them")
                names[name] = run_name
        expected = SETTING_MODALITIES[setting]
        if sorted(modalities) != sorted(expected):
            yield ["settings", setting, "modalities"], f"expected {list(expected)} for the {setting} setting"
        mixture = setting_sequences(config, setting)["mixture"]
        at_mixture = ["settings", setting, "sequences", "mixture"]
        if not any(mixture.values()):
            yield at_mixture, "at least one sequence kind needs a weight > 0"
        speech_kinds = [k for k in SPEECH_KINDS if mixture[k] > 0]
        if speech_kinds and "speech" not in modalities:
            yield at_mixture + [speech_kinds[0]], "a speech sequence kind needs the speech modality (chameleon_speech)"
        yield from _sampling_problems(config, setting)
    data = config["data"]
    if data["source"] == "coco" and "coco" not in data:
        yield ["data", "coco"], "required when data.source is coco"
        return
    if data["synthetic"]["min_shapes"] > data["synthetic"]["max_shapes"]:
        yield ["data", "synthetic", "min_shapes"], "must be <= data.synthetic.max_shapes"


def _sampling_problems(config: dict, setting: str):
    """Token shards are read in streams; streams are built for the Chameleon settings and cut every batch evenly."""
    sequences = setting_sequences(config, setting)
    at = ["settings", setting, "sequences"]
    if sequences["store"] == "shards" and sequences["sampling"] != "streams":
        yield at + ["store"], "store: shards reads rows in streams; expected sampling: streams"
    if sequences["sampling"] != "streams":
        return
    if setting == "transfusion":
        yield at + ["sampling"], "streams are built for the chameleon and chameleon_speech settings; expected iid"
    kinds = sum(1 for weight in sequences["mixture"].values() if weight > 0)
    if sequences["streams"] < kinds:
        yield at + ["streams"], f"{sequences['streams']} streams for {kinds} sequence kinds; expected at least {kinds}"
    for run in config["settings"][setting]["runs"]:
        batch = resolve_section(config, setting, run, "train")["batch_size"]
        if batch % sequences["streams"]:
            yield at + ["streams"], (f"run {run}'s train.batch_size {batch} is not a multiple of the "
                                     f"{sequences['streams']} streams")


def _parallel_problems(config: dict, setting: str, run: str):
    """The training processes (nodes x gpus_per_node) need a parallel mode and must split the global batch evenly."""
    train = resolve_section(config, setting, run, "train")
    processes = train["nodes"] * train["gpus_per_node"]

    def at(key):  # the most specific level that sets the key (run, setting, study)
        setting_cfg = config["settings"][setting]
        for path, section in ((["settings", setting, "runs", run, "train"], setting_cfg["runs"][run].get("train")),
                              (["settings", setting, "train"], setting_cfg.get("train"))):
            if section and key in section:
                return path + [key]
        return ["train", key]

    if processes > 1 and train["parallel"] == "none":
        yield at("parallel"), (f"{processes} processes (train.nodes x train.gpus_per_node) need parallel ddp or fsdp, "
                               "got none")
    parts = processes * train["grad_accum"]
    if train["batch_size"] % parts:
        yield at("batch_size"), (f"the global batch {train['batch_size']} must split evenly into {parts} micro-batches "
                                 f"(nodes x gpus_per_node x grad_accum = {train['nodes']} x {train['gpus_per_node']} x "
                                 f"{train['grad_accum']})")


def load_config(files: Iterable[str | Path], check_paths: bool = True) -> dict:
    """Read, merge (in order) and validate config files, as `snakemake --configfile A B` would."""
    files = [Path(f) for f in files]
    if not files:
        raise ConfigError("no config file given (pass --config configs/pipeline.yaml)")
    merged: dict = {}
    for file in files:
        merged = deep_merge(merged, read_yaml(file))
    return validate(merged, files, check_paths)


def resolve_section(config: dict, setting: str, run: str, section: str) -> dict:
    """Global section, overridden by the setting's, overridden by the run's."""
    setting_cfg = config["settings"][setting]
    resolved = copy.deepcopy(config.get(section, {}))
    for override in (setting_cfg.get(section), setting_cfg["runs"][run].get(section)):
        if override:
            resolved = deep_merge(resolved, override)
    # the global section had its defaults filled; overrides only carry what they name
    return resolved


def fingerprint(*objects: Any) -> str:
    """Canonical hash of resolved config values (sorted-key JSON): the same content in any key order, from any
    file, gives the same string. One object hashes itself, several hash as their list. Snakemake's `params`
    rerun trigger holds these, so a stage reruns exactly when what it reads changes."""
    content = objects[0] if len(objects) == 1 else list(objects)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# train keys that change how a run is computed, not what it computes (the same batches, the same result)
RESULT_NEUTRAL_TRAIN_KEYS = ("data_workers", "sorted_attention")


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid: a (setting, run, seed) with everything resolved."""

    study: str
    setting: str
    name: str          # directory and MLflow run name, e.g. "mot" or "mot-s1"
    base_name: str     # the run's name in the config
    seed: int
    arch: str
    ablation: str
    modalities: tuple[str, ...]
    untie: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    moe: dict | None
    model: dict
    train: dict

    def as_dict(self) -> dict:
        return {
            "study": self.study, "setting": self.setting, "run": self.name, "seed": self.seed,
            "arch": self.arch, "ablation": self.ablation, "modalities": list(self.modalities),
            "untie": list(self.untie), "groups": [list(g) for g in self.groups], "moe": self.moe,
            "model": self.model, "train": self.train,
        }

    def snapshot_steps(self, config: dict) -> list[int]:
        """Steps before the last at which the weights are kept for evaluation over training."""
        over = config["eval"]["over_training"]
        if over["runs"] and self.base_name not in over["runs"]:
            return []
        return sorted(s for s in over["steps"] if s < self.train["steps"])

    def fingerprint(self, config: dict) -> str:
        """Hash of everything that determines this run's result (Snakemake reruns it when it changes)."""
        run = self.as_dict()
        run["train"] = {k: v for k, v in self.train.items() if k not in RESULT_NEUTRAL_TRAIN_KEYS}
        return fingerprint({"run": run, "snapshots": self.snapshot_steps(config),
                            **setting_inputs(config, self.setting)})


SPEECH_KINDS = ("speech_to_text", "text_to_speech", "speech_only")  # the sequence kinds of chameleon_speech
SETTING_MODALITIES = {"chameleon": ("text", "image"), "chameleon_speech": ("text", "image", "speech"),
                      "transfusion": ("text", "image")}
# The tokenizers (and extra sections) each setting's training data depends on.
SETTING_TOKENIZERS = {"chameleon": ("text", "image_vq"), "chameleon_speech": ("text", "image_vq", "speech"),
                      "transfusion": ("text", "image_vq", "image_vae")}
SETTING_SECTIONS = {"transfusion": ("diffusion",)}


# The settings whose sequence builders draw text-only documents (sequences.mixture.text_only).
TEXT_ONLY_SETTINGS = ("chameleon", "chameleon_speech")


def image_data(config: dict) -> dict:
    """The data section without the speech and text-only parts (what the image-text shards depend on)."""
    return {k: v for k, v in config["data"].items() if k not in ("speech", "text_only", "token_shard_rows")}


def token_shard_sources(config: dict, setting: str) -> list[str]:
    """The token sources a setting's training reads from webdataset token shards (sequences.store: shards)."""
    sequences = setting_sequences(config, setting)
    if sequences["store"] != "shards":
        return []
    mixture = sequences["mixture"]
    speech = any(mixture.get(k, 0) > 0 for k in SPEECH_KINDS)
    return ["image_text"] + (["text_only"] if mixture.get("text_only", 0) > 0 else []) + (["speech"] if speech else [])


def setting_sequences(config: dict, setting: str) -> dict:
    """The study's sequences section overridden by the setting's."""
    return deep_merge(config["sequences"], config["settings"][setting].get("sequences") or {})


def uses_text_only(config: dict, setting: str) -> bool:
    """Whether the setting's training mixture draws text-only documents."""
    return setting_sequences(config, setting)["mixture"].get("text_only", 0) > 0


def text_only_seq_len(config: dict) -> int:
    """Text-only documents are cut into rows of this many tokens + 1: the longest seq_len of the settings that
    draw them (one tokenization serves them all; a shorter setting cuts its rows further)."""
    lengths = [setting_sequences(config, s)["seq_len"] for s in config["settings"] if uses_text_only(config, s)]
    return max(lengths, default=config["sequences"]["seq_len"])


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
    inputs = {"data": image_data(config), "sequences": sequences,
              "tokenizers": {k: config["tokenizers"][k] for k in SETTING_TOKENIZERS[setting]}}
    if "speech" in SETTING_TOKENIZERS[setting]:
        inputs["speech_data"] = config["data"]["speech"]
    if uses_text_only(config, setting):
        inputs["text_only_data"] = {**config["data"]["text_only"], "row_tokens": text_only_seq_len(config) + 1}
    inputs.update({section: config[section] for section in SETTING_SECTIONS.get(setting, ())})
    return inputs


def run_seeds(config: dict, setting: str, run: str) -> list[int]:
    """The run's seeds: its own `seeds:`, else its setting's, else the study's (the most specific wins)."""
    setting_cfg = config["settings"][setting]
    return list(setting_cfg["runs"][run].get("seeds") or setting_cfg.get("seeds") or config["seeds"])


def seed_run_name(base_name: str, seed: int, n_seeds: int) -> str:
    """A run with one seed keeps its plain name; with several, each seed is `{run}-s{seed}`."""
    return base_name if n_seeds == 1 else f"{base_name}-s{seed}"


def run_specs(config: dict, setting: str | None = None) -> list[RunSpec]:
    """Every run of the grid (all seeds), in config order."""
    specs = []
    for setting_name, setting_cfg in config["settings"].items():
        if setting is not None and setting_name != setting:
            continue
        modalities = tuple(setting_cfg["modalities"])
        for base_name, run_cfg in setting_cfg["runs"].items():
            groups = run_cfg.get("groups") or [[m] for m in modalities]
            moe = copy.deepcopy(run_cfg.get("moe"))
            if moe is not None:
                moe["modalities"] = moe.get("modalities") or list(modalities)
            seeds = run_seeds(config, setting_name, base_name)
            for seed in seeds:
                specs.append(RunSpec(
                    study=config["study"], setting=setting_name, name=seed_run_name(base_name, seed, len(seeds)),
                    base_name=base_name, seed=seed,
                    arch=run_cfg.get("arch", base_name), ablation=run_cfg.get("ablation", "none"),
                    modalities=modalities,
                    untie=tuple(c for c in COMPONENTS if c in run_cfg.get("untie", [])),
                    groups=tuple(tuple(g) for g in groups), moe=moe,
                    model=resolve_section(config, setting_name, base_name, "model"),
                    train=resolve_section(config, setting_name, base_name, "train"),
                ))
    return specs


def find_run(config: dict, setting: str, run: str) -> RunSpec:
    for spec in run_specs(config, setting):
        if spec.name == run:
            return spec
    names = [s.name for s in run_specs(config, setting)]
    raise ConfigError(f"settings.{setting}.runs: no run named {run!r} (runs: {', '.join(names)})")


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as flat `a.b.c` -> string params (what MLflow stores)."""
    if isinstance(config, dict):
        flat: dict[str, str] = {}
        for key, value in config.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(config) if isinstance(config, (list, type(None))) else str(config)}
