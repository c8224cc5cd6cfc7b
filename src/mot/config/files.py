"""Loading a study config: read the YAML files, merge them, validate against the schema (filling its
defaults), and name the file and key of the first problem.

The schema ships inside the package (config.schema.yaml beside this file); workflow/schemas/ links to it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


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
    for section in ("model", "train", "sequences", "diffusion"):
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


def config_sources(config: dict, files: list[Path]) -> list[tuple[Path, dict]]:
    """(file, its own content) of each config file, in merge order: where an error is located."""
    return [(Path(f), read_yaml(Path(f))) for f in files] or [(Path("<config>"), config)]




def located(path: list, what: str, sources: list[tuple[Path, dict]]) -> str:
    """`file: key.path: what was expected`, naming the last file that defines the key."""
    return f"{_file_defining(path, sources)}: {_key_path(path)}: {what}"


def check_schema(config: dict, sources: list[tuple[Path, dict]]) -> None:
    """Validate against the schema, filling its defaults into `config`; raise on the first problem."""
    validator = _filling_validator()(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        path, what = _describe(errors[0])
        raise ConfigError(located(path, what, sources))


def merge_files(files: Iterable[str | Path]) -> tuple[dict, list[Path]]:
    """Read and merge config files in order, as `snakemake --configfile A B` would (not yet validated)."""
    files = [Path(f) for f in files]
    if not files:
        raise ConfigError("no config file given (pass --config configs/pipeline.yaml)")
    merged: dict = {}
    for file in files:
        merged = deep_merge(merged, read_yaml(file))
    return merged, files
