rule fit_tokenizers:
    """Text BPE and image VQ-VAE, fitted on the training split only."""
    input:
        rules.data.output,
    output:
        f"{ROOT}/tokenizers/vocab.json",
    params:
        fingerprint=image_data_fingerprint("tokenizers.text", "tokenizers.image_vq"),
    log:
        f"{ROOT}/logs/fit_tokenizers.log",
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
        f"{ROOT}/tokens/stats.json",
    params:
        fingerprint=image_data_fingerprint("tokenizers.text", "tokenizers.image_vq", "sequences.max_caption_tokens",
                                           "sequences.seq_len"),
    log:
        f"{ROOT}/logs/tokenize.log",
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
        f"{ROOT}/tokens/latents_stats.json",
    params:
        fingerprint=image_data_fingerprint("tokenizers.image_vae"),
    log:
        f"{ROOT}/logs/fit_image_vae.log",
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
        f"{ROOT}/tokens/speech_stats.json",
    params:
        fingerprint=config_fingerprint("data.speech", "tokenizers.speech", "tokenizers.text",
                                       "sequences.max_caption_tokens"),
    log:
        f"{ROOT}/logs/fit_speech_units.log",
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
        TEXT_TOKENS,
    params:
        fingerprint=fingerprint(image_data_fingerprint("data.text_only", "tokenizers.text"), text_only_seq_len(config)),
    log:
        f"{ROOT}/logs/tokenize_text.log",
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
        lambda wildcards: TOKEN_SOURCE_INPUT[wildcards.source],
    output:
        f"{ROOT}/tokens/shards/{{source}}/manifest.json",
    wildcard_constraints:
        source="image_text|text_only|speech",
    params:
        fingerprint=config_fingerprint("data.token_shard_rows"),
    log:
        f"{ROOT}/logs/shard_tokens_{{source}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        **job_resources("shard_tokens"),
    shell:
        "mot shard-tokens --config {CFG} --source {wildcards.source} > {log} 2>&1"
