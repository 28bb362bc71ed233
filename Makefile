# Two commands a new user needs: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.json

.PHONY: run test check lint typecheck pytest bench bench-smoke system-deps kafka-jars clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/gateway run --config $(CONFIG)

check: $(VENV)/.installed
	$(BIN)/gateway check --config $(CONFIG)

system-deps:
	sh scripts/system-deps.sh

LINT_PATHS := gateway tests $(wildcard benchmarks)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# analytics-next's bundle for the browser tests (tests/browser), pinned in its package.json.
tests/browser/node_modules/.installed: tests/browser/package.json
	cd tests/browser && npm install --no-audit --no-fund --loglevel=error
	touch $@

# Apache Kafka's broker jars (tests/kafka/pom.xml) from Maven Central into ~/.cache, once
# per pom: the event tests run against the real broker (tests/apache_kafka.py).
kafka-jars: system-deps
	sh scripts/kafka-jars.sh >/dev/null

# system-deps: the benchmark smoke test runs wrk against nginx and Caddy for real, the
# browser tests headless Chromium, the event tests Apache Kafka on OpenJDK.
pytest: $(VENV)/.installed-test system-deps kafka-jars tests/browser/node_modules/.installed
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(VENV)/.installed-test system-deps kafka-jars
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
