rule fit_clip:
    """The tiny CLIP (open_clip, custom config, no download) trained on the training split."""
    input:
        rules.data.output,
    output:
        f"{ROOT}/references/clip.pt",
    params:
        fingerprint=config_fingerprint("eval.clip", "eval.split"),
    log:
        f"{ROOT}/logs/fit_clip.log",
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        **job_resources("fit_clip"),
    shell:
        "mot fit-clip --config {CFG} > {log} 2>&1"


rule fid_reference:
    """FID statistics of the real eval-split images, once per data set, and the random-codes baseline."""
    input:
        rules.fit_clip.output,
        rules.fit_tokenizers.output,
    output:
        f"{ROOT}/references/fid_{config['eval']['fid_extractor']}.npz",
    params:
        fingerprint=config_fingerprint("eval.split", "eval.fid_extractor", "eval.inception_weights",
                                       "eval.images.n", "eval.images.seed"),
    log:
        f"{ROOT}/logs/fid_reference.log",
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=60,
        **job_resources("fid_reference"),
    shell:
        "mot fid-reference --config {CFG} > {log} 2>&1"


rule evaluate:
    """Val loss, CIDEr, FID and CLIP score (final step and snapshots), logged into the training run."""
    input:
        rules.train.output,
        rules.fid_reference.output,
    output:
        f"{ROOT}/{{setting}}/{{run}}/eval/metrics.json",
    params:
        fingerprint=lambda w: fingerprint(run_fingerprint(w), config["eval"]),
    log:
        f"{ROOT}/logs/evaluate/{{setting}}/{{run}}.log",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        **job_resources("evaluate"),
    shell:
        "mot evaluate --config {CFG} --setting {wildcards.setting} --run {wildcards.run} > {log} 2>&1"
