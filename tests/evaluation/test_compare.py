"""The cross-study table reads each study's report tables back: the steps fraction and the paired Δ with their
intervals, the p-value against the baseline and Holm over the printed table; a size sweep as mot against the
dense of each size; a study without a report is a one-line error."""

import csv

import pytest

from evaluation.compare import main, study_rows, with_holm


def write(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def report_dir(tmp_path, study):
    report = tmp_path / study / "chameleon" / "report"
    report.mkdir(parents=True)
    (report / "report.md").write_text("# report\n")
    return report


def test_rows_of_a_study_come_from_its_report(tmp_path, capsys):
    report = report_dir(tmp_path, "mix-1to1")
    write(report / "speedup.csv", [
        {"run": "mot", "reference": "dense", "loss": "text", "paired_seeds": 3, "steps_frac": 0.61234,
         "steps_frac_ci_low": 0.55, "steps_frac_ci_high": 0.67},
        {"run": "mot", "reference": "dense", "loss": "image", "paired_seeds": 3, "steps_frac": 1.02,
         "steps_frac_ci_low": 0.9, "steps_frac_ci_high": 1.14}])
    write(report / "comparisons.csv", [
        {"run": "mot", "reference": "dense", "loss": "text", "delta": -0.04, "ci_low": -0.05, "ci_high": -0.03,
         "p": 0.0004},
        {"run": "mot", "reference": "dense", "loss": "image", "delta": -0.01, "ci_low": -0.04, "ci_high": 0.02,
         "p": 0.31}])

    rows = study_rows(tmp_path / "mix-1to1", "chameleon")

    assert [(r["run"], r["loss"], r["steps_frac"], r["delta"]) for r in rows] == [
        ("mot", "text", "0.612 [0.550, 0.670]", "-0.0400 [-0.0500, -0.0300]"),
        ("mot", "image", "1.020 [0.900, 1.140]", "-0.0100 [-0.0400, 0.0200]")]
    assert [r["p_holm"] for r in with_holm(rows)] == pytest.approx([0.0008, 0.31])
    assert main([str(tmp_path / "mix-1to1")]) == 0
    out = capsys.readouterr().out
    assert "| mix-1to1 | mot | dense | text | 3 | 0.612 [0.550, 0.670] | -0.0400 [-0.0500, -0.0300] | 0.0004 | 0.0008 |" in out
    assert "reached" not in out
    assert main([str(tmp_path / "nothing")]) == 1
    assert "no report for this study" in capsys.readouterr().err


def test_a_size_sweep_is_read_as_mot_against_the_dense_of_each_size(tmp_path):
    report = report_dir(tmp_path, "scaling")
    write(report / "speedup.csv", [  # every run against the one baseline: not what a sweep compares
        {"run": "mot-d64", "reference": "dense", "loss": "text", "paired_seeds": 2, "steps_frac": 1.3}])
    write(report / "size_sweep.csv", [
        {"size": "d64", "dense_run": "dense-d64", "mot_run": "mot-d64", "loss": "text", "non_embedding_mot": 400000.0,
         "seeds": 2, "steps_frac": 0.8, "steps_frac_ci_low": 0.7, "steps_frac_ci_high": 0.9, "delta": -0.05,
         "ci_low": -0.08, "ci_high": -0.02, "p": 0.04}])

    rows = study_rows(tmp_path / "scaling", "chameleon")

    assert [(r["run"], r["vs"], r["steps_frac"], r["delta"], r["p"]) for r in rows] == [
        ("mot-d64@d64 (400,000 ne)", "dense-d64", "0.800 [0.700, 0.900]", "-0.0500 [-0.0800, -0.0200]", "0.04")]
