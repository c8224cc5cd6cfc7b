rule fit_clip:
    """The tiny CLIP (open_clip, custom config, no download) trained on the training split."""
    input:
        rules.data.output,
    output:
        str(PATHS.clip),
    params:
        fingerprint=stage_params("fit_clip"),
    log:
        str(PATHS.log("fit_clip")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        **job_resources("fit_clip"),
    shell:
        "mot fit-clip --config {CFG} > {log} 2>&1"


rule fid_reference:
    """FID statistics of the real eval-split images, once per data set."""
    input:
        rules.fit_clip.output,
    output:
        str(PATHS.fid_reference(config["eval"]["fid_extractor"])),
    params:
        fingerprint=stage_params("fid_reference"),
    log:
        str(PATHS.log("fid_reference")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=60,
        **job_resources("fid_reference"),
    shell:
        "mot fid-reference --config {CFG} > {log} 2>&1"


rule fid_random:
    """A setting's FID floor: images decoded from random tokenizer inputs, once per setting."""
    input:
        setting_tokens,
        rules.fid_reference.output,
    output:
        str(PATHS.fid_random("{setting}")),
    params:
        fingerprint=lambda w: setting_stage_fingerprint(config, "fid_random", w.setting),
    log:
        str(PATHS.log("fid_random", "{setting}")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=60,
        **job_resources("fid_random"),
    shell:
        "mot fid-random --config {CFG} --setting {wildcards.setting} > {log} 2>&1"


rule evaluate:
    """Val loss, CIDEr, FID and CLIP score (final step and snapshots), logged into the training run."""
    input:
        rules.train.output,
        rules.fid_random.output,
    output:
        str(PATHS.eval_metrics("{setting}", "{run}")),
    params:
        fingerprint=evaluation_params,
    log:
        str(PATHS.log("evaluate", "{setting}", "{run}")),
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        **job_resources("evaluate"),
    shell:
        "mot evaluate --config {CFG} --setting {wildcards.setting} --run {wildcards.run} > {log} 2>&1"
