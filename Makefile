# The two quick-start commands: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.server: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[server]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.server

serve: $(VENV)/.server  ## run the service with the embedded default on 127.0.0.1:9292
	$(BIN)/osimage serve $(ARGS)

# Test files run in parallel processes, one file per process at a time (--dist loadfile keeps
# a file's module fixtures together); most tests wait on real servers, so 3 suits 2 cores.
TEST_PROCESSES ?= 3

test: $(VENV)/.dev  ## run the whole test suite
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.dev  ## formatting, lint and type checks
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.dev  ## benchmarks (not tests): prints ratios against same-run baselines
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
