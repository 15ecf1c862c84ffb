# equinorm -- `make help` lists the targets. Everything runs inside .venv (created on first use).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install test test-slow lint format clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} \
	     /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,demo]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with [dev,demo] extras (no-op when done)

test: $(STAMP) ## Run the fast test suite (installs first if needed)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run the slow tests too
	$(PY) -m pytest -m 'slow or not slow' $(PYTEST_ARGS)

lint: $(STAMP) ## Lint and check formatting with ruff
	$(VENV)/bin/ruff check src tests scripts notebooks
	$(VENV)/bin/ruff format --check src tests scripts

format: $(STAMP) ## Auto-fix lint and format the code
	$(VENV)/bin/ruff check --fix src tests scripts notebooks
	$(VENV)/bin/ruff format src tests scripts

clean: ## Remove caches (keeps .venv, data and results)
	rm -rf .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
