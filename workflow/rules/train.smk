rule train:
    """One training run = one job = one MLflow run; resumes from its last checkpoint if killed."""
    input:
        setting_tokens,
    output:
        f"{ROOT}/{{setting}}/{{run}}/train/final.pt",
    params:
        fingerprint=run_fingerprint,
    log:
        f"{ROOT}/logs/train/{{setting}}/{{run}}.log",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1 if config["train"]["device"] == "cuda" else 0,
    shell:
        "mot train --config {CFG} --setting {wildcards.setting} --run {wildcards.run} > {log} 2>&1"
