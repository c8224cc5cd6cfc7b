rule init_tracking:
    """Create the MLflow store and every experiment once: concurrent first writers into a new sqlite store crash."""
    output:
        str(PATHS.tracking_marker),
    log:
        str(PATHS.log("init_tracking")),
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
        str(PATHS.manifest(PATHS.data)),
    params:
        fingerprint=stage_params("data"),
    log:
        str(PATHS.log("data")),
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
        str(PATHS.manifest(PATHS.speech_data)),
    params:
        fingerprint=stage_params("speech_data"),
    log:
        str(PATHS.log("speech_data")),
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
        str(PATHS.manifest(PATHS.text_data)),
    params:
        fingerprint=stage_params("text_data"),
    log:
        str(PATHS.log("text_data")),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        **job_resources("text_data"),
    shell:
        "mot text-data --config {CFG} > {log} 2>&1"
