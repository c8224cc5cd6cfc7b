"""The cross-study table reads each study's report tables back: fractions and losses with their seed spread and
the p-value against dense; a size sweep as mot against the dense of each size; a study without a report is a
one-line error."""

import csv

from evaluation.compare import main, study_rows


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
        {"run": "mot", "modality": "text", "seeds": 3, "reached": "3/3", "steps_frac": 0.61234, "steps_frac_std": 0.02},
        {"run": "mot", "modality": "image", "seeds": 3, "reached": "2/3", "steps_frac": "not reached",
         "steps_frac_std": ""}])
    write(report / "final_metrics.csv", [
        {"run": "dense", "val/loss_text": 1.05, "val/loss_text_std": 0.002, "p vs dense (text)": "",
         "val/loss_image": 0.82, "val/loss_image_std": 0.001, "p vs dense (image)": ""},
        {"run": "mot", "val/loss_text": 1.01, "val/loss_text_std": 0.003, "p vs dense (text)": 0.0004,
         "val/loss_image": 0.81, "val/loss_image_std": 0.01, "p vs dense (image)": 0.31}])

    rows = study_rows(tmp_path / "mix-1to1", "chameleon")

    assert [(r["run"], r["modality"], r["steps_frac"], r["run final"], r["dense final"]) for r in rows] == [
        ("mot", "text", "0.612 ± 0.020", "1.0100 ± 0.0030", "1.0500 ± 0.0020"),
        ("mot", "image", "not reached", "0.8100 ± 0.0100", "0.8200 ± 0.0010")]
    assert main([str(tmp_path / "mix-1to1")]) == 0
    out = capsys.readouterr().out
    assert "| mix-1to1 | mot | text | 3 | 3/3 | 0.612 ± 0.020 | 1.0100 ± 0.0030 | 1.0500 ± 0.0020 | 0.0004 |" in out
    assert main([str(tmp_path / "nothing")]) == 1
    assert "no report for this study" in capsys.readouterr().err


def test_a_size_sweep_is_read_as_mot_against_the_dense_of_each_size(tmp_path):
    report = report_dir(tmp_path, "scaling")
    write(report / "speedup.csv", [  # every run against the one `dense`: not what a sweep compares
        {"run": "mot-d64", "modality": "text", "seeds": 2, "reached": "0/2", "steps_frac": "not reached",
         "steps_frac_std": ""}])
    write(report / "final_metrics.csv", [{"run": "dense", "val/loss_text": 1.05}])
    write(report / "size_sweep.csv", [
        {"size": "d64", "modality": "text", "non_embedding dense": 200000.0, "non_embedding mot": 400000.0, "seeds": 2,
         "reached": "2/2", "steps_frac": 0.8, "steps_frac_std": 0.1, "mot final": 1.2, "mot final_std": 0.01,
         "dense final": 1.25, "dense final_std": 0.02, "p mot vs dense": 0.04}])

    rows = study_rows(tmp_path / "scaling", "chameleon")

    assert [(r["run"], r["modality"], r["steps_frac"], r["run final"], r["dense final"], r["p vs dense"])
            for r in rows] == [("mot@d64 (400,000 ne)", "text", "0.800 ± 0.100", "1.2000 ± 0.0100", "1.2500 ± 0.0200",
                                "0.04")]
