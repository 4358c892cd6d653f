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
# the package indexes pip is configured with (a local mirror, say) as well as PyPI, taking the
# best version across them as pip does; its cache lies in the venv, hard-linked, not copied.
PIP_INDEXES := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
PIP_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
UV_SOURCES := --index-strategy unsafe-best-match $(foreach u,$(PIP_INDEXES),--extra-index-url $(u)) \
	$(foreach u,$(PIP_LINKS),--find-links $(u))

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
