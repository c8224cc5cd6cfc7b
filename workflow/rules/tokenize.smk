rule fit_tokenizers:
    """Text BPE and image VQ-VAE, fitted on the training split only."""
    input:
        rules.data.output,
    output:
        str(PATHS.vocab),
    params:
        fingerprint=stage_params("fit_tokenizers"),
    log:
        str(PATHS.log("fit_tokenizers")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        **job_resources("fit_tokenizers"),
    shell:
        "mot fit-tokenizers --config {CFG} > {log} 2>&1"


rule tokenize:
    """Every split encoded as token arrays (image codes + caption ids)."""
    input:
        rules.fit_tokenizers.output,
    output:
        str(PATHS.tokens_stats),
    params:
        fingerprint=stage_params("tokenize"),
    log:
        str(PATHS.log("tokenize")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=120,
        **job_resources("tokenize"),
    shell:
        "mot tokenize --config {CFG} > {log} 2>&1"


rule fit_image_vae:
    """Transfusion's continuous image tokenizer (a KL autoencoder) fitted on train; every split's scaled latents."""
    input:
        rules.data.output,
    output:
        str(PATHS.latents_stats),
    params:
        fingerprint=stage_params("fit_image_vae"),
    log:
        str(PATHS.log("fit_image_vae")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        **job_resources("fit_image_vae"),
    shell:
        "mot fit-image-vae --config {CFG} > {log} 2>&1"


rule fit_speech_units:
    """Chameleon + Speech: k-means units over log-mel frames of the training audio; every split as units."""
    input:
        rules.speech_data.output,
        rules.fit_tokenizers.output,
    output:
        str(PATHS.speech_stats),
    params:
        fingerprint=stage_params("fit_speech_units"),
    log:
        str(PATHS.log("fit_speech_units")),
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        **job_resources("fit_speech_units"),
    shell:
        "mot fit-speech-units --config {CFG} > {log} 2>&1"


rule tokenize_text:
    """The text-only documents encoded with the caption BPE, cut into rows of the longest seq_len that draws them."""
    input:
        rules.text_data.output,
        rules.fit_tokenizers.output,
    output:
        str(PATHS.text_stats),
    params:
        fingerprint=stage_params("tokenize_text"),
    log:
        str(PATHS.log("tokenize_text")),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        **job_resources("tokenize_text"),
    shell:
        "mot tokenize-text --config {CFG} > {log} 2>&1"


rule shard_tokens:
    """One token source's train rows as webdataset token shards, for settings with sequences.store: shards."""
    input:
        lambda wildcards: str(PATHS.source_stats(wildcards.source)),
    output:
        str(PATHS.manifest(PATHS.token_shards("{source}"))),
    wildcard_constraints:
        source="|".join(TOKEN_SOURCES),
    params:
        fingerprint=stage_params("shard_tokens"),
    log:
        str(PATHS.log("shard_tokens_{source}")),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        **job_resources("shard_tokens"),
    shell:
        "mot shard-tokens --config {CFG} --source {wildcards.source} > {log} 2>&1"
