# llm4ctr: every target bootstraps .venv when missing (pinned dependencies, torch 2.13.0 CPU).
#   make run    fetch ML-100K, `dvc repro` the default pipeline, print the summary table
#               (PROFILE=full: the complete ML-100K tables; PROFILE=paper: ML-1M, larger PLM/LLM, GPU;
#               profiles/*.yaml, run as a `dvc exp run`)
#   make test   the test suite (fast; slow/network tests: make test-slow)
#   make lint   ruff: lint and format check (configured in pyproject.toml); CI runs it before the tests
#   make ui     Dagster UI on 127.0.0.1:$(DAGSTER_PORT)
#   make serve  the CTR service (BentoML) on 127.0.0.1:$(PORT), PORT=3000 by default
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
export BENTOML_HOME ?= $(CURDIR)/bentoml_home
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv run test test-slow lint ui serve lock clean-artifacts bench-fuxictr dagster-home

# the build's wall time goes to .install-seconds, which `make run` records as "venv" beside its own time
$(BIN)/.installed: pyproject.toml requirements.lock.txt
	@start=$$(date +%s); set -e; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	echo "installing the pinned dependencies into $(VENV) (a few minutes the first time)"; \
	$(BIN)/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) \
		-c requirements.lock.txt -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true; \
	$(BIN)/python -c "import torch, dagster, dvc, great_expectations, bentoml, evidently, transformers"; \
	echo $$(( $$(date +%s) - start )) > $(BIN)/.install-seconds
	touch $@

venv: $(BIN)/.installed

# the Dagster instance config: telemetry and the first-run newsletter dialog off (keys added to an existing file)
dagster-home:
	@mkdir -p $(DAGSTER_HOME); touch $(DAGSTER_HOME)/dagster.yaml
	@grep -q '^telemetry:' $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' >> $(DAGSTER_HOME)/dagster.yaml
	@grep -q '^nux:' $(DAGSTER_HOME)/dagster.yaml || printf 'nux:\n  enabled: false\n' >> $(DAGSTER_HOME)/dagster.yaml

run: venv
	@start=$$(date +%s); \
	args=$$( [ "$(PROFILE)" = default ] || llm4ctr profile $(PROFILE) ) || exit 2; \
	eval llm4ctr fetch $$args && \
	dvc add -q data && \
	if [ -z "$$args" ]; then dvc repro; else eval dvc exp run $$args; fi && \
	{ [ ! -f $(BIN)/.install-seconds ] || llm4ctr timings --record venv=$$(cat $(BIN)/.install-seconds); } && \
	llm4ctr timings --record "make run=$$(( $$(date +%s) - start ))" && \
	llm4ctr summary && \
	echo "make run ($(PROFILE) profile): $$(( $$(date +%s) - start )) s wall time"

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-slow: venv
	$(BIN)/python -m pytest -q -m "slow or network"

# PROFILE=full shows that profile's variants as assets (and runs them with its params)
ui: venv dagster-home
	LLM4CTR_PROFILE=$(PROFILE) dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT)

# the CTR service on 127.0.0.1:$(PORT); the bento stage must have registered a model (llm4ctr stage bento)
serve: venv
	bentoml serve serving.service:CTRService --host 127.0.0.1 --port $(PORT)

lock: venv
	{ head -2 requirements.lock.txt; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock.txt

# FuxiCTR comparison (bench/bench_fuxictr.py): FuxiCTR's pins clash with ours, so it gets its own venv
FUXICTR_VENV := bench/.venv-fuxictr
$(FUXICTR_VENV)/.installed: bench/requirements-fuxictr.txt
	test -x $(FUXICTR_VENV)/bin/python || $(PYTHON) -m venv $(FUXICTR_VENV)
	$(FUXICTR_VENV)/bin/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) \
		-r bench/requirements-fuxictr.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(FUXICTR_VENV)/bin/python -c "import fuxictr.pytorch.models, torch; assert torch.__version__.startswith('2.13.0')"
	touch $@

bench-fuxictr: venv $(FUXICTR_VENV)/.installed
	nice -n 5 $(BIN)/python bench/bench_fuxictr.py $(BENCH_ARGS)

clean-artifacts:
	rm -rf artifacts
