# Apotheca — the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= var
export APOTHECA_DATABASE_URL ?= sqlite+aiosqlite:///$(CURDIR)/$(DATA_DIR)/apotheca.db
export APOTHECA_SECRET_FILE ?= $(CURDIR)/$(DATA_DIR)/secret.key
PORT ?= 8000
HOST ?= 127.0.0.1

CHROMIUM ?= /usr/bin/chromium
PWA_STAMP := pwa/node_modules/.installed

.PHONY: install run test lint schema schema-check bench clean pwa-install pwa-build chromium test-browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(PWA_STAMP): pwa/package.json pwa/package-lock.json
	cd pwa && npm ci --no-audit --no-fund
	touch $(PWA_STAMP)

pwa-install: $(PWA_STAMP)

## Build the PWA into pwa/dist (codegen from graphql_schema, tsc, Vite + service worker, size budget).
pwa-build: pwa-install
	cd pwa && npm run build

chromium:
	test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

## Real-browser tests: Debian's Chromium via playwright-core, servers from tests/browser/serve.py.
test-browser: install pwa-build chromium
	APOTHECA_PYTHON=$(CURDIR)/$(BIN)/python APOTHECA_CHROMIUM=$(CHROMIUM) node tests/browser/run.mjs

## Install, migrate a SQLite database, seed the demo network once, serve on :8000.
run: install pwa-build
	mkdir -p $(DATA_DIR)
	$(BIN)/apotheca migrate
	$(BIN)/apotheca seed --demo --if-empty
	$(BIN)/apotheca serve --host $(HOST) --port $(PORT)

## Lint, format and type check, check the committed schema, and run every test on SQLite and PostgreSQL.
test: install pwa-build chromium
	$(BIN)/ruff check server tests bench
	$(BIN)/ruff format --check server tests bench
	$(BIN)/mypy
	$(BIN)/apotheca export-schema --check
	$(BIN)/pytest
	APOTHECA_PYTHON=$(CURDIR)/$(BIN)/python APOTHECA_CHROMIUM=$(CHROMIUM) node tests/browser/run.mjs

lint: install
	$(BIN)/ruff check server tests bench
	$(BIN)/ruff format --check server tests bench
	$(BIN)/mypy

schema: install
	$(BIN)/apotheca export-schema

bench: install
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/read.py
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/forecasting.py
	$(BIN)/python bench/abuse.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache .mypy_cache .hypothesis
