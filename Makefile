# Agent BuildKit — every target sets up what it needs (.venv, packages) from scratch.
VENV ?= .venv
PY := $(VENV)/bin/python
BUILDKIT := $(VENV)/bin/buildkit
STAMP := $(VENV)/.installed-stamp
PY_DIRS := buildkit schemas streams agents connectors qits tests bench

.DEFAULT_GOAL := help
.PHONY: help install demo test lint bench up down status manifests clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

demo: $(STAMP) ## The demo on the embedded stack: event backbone, GitLab deliveries starting workflows and governors, agents scaling (make down stops it)
	$(BUILDKIT) demo
	$(BUILDKIT) roe demo
	$(BUILDKIT) swarm demo

test: $(STAMP) lint ## Lint, type-check and run every test against the real embedded stack
	$(VENV)/bin/pytest

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)
	$(VENV)/bin/mypy

bench: $(STAMP) ## Run the benchmarks; JSON results in bench/results/
	$(PY) -m bench

up: $(STAMP) ## Start the embedded stack (buildkit dev up)
	$(BUILDKIT) dev up

down: $(STAMP) ## Stop the embedded stack (buildkit dev down)
	$(BUILDKIT) dev down

status: $(STAMP) ## Show the embedded stack (buildkit dev status)
	$(BUILDKIT) dev status

manifests: $(STAMP) ## Regenerate the Strimzi KafkaTopic manifests from the catalog
	$(BUILDKIT) topics manifests

clean: ## Remove .venv and caches (not .bar/, the stack's data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
