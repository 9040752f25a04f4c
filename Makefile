# Batchline: `make run` runs the product, `make test` runs the tests. Only Python 3.11+ is needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $@ $(VENV)/.run-deps

## run: web + worker + scheduler on http://127.0.0.1:8000 with a demo tenant (embedded PostgreSQL/Redis if unset)
run: $(VENV)/.run-deps
	$(BIN)/batchline run

## test: the test suite against TEST_DATABASE_URL / TEST_REDIS_URL, or embedded servers when unset
test: $(VENV)/.test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: benchmarks (not tests); prints `bench.NAME: VALUE UNIT` lines
bench: $(VENV)/.test-deps
	$(BIN)/python tests/benchmarks/run_all.py

lint: $(VENV)/.test-deps
	$(BIN)/ruff check app tests migrations infra

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
