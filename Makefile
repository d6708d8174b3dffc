# tol-dagster: `make demo` to see it work, `make test` to prove it, `make dev` for the UI.
# Every variable below can be overridden from the environment or the command line
# (e.g. `TOL_HUB_ENDPOINT=https://huggingface.co make dev` to point at the real Hub).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tol-installed

TOL_HOME ?= $(CURDIR)/tol_data
override TOL_HOME := $(abspath $(TOL_HOME))
DAGSTER_HOME ?= $(TOL_HOME)/dagster
LOCAL_HUB_PORT ?= 8765
LOCAL_HUB_ENDPOINT := http://127.0.0.1:$(LOCAL_HUB_PORT)
TOL_HUB_ENDPOINT ?= $(LOCAL_HUB_ENDPOINT)
DAGSTER_PORT ?= 3000
export TOL_HOME DAGSTER_HOME TOL_HUB_ENDPOINT
export HF_HUB_DISABLE_TELEMETRY ?= 1
export HF_HUB_DISABLE_UPDATE_CHECK ?= 1
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export GX_ANALYTICS_ENABLED ?= False

.PHONY: setup demo dev test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# (this machine's pip configuration names index folders that may not exist: drop that noise)
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,cluster,k8s]' \
		2>&1 | grep -v "is ignored: it is neither a file nor a directory"; test $${PIPESTATUS[0]} -eq 0
	@touch $@

demo: setup
	$(BIN)/tol-dagster demo

dev: setup
	@mkdir -p "$(DAGSTER_HOME)" && cp tol_dagster/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/python -m tol_dagster.devtools.dev_server --local-hub-port $(LOCAL_HUB_PORT) --dagster-port $(DAGSTER_PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy tol_dagster bench

unit: setup
	$(BIN)/pytest -n 2 --durations=15

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/gate.py
	$(BIN)/python bench/encoded_rows.py
	$(BIN)/python bench/slices.py
	$(BIN)/python bench/slice_checks.py
	$(BIN)/python bench/rank_plan.py
	$(BIN)/python bench/summaries.py
	$(BIN)/python bench/adopt.py
	$(BIN)/python bench/executor_overhead.py
	$(BIN)/python bench/per_file_cost.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/audit.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
