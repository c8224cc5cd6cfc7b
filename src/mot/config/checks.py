"""The rules of a study config the schema cannot express (cross-field, and what each setting's Objective
declares), and the files a study reads from outside results/. Each problem is (key path, what was expected);
mot.config.validate names the file."""

from __future__ import annotations

from pathlib import Path

from mot.config.files import config_sources, located
from mot.config.grid import (OBJECTIVE_SECTIONS, resolve_section, run_seeds, seed_run_name, setting_sequences,
                             uses_text_only)
from mot.settings import registry  # a module reference: mot.settings imports mot.config too


def missing_paths(config: dict, files: list[Path]) -> list[str]:
    """`file: key.path: path '...' does not exist` for every data, pretrained-tokenizer or feature-extractor path
    of a validated config that is not on this machine."""
    sources = config_sources(config, files)
    return [located(path, f"path {value!r} does not exist", sources)
            for path, value in _data_paths(config) if not Path(value).exists()]


def _data_paths(config: dict):
    """(key path, value) of every file or folder the study reads from outside results/."""
    data = config["data"]
    if data["source"] == "coco" and "coco" in data:
        for key, value in data["coco"].items():
            if key.endswith(("_json", "_images")) and value is not None:
                yield ["data", "coco", key], value
    for objective in {registry.objective_class(config, setting) for setting in config["settings"]}:
        yield from objective.external_paths(config)
    if config["eval"]["fid_extractor"] == "inception" and config["eval"]["inception_weights"]:
        yield ["eval", "inception_weights"], config["eval"]["inception_weights"]
    if _imports_text(config) and data["text_only"]["path"]:
        yield ["data", "text_only", "path"], data["text_only"]["path"]


def _text_only_problems(config: dict):
    """A text-only import needs its path (whose existence _data_paths checks)."""
    text_only = config["data"]["text_only"]
    if _imports_text(config) and not text_only["path"]:
        yield ["data", "text_only", "path"], f"required when data.text_only.source is {text_only['source']}"


def _imports_text(config: dict) -> bool:
    """Whether the study reads a text-only corpus from outside results/ (an import that some mixture draws)."""
    return (config["data"]["text_only"]["source"] != "synthetic"
            and any(uses_text_only(config, s) for s in config["settings"]))


def semantic_problems(config: dict):
    """Cross-field rules the schema cannot express, and what each setting's Objective declares."""
    for setting in config["settings"]:
        problem = registry.module_problem(config, setting)
        if problem:
            yield problem
            return
    yield from _text_only_problems(config)
    for setting, setting_cfg in config["settings"].items():
        modalities = setting_cfg["modalities"]
        objective = registry.objective_class(config, setting)
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
            for section in OBJECTIVE_SECTIONS:
                if run_cfg.get(section) and section not in objective.config_sections:
                    yield at + [section], (f"the {setting} setting reads no {section} section (it reads: "
                                           f"{', '.join(objective.config_sections) or 'none'}); expected no {section} "
                                           "on its runs")
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
        if sorted(modalities) != sorted(objective.modalities):
            yield ["settings", setting, "modalities"], f"expected {list(objective.modalities)} for the {setting} setting"
        mixture = setting_sequences(config, setting)["mixture"]
        at_mixture = ["settings", setting, "sequences", "mixture"]
        if not any(mixture.values()):
            yield at_mixture, "at least one sequence kind needs a weight > 0"
        for kind, weight in mixture.items():
            if weight > 0 and kind not in objective.sequence_sources:
                yield at_mixture + [kind], (f"the {setting} setting draws no {kind} sequences (its kinds: "
                                            f"{', '.join(objective.sequence_sources)}); expected weight 0")
        yield from _sampling_problems(config, setting)
    data = config["data"]
    if data["source"] == "coco" and "coco" not in data:
        yield ["data", "coco"], "required when data.source is coco"
        return
    if data["synthetic"]["min_shapes"] > data["synthetic"]["max_shapes"]:
        yield ["data", "synthetic", "min_shapes"], "must be <= data.synthetic.max_shapes"


def _sampling_problems(config: dict, setting: str):
    """Token shards are read in streams; streams are built by the settings that declare them, and cut every batch
    evenly."""
    sequences = setting_sequences(config, setting)
    at = ["settings", setting, "sequences"]
    if sequences["store"] == "shards" and sequences["sampling"] != "streams":
        yield at + ["store"], "store: shards reads rows in streams; expected sampling: streams"
    if sequences["sampling"] != "streams":
        return
    if not registry.objective_class(config, setting).draws_streams:
        yield at + ["sampling"], f"the {setting} setting draws no streams; expected iid"
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


