# Two set-up commands for a fresh clone (Python 3.11, Java, pip; network only for the package index):
#   make study   installs into .venv and runs the default study end to end (snakemake --cores 2)
#   make test    installs into .venv (with test extras) and runs the tests
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= 2
CONFIG ?= configs/pipeline.yaml
# the mission's command: snakemake finds profiles/default (a link into workflow/profiles) beside the Snakefile
SNAKEMAKE = snakemake --cores $(CORES)

.PHONY: install study smoke test dry-run clean ui slurm-box slurm-box-stop cluster-test

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

# The cluster path on this machine (root + apt): a real SLURM (2 nodes, partition cpu, slurmdbd) and an MLflow
# server, started by hand (no systemd); `make slurm-box-stop` stops every daemon it started.
BOX_MLFLOW_PORT ?= 5055
slurm-box: install
	BOX_MLFLOW_PORT=$(BOX_MLFLOW_PORT) bash workflow/cluster/slurm-box.sh start

slurm-box-stop:
	bash workflow/cluster/slurm-box.sh stop

# The smoke study through the box's SLURM (slurm executor, a cancelled-and-resumed run, 1- and 2-node torchrun),
# logging to its MLflow server; compared with the local smoke run (`make smoke`, run first).
cluster-test: slurm-box smoke
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(BOX_MLFLOW_PORT) $(BIN)/python workflow/cluster/cluster_test.py

clean:
	rm -rf results .snakemake
