rule train:
    """One training run = one job = one MLflow run; resumes from its last checkpoint if killed."""
    input:
        setting_tokens,
    output:
        str(PATHS.final_checkpoint("{setting}", "{run}")),
    params:
        fingerprint=run_params,
        launch=train_launch,  # mot, or torchrun (one process per GPU), or srun + torchrun on several nodes
    log:
        str(PATHS.log("train", "{setting}", "{run}")),
    threads: train_resource("threads")
    resources:
        mem_mb=8000,
        runtime=1440,
        **job_resources("train"),
    shell:
        "{params.launch} train --config {CFG} --setting {wildcards.setting} --run {wildcards.run} > {log} 2>&1"
