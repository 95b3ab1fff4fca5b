# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/ctfp demo --out demo-out

test: $(VENV)/.installed-dev
	$(BIN)/ruff check ctfp tests benchmarks examples
	$(BIN)/ruff format --check ctfp tests benchmarks examples
	$(BIN)/python -m pytest -q

# The edit loop: everything but the tests marked slow (Ray, S3, kill -9, the end-to-end tours).
test-fast: $(VENV)/.installed-dev
	$(BIN)/ruff check ctfp tests benchmarks examples
	$(BIN)/python -m pytest -q -m "not slow"

format: $(VENV)/.installed-dev
	$(BIN)/ruff format ctfp tests benchmarks examples
	$(BIN)/ruff check --fix ctfp tests benchmarks examples

clean:
	rm -rf $(VENV) demo-out build *.egg-info
