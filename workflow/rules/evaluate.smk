rule evaluate:
    """Final per-modality validation loss and captioning CIDEr, logged into the training run."""
    input:
        rules.train.output,
    output:
        f"{ROOT}/{{setting}}/{{run}}/eval/metrics.json",
    params:
        fingerprint=lambda w: (run_fingerprint(w), section_fingerprint("eval")),
    log:
        f"{ROOT}/logs/evaluate/{{setting}}/{{run}}.log",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1 if config["train"]["device"] == "cuda" else 0,
    shell:
        "mot evaluate --config {CFG} --setting {wildcards.setting} --run {wildcards.run} > {log} 2>&1"
