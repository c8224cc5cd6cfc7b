"""The wheel is the whole program: every package under src/mot and evaluation/ (found by walking the source tree,
so a new package cannot be left out of it), the config schema, the `mot` entry point, and nothing else (no tests,
benchmarks or workflow); unpacked on its own, outside the repository, `python -m mot check` validates a config."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SKIPPED_AT_ROOT = {".git", ".venv", "build", "dist", "results", "data", ".snakemake", "mlruns", ".pytest_cache"}


def source_files(top: Path) -> list[str]:
    """Every .py file of every package under `top` (a directory with an __init__.py), relative to top's parent."""
    packages = [init.parent for init in top.rglob("__init__.py") if "__pycache__" not in init.parts]
    return sorted(str(module.relative_to(top.parent)) for package in packages for module in package.glob("*.py"))


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    return skipped | (SKIPPED_AT_ROOT & set(names) if Path(directory) == REPO else set())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a clean copy of the repository (a stale build/ directory cannot leak into it)."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_ignore, symlinks=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), "-q"], check=True, capture_output=True, text=True, timeout=300)
    wheels = list((root / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(directory)
    return directory


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_every_module_of_every_package_under_src_mot_and_evaluation(wheel):
    expected = source_files(REPO / "src" / "mot") + source_files(REPO / "evaluation")
    assert {"mot/__init__.py", "mot/settings/__init__.py", "evaluation/__init__.py"} <= set(expected)
    assert sorted(set(expected) - wheel_names(wheel)) == []


def test_the_wheel_holds_the_config_schema(wheel):
    assert "mot/config/config.schema.yaml" in wheel_names(wheel)


def test_the_wheel_holds_only_the_two_top_level_packages_and_the_mot_command(wheel, unpacked):
    top_level = {name.split("/")[0] for name in wheel_names(wheel)}
    dist_info = [name for name in top_level if name.endswith(".dist-info")]
    assert len(dist_info) == 1 and top_level - set(dist_info) == {"mot", "evaluation"}
    entry_points = (unpacked / dist_info[0] / "entry_points.txt").read_text()
    assert "mot = mot.cli:main" in entry_points


def test_the_unpacked_wheel_alone_checks_a_config_from_outside_the_repository(unpacked, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    where = subprocess.run([sys.executable, "-c", "import mot, evaluation; print(mot.__file__); "
                            "print(evaluation.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    # the unpacked copy is imported, not the editable install of the repository
    assert [Path(line).resolve().is_relative_to(unpacked.resolve()) for line in where.stdout.split()] == [True, True]
    check = subprocess.run([sys.executable, "-m", "mot", "check", "--config", str(REPO / "configs" / "pipeline.yaml")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "chameleon/mot:" in check.stdout
