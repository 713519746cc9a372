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

.PHONY: install run test lint schema schema-check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Install, migrate a SQLite database, seed the demo network once, serve on :8000.
run: install
	mkdir -p $(DATA_DIR)
	$(BIN)/apotheca migrate
	$(BIN)/apotheca seed --demo --if-empty
	$(BIN)/apotheca serve --host $(HOST) --port $(PORT)

## Lint, check the committed schema, and run every test on SQLite and PostgreSQL.
test: install
	$(BIN)/ruff check server tests bench
	$(BIN)/apotheca export-schema --check
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check server tests bench
	$(BIN)/ruff format --check server tests bench

schema: install
	$(BIN)/apotheca export-schema

bench: install
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/realtime.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache .hypothesis
