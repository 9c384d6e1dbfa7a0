# bulkmail: `make run` starts everything on an embedded default; `make test` runs the tests.
# Every target installs what it needs first (a .venv made by uv from uv.lock).

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .venv-tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

.venv-tools/bin/uv:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock shared/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv with the project and its tools (uv, from uv.lock)

.PHONY: run
run: install ## start all three services on SQLite + in-process broker + capture SMTP, with demo data
	$(BIN)/bulkmail run

.PHONY: test
test: install ## run the whole test suite (needs PostgreSQL and RabbitMQ on 127.0.0.1)
	PATH="$(CURDIR)/.venv-tools/bin:$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: screenshots
screenshots: install ## the browser tests that photograph every page (1280x800 and 390x844) into screenshots/
	PATH="$(CURDIR)/.venv-tools/bin:$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/web -q -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: lint
lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services bulkmail

.PHONY: format
format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lock-check
lock-check: install ## fail if uv.lock is out of date with the pyproject files
	$(UV) lock --check

.PHONY: migrate
migrate: install ## bring the configured database up to date
	$(BIN)/bulkmail migrate

.PHONY: bench
bench: bench-seed bench-search bench-message bench-send bench-fairness bench-api-requests bench-api ## every benchmark (long: 1M leads, 100k sends)

.PHONY: bench-seed
bench-seed: install ## seed 1,000,000 leads into PostgreSQL; prints time and database size
	$(BIN)/python benchmarks/bench_seed.py

.PHONY: bench-search
bench-search: install ## the public corpus and the bulk-email filter on 1,000,000 leads (PostgreSQL; seeded once, kept)
	$(BIN)/python benchmarks/bench_search.py --leads 1000000 --runs 7 --reuse --keep --output benchmarks/bench_search_1m.txt

.PHONY: bench-message
bench-message: install ## message building: EmailMessage vs compat32 vs our skeleton
	$(BIN)/python benchmarks/bench_message.py

.PHONY: bench-send
bench-send: install ## 100,000 recipients create→done into Postfix smtp-sink, beside a plain aiosmtplib baseline
	$(BIN)/python benchmarks/bench_send.py

.PHONY: bench-sent-copies
bench-sent-copies: install ## Sent copies/s into Dovecot: an IMAP session per copy vs one per batch of 40
	$(BIN)/python benchmarks/bench_sent_copies.py

.PHONY: k8s-validate
k8s-validate: install ## render every kustomize overlay and validate it offline
	$(BIN)/python scripts/k8s_validate.py

.PHONY: asyncapi
asyncapi: install ## regenerate docs/asyncapi.yaml from the message contracts
	$(BIN)/python scripts/asyncapi.py > docs/asyncapi.yaml

.PHONY: clean
clean: ## remove the virtualenvs and caches (not the data directory)
	rm -rf $(VENV) .venv-tools .pytest_cache .mypy_cache .ruff_cache

BENCH_API_ARGS ?= --send-wait 0.5-2
FAULT ?=
RECIPIENTS ?= 20000

.PHONY: chaos
chaos: install ## infrastructure faults mid-send on the real servers (FAULT=smtp-down, RECIPIENTS=2000 for one/smaller)
	$(BIN)/python benchmarks/chaos.py $(if $(FAULT),--fault $(FAULT)) --recipients $(RECIPIENTS)

.PHONY: bench-api-requests
bench-api-requests: install ## one API request alone, server time: lead GET and 25-lead search pages on 100,000 leads
	$(BIN)/python benchmarks/bench_api_requests.py

.PHONY: bench-api
bench-api: install ## 50 Locust users on one API process, idle and during a 100,000-recipient send (smtp-sink)
	$(BIN)/python benchmarks/bench_api.py $(BENCH_API_ARGS)

.PHONY: bench-fairness
bench-fairness: install ## a 20-recipient bulk email alone vs beside another account's 100,000 send
	$(BIN)/python benchmarks/bench_fairness.py
