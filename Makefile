# llm4ctr: every target bootstraps .venv when missing (pinned dependencies, torch 2.13.0 CPU).
#   make run    fetch ML-100K, `dvc repro` the default pipeline, print the summary table
#   make test   the test suite (fast; slow/network tests: make test-slow)
#   make ui     Dagster UI on 127.0.0.1:$(DAGSTER_PORT)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
DAGSTER_PORT ?= 3001
PROFILE ?= default
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

# telemetry off, model hub offline (no hub is reachable here), quiet pip config warnings
export DAGSTER_DISABLE_TELEMETRY := 1
export BENTOML_DO_NOT_TRACK := True
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv run test test-slow ui lock clean-artifacts

$(BIN)/.installed: pyproject.toml requirements.lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) \
		-c requirements.lock.txt -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, dagster, dvc, great_expectations, bentoml, evidently, transformers"
	touch $@

venv: $(BIN)/.installed

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

run: venv
	@start=$$(date +%s); \
	llm4ctr fetch && \
	dvc add -q data && \
	dvc repro && \
	llm4ctr summary && \
	echo "make run: $$(( $$(date +%s) - start )) s wall time"

test: venv
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m "slow or network"

ui: venv $(DAGSTER_HOME)/dagster.yaml
	dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT)

lock: venv
	{ head -2 requirements.lock.txt; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock.txt

clean-artifacts:
	rm -rf artifacts
