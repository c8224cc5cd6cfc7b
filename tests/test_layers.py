"""The package's layers: what makes a model's parts (data, tokenizers, models, the config's files and grid) imports
nothing from what composes them (settings, training, evaluation), directly or through another module."""

import subprocess
import sys

from tests.conftest import REPO

SRC = REPO / "src" / "mot"
UPPER = ("mot.settings", "mot.train", "evaluation", "mot.config.checks", "mot.config.inputs", "mot.config.load")


def modules_of(package: str) -> list[str]:
    folder = SRC / package
    return [f"mot.{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]


LOWER = [*modules_of("data"), *modules_of("tokenizers"), *modules_of("models"), "mot.config", "mot.config.files",
         "mot.config.grid", "mot.paths", "mot.grouping", "mot.vocabulary"]


def test_the_lower_modules_import_nothing_above_them():
    """All lower modules imported together in a fresh interpreter load none of the upper ones."""
    code = (f"import sys; [__import__(m) for m in {LOWER!r}]; print(' '.join(m for m in sys.modules "
            f"if any(m == u or m.startswith(u + '.') for u in {UPPER!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == []


def test_no_setting_is_named_outside_the_settings_package():
    hits = subprocess.run(["grep", "-rn", "setting ==", "src", "evaluation", "workflow"], capture_output=True,
                          text=True, cwd=REPO).stdout.splitlines()
    assert [h for h in hits if not h.startswith("src/mot/settings/")] == []
