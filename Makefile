# llm4ctr: every target bootstraps .venv when missing (pinned dependencies, torch 2.13.0).
#   make venv   TORCH=cpu (the default without an NVIDIA GPU) or TORCH=cuda (the default with one): one lock,
#               torch==2.13.0, from the local CPU wheel folder (LOCAL_WHEELS) when it has it, else the PyTorch
#               CPU index (TORCH_INDEX) or, for cuda, PyPI's CUDA build (TORCH_INDEX=.../whl/cu128 picks another)
#   make run    fetch ML-100K, `dvc repro` the default pipeline, print the summary table
#               (PROFILE=full: the complete ML-100K tables; PROFILE=paper: ML-1M, larger PLM/LLM, GPU;
#               profiles/*.yaml, run as a `dvc exp run`)
#   make push   `dvc push --run-cache` to the default remote (DVC_REMOTE, a local folder unless another
#               default remote is configured): data, outputs and run records; a `make run` in another
#               clone using that remote then restores those stages instead of running them
#   make test   the test suite (fast; slow/network tests: make test-slow)
#   make lint   ruff: lint and format check (configured in pyproject.toml); CI runs it before the tests
#   make ui     Dagster UI on 127.0.0.1:$(DAGSTER_PORT)
#   make drift-ui  Evidently UI of the drift history (artifacts/evidently) on 127.0.0.1:$(DRIFT_UI_PORT)
#   make serve  the CTR service (BentoML) on 127.0.0.1:$(PORT), PORT=3000 by default; settings: params.yaml
#               serve: or LLM4CTR_SERVE_<SETTING>=value (e.g. LLM4CTR_SERVE_WORKERS=2 make serve)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
DAGSTER_PORT ?= 3001
PROFILE ?= default
# DVC's default remote when none is configured: one folder shared by the clones on this machine
DVC_REMOTE ?= $(HOME)/.cache/llm4ctr/dvc-remote
LOCAL_WHEELS ?= /opt/wheels
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
TORCH_INDEX ?= $(if $(filter cpu,$(TORCH)),https://download.pytorch.org/whl/cpu)
FIND_LINKS := $(if $(wildcard $(LOCAL_WHEELS)/torch-*),--find-links $(LOCAL_WHEELS))
# the CUDA build must not come from a CPU wheel folder: pip forgets this machine's find-links for it
PIP_ENV := $(if $(filter cuda,$(TORCH)),env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null)

define RESOLVE_SUMMARY
import json, sys
found = {p["metadata"]["name"].lower(): p for p in json.load(sys.stdin)["install"]}
torch = found["torch"]
cuda = sorted(n for n in found if n.startswith(("nvidia-", "cuda-")) and n != "nvidia-ml-py")
print(f"{len(found)} packages; torch {torch['metadata']['version']} from {torch['download_info']['url']}")
print(f"CUDA wheels ({len(cuda)}): {', '.join(cuda) or 'none'}")
endef
export RESOLVE_SUMMARY

# telemetry off, model hub offline (no hub is reachable here), quiet pip config warnings
export DAGSTER_DISABLE_TELEMETRY := 1
export BENTOML_DO_NOT_TRACK := True
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DAGSTER_STORAGE ?= sqlite
export BENTOML_HOME ?= $(CURDIR)/bentoml_home
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv resolve check-install remote push run test test-slow lint ui serve lock clean-artifacts bench-fuxictr dagster-home

# pip's source of torch for $(TORCH) as the bash array `source`: the local wheel folder (cpu), else
# TORCH_INDEX when it answers (probed at install time), else PyPI
define torch_source
source=( $(if $(filter cuda,$(TORCH)),,$(FIND_LINKS)) ); \
if [ $${#source[@]} -eq 0 ] && [ -n "$(TORCH_INDEX)" ]; then \
	if $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=15)" 2>/dev/null; \
	then source=( --extra-index-url $(TORCH_INDEX) ); \
	else echo "warning: $(TORCH_INDEX) is unreachable; torch $(TORCH) comes from PyPI (on Linux x86_64 a CUDA build of several GB, which also runs on the CPU)" >&2; fi; \
fi
endef

# the build's wall time goes to .install-seconds, which `make run` records as "venv" beside its own time;
# the stamp names the torch variant, so `make venv TORCH=cuda` on a CPU venv reinstalls torch
$(BIN)/.installed-$(TORCH): pyproject.toml requirements.lock.txt
	@start=$$(date +%s); set -e; \
	case "$(TORCH)" in cpu|cuda) ;; *) echo "TORCH=$(TORCH): expected cpu or cuda" >&2; exit 2;; esac; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(torch_source); \
	echo "installing the pinned dependencies (torch: $(TORCH)$${source[*]:+, $${source[*]}}) into $(VENV) (a few minutes the first time)"; \
	$(PIP_ENV) $(BIN)/python -m pip install -q --disable-pip-version-check "$${source[@]}" \
		-c requirements.lock.txt -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true; \
	$(BIN)/python -c "import torch, dagster, dvc, great_expectations, bentoml, evidently, transformers"; \
	$(BIN)/python -c "import sys, torch; cuda = torch.version.cuda; print(f'torch {torch.__version__}', f'(CUDA {cuda})' if cuda else '(CPU)'); sys.exit('$(TORCH)' == 'cuda' and not cuda)" \
		|| { echo "TORCH=cuda installed a torch without CUDA; set TORCH_INDEX to a CUDA index" >&2; exit 1; }; \
	rm -f $(BIN)/.installed-*; \
	echo $$(( $$(date +%s) - start )) > $(BIN)/.install-seconds
	touch $@

