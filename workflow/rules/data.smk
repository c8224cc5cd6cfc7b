rule init_tracking:
    """Create the MLflow store and every experiment once: concurrent first writers into a new sqlite store crash."""
    output:
        f"{ROOT}/tracking.json",
    log:
        f"{ROOT}/logs/init_tracking.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        **job_resources("init_tracking"),
    shell:
        "mot init-tracking --config {CFG} > {log} 2>&1"


rule data:
    """Synthetic (or imported) captioned images as webdataset shards with a manifest."""
    input:
        rules.init_tracking.output,
    output:
        f"{ROOT}/data/manifest.json",
    params:
        fingerprint=image_data_fingerprint(),
    log:
        f"{ROOT}/logs/data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        **job_resources("data"),
    shell:
        "mot data --config {CFG} > {log} 2>&1"


rule speech_data:
    """Spoken captions (synthetic audio of the image captions, or a LibriSpeech-style import) as shards."""
    input:
        rules.data.output,
    output:
        f"{ROOT}/data/speech/manifest.json",
    params:
        fingerprint=config_fingerprint("data.speech", "data.shard_size", "data.max_bad_fraction"),
    log:
        f"{ROOT}/logs/speech_data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        **job_resources("speech_data"),
    shell:
        "mot speech-data --config {CFG} > {log} 2>&1"


rule text_data:
    """Text-only documents (synthetic scene descriptions, or a .txt folder / JSON-lines import) as shards;
    none contains a val or test caption. Planned only when some setting's mixture has text_only > 0."""
    input:
        rules.data.output,
    output:
        f"{ROOT}/data/text/manifest.json",
    params:
        fingerprint=image_data_fingerprint("data.text_only"),
    log:
        f"{ROOT}/logs/text_data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        **job_resources("text_data"),
    shell:
        "mot text-data --config {CFG} > {log} 2>&1"
