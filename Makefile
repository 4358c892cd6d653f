# `make demo` runs the whole pipeline on the synthetic source; `make test` runs the test suite.
# Both create or update .venv from a bare Python first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: venv test lint demo clean

venv: $(STAMP)

# uv installs the project (several GB with PyTorch's CUDA build) in a third of pip's time, from
# the package indexes pip is configured with (its config files, or PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL and PIP_FIND_LINKS; a local mirror, say), taking the best version across
# them as pip does; its cache lies in the venv, hard-linked, not copied.
pip_config = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
PIP_INDEX := $(or $(PIP_INDEX_URL),$(call pip_config,index-url))
PIP_INDEXES := $(or $(PIP_EXTRA_INDEX_URL),$(call pip_config,extra-index-url))
PIP_LINKS := $(or $(PIP_FIND_LINKS),$(call pip_config,find-links))
UV_SOURCES := --index-strategy unsafe-best-match $(if $(PIP_INDEX),--index-url $(PIP_INDEX)) \
	$(foreach u,$(PIP_INDEXES),--extra-index-url $(u)) $(foreach u,$(PIP_LINKS),--find-links $(u))

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv>=0.9'
	UV_CACHE_DIR=$(VENV)/.uv-cache $(BIN)/uv pip install --python $(BIN)/python --quiet \
		--compile-bytecode $(UV_SOURCES) -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

demo: $(STAMP)
	$(BIN)/python -m flows.cli.demo --out $(DEMO_DIR)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
