"""The benchmark scripts run against the package (a refactor once broke step_time.py's imports) and report sane
numbers: one row per (size, mode, architecture) requested, positive times, finite positive ratios to dense, the
real models' parameter counts, and a printed table that says what the JSON says."""

import importlib.util
import itertools
import json
import math
import re
import statistics
import subprocess
import sys

from mot.config import find_run
from mot.config.load import load_config
from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer
from mot.settings.chameleon import ChameleonObjective
from tests.conftest import REPO

BATCH = 2


def step_time_module():
    spec = importlib.util.spec_from_file_location("step_time", REPO / "benchmarks" / "step_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parameter_count(size: dict, arch: dict) -> int:
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), arch["untie"], arch["moe"])
    model = Transformer(ModelConfig(vocab_size=size["vocab"], max_seq_len=size["seq_len"], d_model=size["d_model"],
                                    n_layers=size["n_layers"], n_heads=size["n_heads"],
                                    ffn_hidden=size["ffn_hidden"], plan=plan))
    return sum(p.numel() for p in model.parameters())


def table_rows(out: str) -> list[list[str]]:
    """The cells of the body rows of every markdown table in `out` (headers and separators left out)."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    body = [line for line, after in zip(lines, lines[1:] + [""])
            if not line.startswith("|---") and not after.startswith("|---")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in body]


def positive_finite(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_step_time_benchmark_writes_its_table_and_json(tmp_path):
    step_time = step_time_module()
    sizes, modes, archs, repeats = ["default"], ["eager"], ["dense", "mot"], 2
    path = tmp_path / "step_time.json"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_time.py"), "--sizes", *sizes, "--archs",
                          *archs, "--steps", "1", "--repeats", str(repeats), "--threads", "1", "--batch", str(BATCH),
                          "--json", str(path)], capture_output=True, text=True, check=True, timeout=300).stdout
    report = json.loads(path.read_text())
    assert (report["device"], report["precision"], report["steps"], report["repeats"]) == ("cpu", "fp32", 1, repeats)
    rows = report["rows"]
    assert [(r["size"], r["mode"], r["arch"]) for r in rows] == list(itertools.product(sizes, modes, archs))
    for r in rows:
        size = step_time.SIZES[r["size"]]
        assert (r["batch"], r["d_model"], r["n_layers"], r["seq_len"]) == (
            BATCH, size["d_model"], size["n_layers"], size["seq_len"])
        assert r["params"] == parameter_count(size, step_time.ARCHS[r["arch"]])
        assert len(r["step_s_repeats"]) == repeats and all(map(positive_finite, r["step_s_repeats"]))
        assert r["step_s"] == statistics.median(r["step_s_repeats"])
        # tokens/s is the median over repeats of each repeat's batch * seq_len / step
        assert r["tokens_per_s"] == statistics.median(BATCH * size["seq_len"] / s for s in r["step_s_repeats"])
        assert positive_finite(r["peak_mib"]) and positive_finite(r["step_vs_dense"])
        assert positive_finite(r["peak_vs_dense"])
        assert r["mfu"] is None and r["sync_free"] is None  # no peak FLOP/s nor sync check on a CPU
    dense, mot = rows
    assert dense["step_vs_dense"] == 1.0 and dense["peak_vs_dense"] == 1.0
    assert mot["step_vs_dense"] == mot["step_s"] / dense["step_s"]
    assert mot["peak_vs_dense"] == mot["peak_mib"] / dense["peak_mib"]
    assert mot["params"] > dense["params"]

    assert f"device=cpu precision=fp32 threads=1 steps=1 repeats={repeats}" in out
    printed = table_rows(out)
    assert [cells[:3] for cells in printed] == [[r["size"], r["mode"], r["arch"]] for r in rows]
    for cells, r in zip(printed, rows):
        assert cells[3:7] == [f"{r['params']:,}", f"{r['step_s']:.4f}", f"{r['step_vs_dense']:.3f}",
                              f"{r['tokens_per_s']:,.0f}"]
        assert cells[7] == "-" and cells[9] == f"{r['peak_vs_dense']:.3f}"


def test_eval_cost_benchmark_measures_a_validation_pass_beside_training():
    config_path = REPO / "configs" / "smoke.yaml"
    runs, samples, every, repeats, train_steps = ["mot", "dense"], [16, 8], [2, 1], 1, 2
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_cost.py"), "--config", str(config_path),
                          "--runs", *runs, "--samples", *map(str, samples), "--repeats", str(repeats),
                          "--train-steps", str(train_steps), "--every", *map(str, every)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    config = load_config([str(config_path)])
    seq_len = ChameleonObjective(config, "chameleon").seq_len
    assert f"seq_len {seq_len}, 64 image tokens, eval batch {config['eval']['batch_size']}" in out

    run_headers = re.findall(r"^chameleon/(\S+): batch (\d+), threads (\d+), (\d+) steps; "
                             r"train step ([\d.]+) ms \(median of (\d+)\)$", out, flags=re.M)
    assert [h[0] for h in run_headers] == runs
    for name, batch, threads, steps, step_ms, medians in run_headers:
        train_cfg = find_run(config, "chameleon", name).train
        assert (int(batch), int(threads), int(steps)) == (
            train_cfg["batch_size"], train_cfg["threads"], train_cfg["steps"])
        assert positive_finite(float(step_ms))
        assert int(medians) == repeats * len(samples) * train_steps

    printed = table_rows(out)
    assert len(printed) == len(runs) * len(samples)  # one row per validation size, per run
    for cells, n in zip(printed, samples * len(runs)):
        assert int(cells[0]) == n
        pass_s, pass_per_step = float(cells[1]), float(cells[2])
        overheads = [float(cell.rstrip("%")) / 100 for cell in cells[3:]]
        assert len(overheads) == len(every) and pass_s >= 0 and all(map(positive_finite, overheads))
        for k, overhead in zip(every, overheads):
            # evaluating every k steps adds one pass per k train steps (the ratio is printed to 0.1)
            assert abs(overhead * k - pass_per_step) <= 0.05 + 0.0005 * k
