# The two entry points of the README. Each installs what it needs, so a fresh machine works.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_PYTHON ?= python3.11

.PHONY: dev test deps lint services stack

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

deps: | $(UV)
	$(UV) sync --frozen

dev: deps
	$(UV) run antenna dev

lint: deps
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

# PostgreSQL, MariaDB and Redis on loopback, as the suite expects them; a machine's own servers are used as they are.
services:
	tests/stack/stack services

test: lint services
	$(UV) run pytest
