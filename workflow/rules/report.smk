report: "../report/workflow.rst"


rule report:
    """Per setting: loss curves, eval curves, speed-up / ablation / accounting tables, logged to MLflow.
    `snakemake --report results/report.html` gathers the flagged outputs into one HTML page."""
    input:
        lambda w: [str(PATHS.eval_metrics(w.setting, run)) for run in RUNS[w.setting]],
    output:
        md=str(PATHS.report_md("{setting}")),
        figures=report(directory(str(PATHS.report_dir("{setting}") / "figures")), patterns=["{name}.png"],
                       caption="../report/figure.rst", category="{setting}", subcategory="figures"),
        tables=[report(str(PATHS.report_dir("{setting}") / f"{table}.csv"), caption="../report/table.rst",
                       category="{setting}", subcategory="claims" if table == "claims" else "tables",
                       labels={"table": table})
                for table in ("claims", "comparisons", "speedup", "final_metrics", "merges", "size_sweep", "accounting")],
    params:
        fingerprint=lambda w: report_fingerprint(config, w.setting),
    log:
        str(PATHS.log("report", "{setting}")),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        **job_resources("report"),
    shell:
        "mot report --config {CFG} --setting {wildcards.setting} > {log} 2>&1"
