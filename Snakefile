# MoT study pipeline: data -> tokenizers -> tokens -> train/{setting}/{run} -> evaluate -> report.
# Thin on purpose: every rule calls the `mot` command line (src/mot/cli.py).
from snakemake.utils import min_version

min_version("9.0")

if not workflow.overwrite_configfiles:
    configfile: "configs/pipeline.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cluster.smk"


rule all:
    input:
        [str(PATHS.report_md(setting)) for setting in SETTINGS],
    default_target: True
