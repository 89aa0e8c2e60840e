# OrchestrateX — two commands matter:  `make run`  and  `make test`.
# Both work on a fresh Debian machine with python3 (3.11+), make and npm; everything else they need
# comes from PyPI, npm and Debian's packages.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMPS  := .stamps
PROTOS  := $(wildcard protos/orchestratex/v1/*.proto)

.PHONY: buf-breaking run test check lint typecheck check-js test-js protos buf-lint unit e2e clean help

help:
	@echo "make run    - install into .venv and start the whole suite (simulated models, SQLite)"
	@echo "make test   - install everything the tests need and run every check"
	@echo "make protos - regenerate orchestratex/v1 from protos/"

$(BIN)/python:
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PY) -m venv $(VENV) || { echo "venv module missing: installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PY) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

# The `server` extra: what the services and the `orchestratex` command need (a plain install is stubs + client).
$(STAMPS)/runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server]'
	@mkdir -p $(STAMPS) && touch $@

# The dev extra includes llama-cpp-python, which compiles llama.cpp from source the first time (about 10-20
# minutes on two cores; pip's wheel cache makes every later install instant). It needs a C++ compiler
# (build-essential, installed once with root or sudo when missing) and CMake (scikit-build-core fetches the
# `cmake` wheel from PyPI when the system has none or too old a one). GGML_NATIVE=OFF builds for any x86-64
# CPU rather than this one's, so the cached wheel also works on another machine. `dev` includes `server`.
$(STAMPS)/dev: pyproject.toml | $(BIN)/python
	@command -v g++ >/dev/null 2>&1 || { echo "no C++ compiler (llama-cpp-python needs one): installing build-essential"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends build-essential; }
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null || \
	  echo "building llama-cpp-python (llama.cpp from source; the first time takes 10-20 minutes)..."
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/runtime

# Browser tests drive Debian's Chromium through Playwright; Playwright's own browser download does not work
# here, so the tests launch /usr/bin/chromium with executable_path. Needs root or sudo once.
$(STAMPS)/chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }
	@mkdir -p $(STAMPS) && touch $@

# The HumanEval sandbox's boundary (services/evaluation/sandbox.py): without bwrap it refuses to run code.
# Needs root or sudo once.
$(STAMPS)/bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends bubblewrap; }
	@mkdir -p $(STAMPS) && touch $@

# checkov (tests/deploy/test_kubernetes.py's security scan of the Kubernetes manifests) in a virtualenv of its own:
# its pinned dependencies (packaging, boto3, importlib-metadata...) would downgrade ours. Pinned in
# tests/deploy/checkov-requirements.txt; from PyPI, no download at run time (it runs with --skip-download).
TOOLS := .venv-tools
$(STAMPS)/checkov: tests/deploy/checkov-requirements.txt | $(BIN)/python
	@test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q -r tests/deploy/checkov-requirements.txt
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

# Compatibility of the contracts with an earlier commit (FILE rules): `make buf-breaking AGAINST=<ref>`.
AGAINST ?= main
buf-breaking: $(STAMPS)/npm
	node_modules/.bin/buf breaking protos --against '.git#ref=$(AGAINST),subdir=protos'

lint: $(STAMPS)/dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMPS)/dev
	$(BIN)/mypy

# The browser app (gateway/static) is plain ES modules typed with JSDoc; TypeScript checks every module that
# starts with `// @ts-check` (jsconfig.json). Its state logic (state.js, a pure reducer) has unit tests that
# need only node: `node --test` runs tests/browser_unit/*.test.mjs.
check-js: $(STAMPS)/npm
	node_modules/.bin/tsc -p jsconfig.json

test-js:
	node --test --test-reporter=dot tests/browser_unit/

unit: $(STAMPS)/dev $(STAMPS)/npm $(STAMPS)/chromium $(STAMPS)/bubblewrap
	$(BIN)/pytest

# Under `make test` every tool is installed, so tests/deploy fails (never skips) when one is missing.
test: export ORX_REQUIRE_DEPLOY_TOOLS := 1
test: $(STAMPS)/dev $(STAMPS)/npm $(STAMPS)/chromium $(STAMPS)/bubblewrap $(STAMPS)/checkov
	$(MAKE) --no-print-directory buf-lint lint typecheck check-js test-js
	$(BIN)/pytest

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache test-artifacts
