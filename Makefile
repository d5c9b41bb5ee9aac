# Commands for a fresh machine with Python 3.11+ and make: `make demo`, `make test`, `make ui`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install demo ui lint test test-unprivileged bench clean

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(INSTALLED)

install: $(INSTALLED)

# Lands the example raw data (first time only), runs the nightly flow, lands new
# orders and runs again so the freshness gate rebuilds only what is downstream.
# Without PREFECT_API_URL, each run starts a temporary local Prefect server (SQLite under ~/.prefect).
demo: export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
demo: export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
demo: install
	$(PY) dbt_project/landing/land.py --init-if-empty
	$(PY) -m flows.production --environment local
	$(PY) dbt_project/landing/land.py --source orders --rows 25
	$(PY) -m flows.production --environment local

# A local Prefect server with the `local` environment's deployments, the example data and a worker;
# prints the UI's URL. Ctrl-C stops all of it (deployments/ui.py). LAKEHOUSE_UI_PORT picks the port.
ui: install
	$(PY) -m deployments.ui

# One worker per core, each with its own Prefect server; a test file stays on one worker,
# so a module's chain of runs keeps its order. Files are handed out in collection order, which
# tests/conftest.py starts with the longest (HEAVIEST_FIRST), not xdist's most-tests-first.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# As root: the secrets, browser and bad-input tests as a throwaway unprivileged user, CI=true, none skipped.
test-unprivileged:
	bash .ci/unprivileged

# ruff over the repository; mypy over flows/core and blocks (pyproject.toml, [tool.mypy]).
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: install
	$(PY) bench/overhead.py --nodes 200
	$(PY) bench/freshness_gate.py --nodes 200
	$(PY) bench/slim_ci.py --nodes 200

clean:
	rm -rf .lakehouse dbt_project/target dbt_project/logs
