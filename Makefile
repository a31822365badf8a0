# LineLab: `make run` runs the main job on the simulated line; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/linelab loop --scenario default --report reports

lint: install
	$(BIN)/ruff check src tests bench

test: lint
	$(BIN)/pytest

bench: install
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f $(BENCH_ARGS) || exit 1; done

serve: install
	$(BIN)/linelab serve

clean:
	rm -rf $(VENV) linelab-workspace
