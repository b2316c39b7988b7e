# AtlasChat: `make run` serves the app, `make test` runs every check. Both do their own set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
VAR := var
# The sandbox's Python is built from the system interpreter: only what is bound is visible
# inside bubblewrap, and a pyenv or home-directory Python is not.
SANDBOX_PY ?= /usr/bin/python3
SANDBOX_ENV := $(VAR)/sandbox-env

# Where `make run` serves; scripts/run.sh reads them (e.g. `make run PORT=8080`).
HOST ?= 127.0.0.1
PORT ?= 8000
# Web worker processes (`make run WORKERS=4`; more than one needs REDIS_URL).
WORKERS ?= 1
export HOST PORT WORKERS

.PHONY: help setup system-packages test-system-packages run test test-fast lint bench

help:
	@echo "make run    - set up everything and serve on http://$(HOST):$(PORT)"
	@echo "make test   - set up everything and run ruff and the whole test suite"
	@echo "make test-fast - only the fast tier (in-memory sandboxes; no root, seconds)"
	@echo "make bench  - run the benchmarks under bench/"

# --- set-up -------------------------------------------------------------------------------

system-packages:
	@bash scripts/system-packages.sh

# What only the tests need on the host (Chromium for the browser tests).
test-system-packages:
	@bash scripts/system-packages.sh test

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.requirements.stamp: requirements.txt | $(PY)
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(SANDBOX_ENV)/.stamp: sandboxd/sandbox-requirements.txt
	$(SANDBOX_PY) -m venv --clear $(SANDBOX_ENV)
	$(SANDBOX_ENV)/bin/pip install --quiet --only-binary=:all: -r sandboxd/sandbox-requirements.txt
	touch $@

# Each part of the project that needs more set-up keeps it in its own scripts/setup-*.sh
# (idempotent, fast when already done); they run in name order after the environments exist.
setup: system-packages $(VENV)/.requirements.stamp $(SANDBOX_ENV)/.stamp
	@for script in scripts/setup-*.sh; do [ -e "$$script" ] || continue; bash "$$script" || exit 1; done

# --- the two commands ---------------------------------------------------------------------

run: setup
	@bash scripts/run.sh

# ruff, then mypy over the Django side ([tool.mypy] in pyproject.toml; the settings it loads
# need a key, any key), then mypy --strict over the Python client (atlaschat_client/pyproject.toml).
lint: $(VENV)/.requirements.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SECRET_KEY=type-checking-only $(VENV)/bin/mypy
	cd atlaschat_client && $(abspath $(VENV))/bin/mypy

test: setup test-system-packages lint
	@bash scripts/test.sh

test-fast: $(VENV)/.requirements.stamp
	@bash scripts/test.sh fast

bench: setup
	@bash scripts/bench.sh
