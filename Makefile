# Two set-up commands for a fresh clone (Python 3.11, Java, pip; network only for the package index):
#   make study   installs into .venv and runs the default study end to end (snakemake --cores 2)
#   make test    installs into .venv (with test extras) and runs the tests
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= 2
CONFIG ?= configs/pipeline.yaml
SNAKEMAKE = snakemake --cores $(CORES) --workflow-profile workflow/profiles/default

.PHONY: install study smoke test dry-run clean ui

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

study: install
	$(SNAKEMAKE) --configfile $(CONFIG)

smoke: install
	$(SNAKEMAKE) --configfile configs/smoke.yaml

dry-run: install
	$(SNAKEMAKE) --configfile $(CONFIG) -n

test: install
	$(BIN)/python -m pytest -q

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///results/mlflow.db

clean:
	rm -rf results .snakemake
