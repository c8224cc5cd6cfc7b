"""Which `Objective` a study's setting uses: the module named by `settings.{name}.module` (an import path, so
a researcher adds a setting in a file of their own), else `mot.settings.{name}`. The module binds its
Objective subclass to the name `OBJECTIVE`; everything else about the setting is declared on that class."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path

from mot.config.files import ConfigError
from mot.config.grid import with_run_overrides
from mot.settings.base import Objective


def setting_module(config: dict, setting: str) -> str:
    return config["settings"][setting].get("module") or f"mot.settings.{setting}"


@cache
def _objective_in(module_name: str) -> type[Objective]:
    """The module's OBJECTIVE; LookupError says what is wrong in one line."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):  # the module itself, not one it imports, is missing
            raise LookupError(f"no module {module_name!r} (expected a setting module with an OBJECTIVE "
                              "Objective subclass; set settings.<name>.module to its import path)") from None
        raise
    objective = getattr(module, "OBJECTIVE", None)
    if not (isinstance(objective, type) and issubclass(objective, Objective)):
        raise LookupError(f"module {module_name!r} has no OBJECTIVE (expected an Objective subclass bound to "
                          "the name OBJECTIVE)")
    return objective


def builtin_settings() -> list[str]:
    """The settings that ship with the package: the modules of mot.settings with an OBJECTIVE."""
    names = []
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        try:
            _objective_in(f"mot.settings.{module.name}")
        except LookupError:
            continue
        names.append(module.name)
    return names


def module_problem(config: dict, setting: str) -> tuple[list, str] | None:
    """(key path, what is wrong) with the setting's module, in one line; None when it has an OBJECTIVE."""
    try:
        _objective_in(setting_module(config, setting))
    except LookupError as err:
        if config["settings"][setting].get("module"):
            return ["settings", setting, "module"], str(err)
        return ["settings", setting], (f"unknown setting (expected one of: {', '.join(builtin_settings())}, or "
                                       "`module:` naming your setting's module)")
    return None


def objective_class(config: dict, setting: str) -> type[Objective]:
    """The setting's Objective class: its declared facts, without loading any data."""
    try:
        return _objective_in(setting_module(config, setting))
    except LookupError as err:
        raise ConfigError(f"settings.{setting}.module: {err}") from None


def objective_for(config: dict, setting: str, run=None) -> Objective:
    """The setting's Objective; with a RunSpec, the sections it reads carry that run's changes (`diffusion:`)."""
    return objective_class(config, setting)(config if run is None else with_run_overrides(config, run), setting)
