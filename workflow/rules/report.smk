report: "../report/workflow.rst"


rule report:
    """Per setting: loss curves, eval curves, speed-up / ablation / accounting tables, logged to MLflow.
    `snakemake --report results/report.html` gathers the flagged outputs into one HTML page."""
    input:
        lambda w: expand(f"{ROOT}/{w.setting}/{{run}}/eval/metrics.json", run=RUNS[w.setting]),
    output:
        md=f"{ROOT}/{{setting}}/report/report.md",
        figures=report(directory(f"{ROOT}/{{setting}}/report/figures"), patterns=["{name}.png"],
                       caption="../report/figure.rst", category="{setting}", subcategory="figures"),
        tables=[report(f"{ROOT}/{{setting}}/report/{table}.csv", caption="../report/table.rst",
                       category="{setting}", subcategory="claims" if table == "claims" else "tables",
                       labels={"table": table})
                for table in ("claims", "comparisons", "speedup", "final_metrics", "merges", "size_sweep", "accounting")],
    params:
        # the report section, the declared claims and the setting's run roles decide what the report says
        fingerprint=lambda w: fingerprint([config_value("report"), config_value("claims"),
                                           config["settings"][w.setting].get("roles")]),
    log:
        f"{ROOT}/logs/report/{{setting}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "mot report --config {CFG} --setting {wildcards.setting} > {log} 2>&1"
