# Every target bootstraps the virtualenv on first use; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: all venv lint typecheck crds crds-check test unit integration e2e demo cluster-up cluster-down bench clean manifests docs delivery-check kind-e2e faults

all: test

$(BIN)/infercycle: pyproject.toml sim/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./sim
	@touch $@

venv: $(BIN)/infercycle

lint: venv
	$(BIN)/ruff check operator sim tests benchmarks hack localcluster
	$(BIN)/ruff format --check operator sim tests benchmarks hack localcluster
	$(BIN)/lint-imports
	$(PY) hack/import_cycles.py infercycle infercycle_sim
	$(BIN)/mypy

# After the models change: regenerate the CRDs, then every copy and the configuration docs.
crds: venv
	$(BIN)/infercycle crds crds
	hack/sync-manifests
	$(PY) hack/gen-config-docs

manifests:
	hack/sync-manifests

docs: venv
	$(PY) hack/gen-config-docs

# yamllint, hadolint, shellcheck, promtool, helm lint, checkov on the rendered install.
delivery-check: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" hack/check-delivery

# Build the image, start kind, load the image, install the chart, run the e2e suite (needs Docker).
kind-e2e: venv
	hack/kind-e2e

crds-check: venv
	$(BIN)/infercycle crds crds --check

unit: venv
	$(BIN)/pytest tests/unit sim/tests -m "not integration and not e2e"

integration: venv
	$(BIN)/pytest tests/prometheus tests/integration tests/e2e

# The README's test command: static checks, then every test against the real local cluster.
test: lint crds-check delivery-check
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests sim/tests

# The fault-injection suite: runs every fault class and writes its report (exit 1 on any harm).
# The API server and etcd restarts need the local cluster: FAULTS_ARGS=--cluster, under the lock.
faults: venv
	$(PY) benchmarks/faults.py --write docs/reliability.md $(FAULTS_ARGS)

demo: venv
	$(PY) hack/demo.py

cluster-up: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" hack/cluster up

cluster-down:
	hack/cluster down

# Every benchmark prints its figures; fleet, scale and cluster also write docs/benchmarks/.
# cluster brings the local cluster up and down (one per machine: not during `make test`).
# A benchmark that misses a target exits 1; the others still run, and bench fails at the end.
bench: venv
	@failed=""; for name in engine replay quality calm_fleet agent fleet scale cluster; do \
		echo "== benchmarks/$$name.py"; $(PY) benchmarks/$$name.py || failed="$$failed $$name"; \
	done; if [ -n "$$failed" ]; then echo "missed targets:$$failed"; exit 1; fi

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache build dist
