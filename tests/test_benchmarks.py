"""The benchmark scripts still run against the package (a refactor once broke step_time.py's imports)."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_step_time_benchmark_writes_its_table_and_json(tmp_path):
    path = tmp_path / "step_time.json"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_time.py"), "--sizes", "default", "--archs",
                          "dense", "mot", "--steps", "1", "--repeats", "1", "--threads", "1", "--batch", "2",
                          "--json", str(path)], capture_output=True, text=True, check=True, timeout=300).stdout
    rows = json.loads(path.read_text())["rows"]
    assert [(r["size"], r["mode"], r["arch"]) for r in rows] == [("default", "eager", "dense"), ("default", "eager", "mot")]
    dense, mot = rows
    assert dense["step_vs_dense"] == 1.0 and mot["step_vs_dense"] == mot["step_s"] / dense["step_s"]
    assert mot["params"] > dense["params"] and all(r["tokens_per_s"] == 2 * 96 / r["step_s"] for r in rows)
    assert "| default | eager | mot |" in out


def test_eval_cost_benchmark_measures_a_validation_pass_beside_training():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_cost.py"), "--config",
                          str(REPO / "configs" / "smoke.yaml"), "--runs", "mot", "--samples", "16", "--repeats", "1",
                          "--train-steps", "1", "--every", "10"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "chameleon/mot" in out and "| 16 |" in out and "%" in out
