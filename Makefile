# Entry point. `make run` and `make test` do all set-up on a fresh machine:
# a venv with the package, and the control-plane binaries built from Go modules
# (cached under $(MLJOB_CACHE_DIR), keyed by version).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export MLJOB_CACHE_DIR ?= $(HOME)/.cache/mljob-operator
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup system-deps venv controlplane-bin test test-unit test-e2e lint typecheck run controlplane postgres \
	generate verify-generated bench fuzz quality clean

setup: system-deps venv controlplane-bin

# Debian packages the tests need: lua5.4 runs the Argo CD health check (manifests/argocd/),
# prometheus (its /usr/bin/prometheus and promtool) serves the datafeed tests, postgresql
# (its server binaries, /usr/lib/postgresql/*/bin) the PostgreSQL store's tests, chromium
# (/usr/bin/chromium, driven by Playwright's executable_path) the explorer page's tests.
system-deps:
	@missing=; command -v lua5.4 >/dev/null || missing=lua5.4; \
	[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=; \
	elif command -v sudo >/dev/null; then sudo=sudo; \
	else echo "$$missing missing and this is not root (no sudo): run as root" \
		"'apt-get update && apt-get install -y$$missing'" >&2; exit 1; fi; \
	command -v apt-get >/dev/null || { echo "$$missing missing and there is no apt-get:" \
		"install Lua 5.4 ('lua5.4' on PATH), Prometheus (/usr/bin/prometheus) and the" \
		"PostgreSQL server (/usr/lib/postgresql/*/bin) and Chromium (/usr/bin/chromium)" >&2; \
		exit 1; }; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing

venv: $(STAMP)
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

controlplane-bin:
	@$(PYTHON) hack/controlplane/build.py

lint: venv
	$(VENV)/bin/ruff check operator tests devtools hack bench
	$(VENV)/bin/ruff format --check operator tests devtools hack bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

typecheck: lint

test: setup lint verify-generated
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

test-unit: venv
	$(PY) -m pytest tests/unit tests/engine

# The property-based suites with many more examples than `make test` runs.
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/engine/test_engine_total.py -p no:cacheprovider

test-e2e: setup
	$(PY) -m pytest tests/e2e

generate: venv
	$(PY) -m mljob_operator.crdgen

verify-generated: venv
	$(PY) -m mljob_operator.crdgen --check

controlplane: setup
	$(PY) -m devtools.controlplane

postgres: setup
	$(PY) -m devtools.postgres

run: setup
	$(PY) -m devtools.run

bench: setup
	$(PY) bench/engine_bench.py
	PYTHONPATH=. $(PY) bench/operator_bench.py
	PYTHONPATH=. $(PY) bench/replicas_bench.py

# Detection quality on the Numenta Anomaly Benchmark's development folders; NAB_DIR points
# at a copy of numenta/NAB (default ~/.cache/mljob-operator/NAB). Fetches nothing.
quality: venv
	$(PY) -m bench.quality.run_nab

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
