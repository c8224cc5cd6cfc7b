rule fit_tokenizers:
    """Text BPE and image VQ-VAE, fitted on the training split only."""
    input:
        rules.data.output,
    output:
        f"{ROOT}/tokenizers/vocab.json",
    params:
        fingerprint=config_fingerprint("data", "tokenizers"),
    log:
        f"{ROOT}/logs/fit_tokenizers.log",
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
    shell:
        "mot fit-tokenizers --config {CFG} > {log} 2>&1"


rule tokenize:
    """Every split encoded as token arrays (image codes + caption ids)."""
    input:
        rules.fit_tokenizers.output,
    output:
        f"{ROOT}/tokens/stats.json",
    params:
        fingerprint=config_fingerprint("data", "tokenizers", "sequences"),
    log:
        f"{ROOT}/logs/tokenize.log",
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "mot tokenize --config {CFG} > {log} 2>&1"
