# OrchestrateX — two commands matter:  `make run`  and  `make test`.
# Both work on a fresh Debian machine with python3 (3.11+), make and npm; everything else they need
# comes from PyPI, npm and Debian's packages.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMPS  := .stamps
PROTOS  := $(wildcard protos/orchestratex/v1/*.proto)

.PHONY: run test check lint typecheck protos buf-lint unit e2e clean help

help:
	@echo "make run    - install into .venv and start the whole suite (simulated models, SQLite)"
	@echo "make test   - install everything the tests need and run every check"
	@echo "make protos - regenerate orchestratex/v1 from protos/"

$(BIN)/python:
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PY) -m venv $(VENV) || { echo "venv module missing: installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PY) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMPS)/runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/runtime

# Browser tests drive Debian's Chromium through Playwright; Playwright's own browser download does not work
# here, so the tests launch /usr/bin/chromium with executable_path. Needs root or sudo once.
$(STAMPS)/chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/npm: package.json
	npm install --no-audit --no-fund --loglevel=error
	@mkdir -p $(STAMPS) && touch $@

run: $(STAMPS)/runtime
	$(BIN)/orchestratex up

protos: $(STAMPS)/dev
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

buf-lint: $(STAMPS)/npm
	cd protos && ../node_modules/.bin/buf lint

lint: $(STAMPS)/dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMPS)/dev
	$(BIN)/mypy

unit: $(STAMPS)/dev $(STAMPS)/npm $(STAMPS)/chromium
	$(BIN)/pytest

test: $(STAMPS)/dev $(STAMPS)/npm $(STAMPS)/chromium
	$(MAKE) --no-print-directory buf-lint lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache test-artifacts
