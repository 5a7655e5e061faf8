# The two front-door commands: `make demo` and `make test`. Both install what they need
# (Debian packages through scripts/install-system-deps, Python packages into .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench lint system-deps venv clean

demo: system-deps venv
	$(BIN)/tether demo

test: system-deps venv lint
	$(BIN)/pytest

# Benchmarks (docs/benchmarks.md): minutes, not part of the tests; run on a quiet machine.
bench: system-deps venv
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

system-deps:
	./scripts/install-system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres,bench]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .hypothesis
