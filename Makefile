# The commands a developer and CI run. `make test` is the one the README and .ci/run name.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup node-setup demo test test-unit test-integration test-e2e lint format bench chaos clean devcluster-up devcluster-down chart-crds

setup: $(STAMP) binaries node-setup

# Reinstall only when the project's dependencies change, so a second `make setup` takes seconds.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The pinned kubectl and helm also go beside the project's commands in $(BIN): with the venv
# activated (or $(BIN) on the PATH) `kubectl webhookcerts` and the README's helm commands find them.
binaries: $(STAMP)
	@tools/controlplane/build.sh >/dev/null
	@dir="$$(tools/controlplane/build.sh --print-dir)"; for tool in kubectl helm; do ln -sf "$$dir/$$tool" $(BIN)/$$tool; done

# The local node: containerd, runc and the image tools (Debian packages), the kubelet and the
# controllers, and the images it runs; each step is skipped when its result is already there.
node-setup: $(STAMP)
	@tools/images/host-packages.sh
	@tools/controlplane/build.sh --node >/dev/null
	@$(BIN)/python tools/images/build.py >/dev/null

# The main job on a local cluster with a node: chart, two WebhookCertificates, the receiver, the
# provider simulator, a planned and an emergency rotation, then a timeline (tools/demo.py).
demo: setup
	$(BIN)/python tools/demo.py

lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks tools
	$(BIN)/ruff format --check operator tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format operator tests benchmarks tools
	$(BIN)/ruff check --fix operator tests benchmarks tools

# The tiers in order, fastest first, each only when the one before passed: a failing unit test is
# reported in a minute, not after the end-to-end tier. Each tier prints its time and its slowest tests.
# Each tier runs on WORKERS pytest-xdist processes (each with its own control plane and node): the
# tests mostly wait on the API server, the kubelet and TLS servers, so two processes on two cores
# halve the wall time. `make test WORKERS=0` runs in one process. The longest tests are handed out
# first (tests/conftest.py) and idle workers steal what is queued, so no worker is left with a tail.
TIERS := unit integration e2e
WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist worksteal)
test: setup lint
	@for tier in $(TIERS); do \
		start=$$(date +%s); \
		echo "== tier $$tier"; \
		$(BIN)/pytest -q -ra --durations=30 $(PYTEST_PARALLEL) tests/$$tier || { echo "== tier $$tier failed after $$(( $$(date +%s) - start )) s"; exit 1; }; \
		echo "== tier $$tier passed in $$(( $$(date +%s) - start )) s"; \
	done

# The unit tests need no cluster, only the pinned helm (the chart's rendering): unpacked in seconds.
test-unit: $(STAMP)
	@tools/controlplane/build.sh --tools >/dev/null
	$(BIN)/pytest -q -ra $(PYTEST_PARALLEL) tests/unit

test-integration: setup
	$(BIN)/pytest -q -ra $(PYTEST_PARALLEL) tests/integration

test-e2e: setup
	$(BIN)/pytest -q -ra $(PYTEST_PARALLEL) tests/e2e

# The chart renders the WebhookCertificate CRD from its own copy of crds/ (Helm reads no file outside
# the chart); tests/unit/test_chart.py fails until this has been run after a CRD change.
chart-crds:
	cp crds/*.yaml charts/webhookcerts/files/crds/

bench: setup
	$(BIN)/python benchmarks/run.py

# The operator SIGKILLed mid-rotation 30 times per path, kube-apiserver and etcd stopped under it; the
# figures go to docs/benchmarks.md (10-20 minutes on 2 cores).
chaos: setup
	$(BIN)/python benchmarks/run.py chaos --write

devcluster-up: setup
	$(BIN)/webhookcerts devcluster up

devcluster-down:
	$(BIN)/webhookcerts devcluster down

clean:
	rm -rf $(VENV) .devcluster .mypy_cache .ruff_cache .pytest_cache
