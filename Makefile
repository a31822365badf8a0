# LineLab: `make run` runs the main job on the simulated line; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint browser bench serve clean

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
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# The dashboard's browser test drives Debian's chromium; installed here when it is missing.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null || \
	    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  elif command -v sudo >/dev/null; then sudo apt-get install -y -q chromium; \
	  else echo "chromium is not installed: the dashboard's browser test will be skipped"; fi

test: lint browser
	$(BIN)/pytest

bench: install
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f $(BENCH_ARGS) || exit 1; done

serve: install
	$(BIN)/linelab serve

clean:
	rm -rf $(VENV) linelab-workspace linelab-sim
