"""A run may change the objective sections its setting reads (`diffusion:` of a Transfusion run: its prediction
target, λ, sampler). Losses that then measure another quantity (an image loss of v-prediction vs one of
epsilon-prediction) are not compared; the prompt-following table pairs each seed's CLIP score with its own prompts
against the same images with shuffled prompts."""

import json

import numpy as np
import pytest
from scipy import stats

from evaluation.report import report
from evaluation.results import SettingResults
from tests.evaluation.test_report import make_study, read_csv

SEEDS = [0, 1, 2]
FINAL = {"dense": {"text": [1.10, 1.12, 1.11], "image": [0.23, 0.24, 0.235]},
         "mot": {"text": [1.05, 1.06, 1.04], "image": [0.22, 0.225, 0.23]},
         "mot-eps": {"text": [1.07, 1.08, 1.06], "image": [0.45, 0.46, 0.44]}}
CURVES = {name: {"text": [5, 2.0, 1.5, 1.2], "image": [1.0, 0.6, 0.4, 0.3 if name != "mot-eps" else 0.5]}
          for name in FINAL}
MOT = ["attn", "ffn", "norm"]
RUNS = {"dense": {"arch": "dense", "untie": [], "seeds": SEEDS},
        "mot": {"arch": "mot", "untie": MOT, "seeds": SEEDS},
        "mot-eps": {"arch": "mot", "untie": MOT, "seeds": SEEDS, "diffusion": {"prediction": "epsilon"}}}
# CLIP score with own prompts and with shuffled ones, per run and seed
CLIP = {"dense": ([15.0, 14.1, 15.3], [14.8, 14.6, 15.0]), "mot": ([15.5, 14.0, 15.1], [15.0, 15.2, 14.9]),
        "mot-eps": ([24.0, 26.5, 22.9], [15.1, 14.8, 15.6])}


@pytest.fixture
def study(tmp_path):
    config, paths = make_study(tmp_path, "transfusion", ["text", "image"], RUNS, FINAL, CURVES)
    for base, (own, shuffled) in CLIP.items():
        for i, seed in enumerate(SEEDS):
            path = paths.eval_dir("transfusion", f"{base}-s{seed}") / "metrics.json"
            metrics = json.loads(path.read_text())
            path.write_text(json.dumps({**metrics, "eval/clip_score": own[i], "eval/clip_score_shuffled": shuffled[i]}))
    return config, paths


def test_image_losses_of_another_prediction_target_are_not_compared_text_losses_are(study):
    config, _ = study
    results = SettingResults(config, "transfusion")
    assert results.comparable_losses("mot", "dense") == ["text", "image"]
    assert results.comparable_losses("mot-eps", "dense") == ["text"] == results.comparable_losses("mot-eps", "mot")
    out = report(config, "transfusion").parent
    compared = {(r["run"], r["reference"], r["loss"]) for r in read_csv(out / "comparisons.csv")}
    assert ("mot-eps", "dense", "text") in compared and ("mot-eps", "mot", "text") in compared
    assert ("mot", "dense", "image") in compared
    assert not {row for row in compared if "mot-eps" in row[:2] and row[2] == "image"}
    speedup = {(r["run"], r["loss"]) for r in read_csv(out / "speedup.csv")}
    assert ("mot-eps", "text") in speedup and ("mot-eps", "image") not in speedup and ("mot", "image") in speedup
    text = (out / "report.md").read_text()
    assert "Not compared (the two losses measure different quantities" in text
    assert "mot-eps vs mot: image; mot-eps vs dense: image" in text


def test_prompt_following_is_the_paired_gap_to_shuffled_prompts_with_interval_p_and_holm(study):
    config, _ = study
    out = report(config, "transfusion").parent
    rows = {r["run"]: r for r in read_csv(out / "prompt_following.csv")}
    p_values = {}
    for base, (own, shuffled) in CLIP.items():
        gaps = np.subtract(own, shuffled)
        row = rows[base]
        assert float(row["gap"]) == pytest.approx(gaps.mean())
        half = stats.t.ppf(0.975, 2) * gaps.std(ddof=1) / np.sqrt(3)
        assert float(row["gap_ci_low"]) == pytest.approx(gaps.mean() - half)
        assert float(row["gap_ci_high"]) == pytest.approx(gaps.mean() + half)
        p_values[base] = stats.ttest_1samp(gaps, 0.0, alternative="greater").pvalue
        assert float(row["p"]) == pytest.approx(p_values[base])
    # Holm over the table's three tests: the smallest p times 3
    assert float(rows["mot-eps"]["p_holm"]) == pytest.approx(3 * p_values["mot-eps"])
    assert rows["mot-eps"]["differs_p"] == "yes" and rows["dense"]["differs_p"] == "no"
    assert "## Prompt following" in (out / "report.md").read_text()
