# hostsec: one command to set everything up and test, one to run the demo.
# Both work on a fresh Debian 12 machine as root (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo setup debs lint unit clean

# As root every test runs: a root-only test that cannot run is a failure, not a skip.
ROOT_TESTS := $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)

test: setup lint
	HOSTSEC_REQUIRE_ROOT_TESTS=$(ROOT_TESTS) $(BIN)/pytest

demo: setup
	$(BIN)/hostsec demo $(DEMO_ARGS)

setup: debs $(STAMP)

debs:
	@./scripts/setup-debian.sh

$(STAMP): pyproject.toml | debs
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check hostsec tests scripts
	$(BIN)/ruff format --check hostsec tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# Unit tests only: no root, no namespaces (seconds).
unit: setup
	$(BIN)/pytest tests/unit tests/fuzz

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
