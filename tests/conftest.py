import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


OFFLINE = REPO / "tests" / "offline"


def snakemake(*args, cwd=REPO, check=False, timeout=900, offline=False, pythonpath=()) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI of this environment on the repository's Snakefile
    (offline=True: every Python process of the run has its network blocked; pythonpath: folders its
    processes import from, e.g. where a setting module of one's own lives)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    folders = [*map(str, pythonpath), *([str(OFFLINE)] if offline else []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(folders).strip(os.pathsep)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture
def smoke_config(tmp_path) -> Path:
    """configs/smoke.yaml with its results under tmp_path."""
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
