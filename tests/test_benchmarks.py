"""The benchmark scripts still run against the package (a refactor once broke step_time.py's imports)."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_step_time_benchmark_measures_one_arch_at_the_default_size():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_time.py"), "--child", "default", "mot",
                          "--steps", "1", "--threads", "1", "--batch", "2"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["step_s"] > 0 and result["tokens_per_s"] > 0 and result["params"] > 0


def test_eval_cost_benchmark_measures_a_validation_pass_beside_training():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_cost.py"), "--config",
                          str(REPO / "configs" / "smoke.yaml"), "--runs", "mot", "--samples", "16", "--repeats", "1",
                          "--train-steps", "1", "--every", "10"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "chameleon/mot" in out and "| 16 |" in out and "%" in out
