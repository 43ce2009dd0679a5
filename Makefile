# The two commands a newcomer needs are `make run` and `make test`; both bootstrap .venv first.
SHELL := /bin/bash
# The first python3.12 that really runs (a pyenv shim may exist without a selected version).
PYTHON ?= $(shell for p in "$$(command -v python3.12)" /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
	  [ -x "$$p" ] && "$$p" -c 'import sys' 2>/dev/null && { echo "$$p"; break; }; done)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# sam needs python3.12 on PATH for the functions' runtime check: the venv provides it.
export PATH := $(BIN):$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: venv run test unit integration lint build validate bench deploy models clean

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x "$(PYTHON)" || { echo "python3.12 not found: set PYTHON=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

node_modules/.installed-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch node_modules/.installed-stamp

## run: the whole stack locally (demo model, embedded AWS services) at http://127.0.0.1:3000
run: venv
	$(BIN)/modelrun-local

## test: lint, template checks, sam build, then every test
# Injected chunk timeouts last PredictBatchFunction's timeout: test_timeouts.py runs on a stack of its own where it is
# seconds (moto's state is per process, so that is a pytest process of its own).
INTEGRATION_MAIN := $(BIN)/pytest tests/integration --ignore=tests/integration/test_timeouts.py
INTEGRATION_TIMEOUTS := MODELRUN_TEST_PREDICT_BATCH_TIMEOUT=8 $(BIN)/pytest tests/integration/test_timeouts.py

test: lint build browser
	$(BIN)/pytest -n 2 tests/unit
	$(INTEGRATION_MAIN)
	$(INTEGRATION_TIMEOUTS)
	$(BIN)/pytest tests/browser

## browser: Debian's chromium for the browser tests (tests/browser drive /usr/bin/chromium; no browser download)
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian's chromium (needs root)"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

unit: venv
	$(BIN)/pytest tests/unit

integration: venv
	$(INTEGRATION_MAIN)
	$(INTEGRATION_TIMEOUTS)

lint: venv node_modules/.installed-stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --region $(AWS_DEFAULT_REGION)
	./node_modules/.bin/asl-validator $(patsubst %,--json-path %,$(wildcard statemachine/*.asl.json))

## build: sam build without a container (layers use BuildMethod makefile, Lambda wheels from PyPI)
build: venv
	$(BIN)/sam build --region $(AWS_DEFAULT_REGION) --parallel

bench: venv
	$(BIN)/python bench/run.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/detection.py

## models: regenerate the demo models and their sample images (committed), and the benchmark model (not committed)
# The shapes (detection), cells (segmentation) and ct (CT segmentation, with its DICOM series) demos train with torch,
# which .venv does not have: they run only with TRAIN_PYTHON set to a Python that has the train extra, e.g.
# TRAIN_PYTHON=/work/train-venv/bin/python make models (a venv with: pip install torch==2.13.0 onnx onnxruntime numpy
# pillow pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0 pylibjpeg-rle==2.2.0). A few minutes each on two
# cores.
TRAIN_PYTHON ?=
models: venv
	$(BIN)/python scripts/train_demo_model.py
	$(BIN)/python scripts/build_bench_model.py
	@if [ -z "$(TRAIN_PYTHON)" ]; then \
	  echo "skipping shapes, cells and ct: set TRAIN_PYTHON to a Python with torch==2.13.0 (the train extra)"; \
	else \
	  set -e; \
	  $(TRAIN_PYTHON) scripts/train_detection_model.py; \
	  $(TRAIN_PYTHON) scripts/train_segmentation_model.py; \
	  $(TRAIN_PYTHON) scripts/train_ct_model.py; \
	fi

deploy: build
	$(BIN)/sam deploy --guided

clean:
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache
