rule report:
    """Per setting: loss curves, final-metric and speed-up tables, logged to a `report` MLflow run."""
    input:
        lambda w: expand(f"{ROOT}/{w.setting}/{{run}}/eval/metrics.json", run=RUNS[w.setting]),
    output:
        f"{ROOT}/{{setting}}/report/report.md",
    params:
        fingerprint=section_fingerprint("report"),
    log:
        f"{ROOT}/logs/report/{{setting}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "mot report --config {CFG} --setting {wildcards.setting} > {log} 2>&1"