venv: $(BIN)/.installed-$(TORCH)

# what `make venv` would install for $(TORCH), resolved by pip without installing (torch's build and its CUDA wheels)
resolve:
	@set -eo pipefail; $(torch_source); \
	$(PIP_ENV) $(PYTHON) -m pip install -q --disable-pip-version-check --dry-run --ignore-installed --report - \
		"$${source[@]}" -c requirements.lock.txt -e '.[test]' 2>/dev/null | $(PYTHON) -c "$$RESOLVE_SUMMARY"

# a fresh clone installed as on a machine without the local wheel folder (this machine's pip config hidden), then
# its test suite; CHECK_DIR is removed first
CHECK_DIR ?= /tmp/llm4ctr-check-install
check-install:
	rm -rf $(CHECK_DIR) && git clone -q $(CURDIR) $(CHECK_DIR)
	cd $(CHECK_DIR) && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(MAKE) venv test LOCAL_WHEELS=/nonexistent

# the Dagster instance config: telemetry and the first-run newsletter dialog off (keys added to an existing file);
# DAGSTER_STORAGE=postgres adds orchestration/instance/postgres.yaml's storage (URL: $$LLM4CTR_DAGSTER_PG_URL)
dagster-home:
	@mkdir -p $(DAGSTER_HOME); touch $(DAGSTER_HOME)/dagster.yaml
	@[ "$(DAGSTER_STORAGE)" != postgres ] || grep -q '^storage:' $(DAGSTER_HOME)/dagster.yaml || \
		grep -v '^#' orchestration/instance/postgres.yaml >> $(DAGSTER_HOME)/dagster.yaml
	@grep -q '^telemetry:' $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' >> $(DAGSTER_HOME)/dagster.yaml
	@grep -q '^nux:' $(DAGSTER_HOME)/dagster.yaml || printf 'nux:\n  enabled: false\n' >> $(DAGSTER_HOME)/dagster.yaml

# a default DVC remote for this clone (.dvc/config.local) unless one is configured (docs/TEAM.md)
remote: venv
	@$(BIN)/dvc remote default >/dev/null 2>&1 || { mkdir -p $(DVC_REMOTE) && \
		$(BIN)/dvc remote add --local --default local $(DVC_REMOTE) && echo "DVC remote 'local': $(DVC_REMOTE)"; }

push: remote
	$(BIN)/dvc push --run-cache

run: venv remote
	@start=$$(date +%s); \
	args=$$( [ "$(PROFILE)" = default ] || llm4ctr profile $(PROFILE) ) || exit 2; \
	eval llm4ctr fetch $$args && \
	dvc add -q data && \
	if [ -z "$$args" ]; then dvc repro --pull; else eval dvc exp run --pull $$args; fi && \
	dvc plots show -q --out artifacts/dvc_plots && \
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

# the docs' screenshots of the Dagster UI (docs/screenshots/*.png), after `make run`: a temporary
# dagster dev on 127.0.0.1, evaluate/bento/drift materialized, headless Chromium (apt-get install chromium)
.PHONY: screenshots
screenshots: venv
	$(BIN)/pip install -q -r docs/screenshots/requirements.txt
	$(BIN)/python -m orchestration.screenshots --out docs/screenshots

# the drift history (params.yaml drift.workspace, one Evidently project per dataset) in Evidently's UI on
# 127.0.0.1:$(DRIFT_UI_PORT), the address drift.ui_url links to
DRIFT_UI_PORT ?= 8000
.PHONY: drift-ui
drift-ui: venv
	evidently ui --workspace artifacts/evidently --host 127.0.0.1 --port $(DRIFT_UI_PORT)

# the CTR service on 127.0.0.1:$(PORT); the bento stage must have registered a model (llm4ctr stage bento)
# registers artifacts/bento/<data.name> first when this clone's store lacks it (a bento stage that DVC
# restored from its run-cache), then serves that tag (LLM4CTR_MODEL_TAG picks another)
serve: venv
	@tag=$$($(BIN)/python -m assets.bento_store --if-missing) && \
	LLM4CTR_MODEL_TAG=$${LLM4CTR_MODEL_TAG:-$$tag} bentoml serve serving.service:CTRService --host 127.0.0.1 --port $(PORT)

# one lock for every torch variant: the local version (+cpu, +cu128) is dropped from torch's pin
lock: venv
	{ head -2 requirements.lock.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^\(torch==[^+]*\)+.*/\1/'; } \
		> requirements.lock.tmp
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
