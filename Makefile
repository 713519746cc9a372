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
# The built PWA is up to date when pwa/dist/.built is newer than every source it is made from,
# so a second `make run` does not rebuild it (`make pwa-build` always does).
PWA_BUILT := pwa/dist/.built
PWA_SOURCES := $(shell find pwa/src pwa/public pwa/scripts pwa/graphiql -type f -not -path 'pwa/src/gql/*' 2>/dev/null) \
	pwa/index.html pwa/vite.config.ts pwa/codegen.ts pwa/tsconfig.json graphql_schema/schema.graphql
NODE_MAJOR := 20
# make run HTTPS=1 serves TLS with a self-signed certificate for HOST (see README, "On a tablet").
HTTPS ?=
TLS_DIR := $(DATA_DIR)/tls
LOG_DIR := $(DATA_DIR)/logs
step = @printf '\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: install run test lint schema schema-check bench clean pwa-install pwa-build pwa-built chromium test-browser node-check tls

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

node-check:
	@command -v node >/dev/null || { echo "Node.js $(NODE_MAJOR) or newer is needed to build the PWA (https://nodejs.org, or Debian's nodejs)"; exit 1; }
	@node -e 'const m = +process.versions.node.split(".")[0]; if (m < $(NODE_MAJOR)) { console.error(`Node.js $${process.versions.node} is too old: the PWA needs $(NODE_MAJOR) or newer`); process.exit(1) }'

$(PWA_STAMP): pwa/package.json pwa/package-lock.json | node-check
	cd pwa && npm ci --no-audit --no-fund --loglevel=error
	touch $(PWA_STAMP)

pwa-install: $(PWA_STAMP)

## Build the PWA into pwa/dist (codegen from graphql_schema, tsc, Vite + service worker, size budget).
pwa-build: pwa-install
	cd pwa && npm run build
	touch $(PWA_BUILT)

$(PWA_BUILT): $(PWA_STAMP) $(PWA_SOURCES)
	cd pwa && npm run build
	touch $(PWA_BUILT)

## The PWA, built only when a source changed since the last build.
pwa-built: $(PWA_BUILT)

chromium:
	test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

## Real-browser tests: Debian's Chromium via playwright-core, servers from tests/browser/serve.py.
test-browser: install pwa-built chromium
	APOTHECA_PYTHON=$(CURDIR)/$(BIN)/python APOTHECA_CHROMIUM=$(CHROMIUM) node tests/browser/run.mjs

## Install, migrate a SQLite database, seed the demo network once, serve on :8000.
## The first run takes a few minutes (Python and npm packages, the PWA build); later runs start
## in seconds. Install and build output goes to var/logs/ and is shown only when a step fails.
run:
	@mkdir -p $(LOG_DIR)
	$(call step,[1/5] Python environment (first run: a few minutes; log in $(LOG_DIR)/install.log))
	@$(MAKE) --no-print-directory install > $(LOG_DIR)/install.log 2>&1 || { tail -40 $(LOG_DIR)/install.log; exit 1; }
	$(call step,[2/5] The PWA (built only when its sources changed; log in $(LOG_DIR)/pwa-build.log))
	@$(MAKE) --no-print-directory node-check
	@$(MAKE) --no-print-directory pwa-built > $(LOG_DIR)/pwa-build.log 2>&1 || { tail -40 $(LOG_DIR)/pwa-build.log; exit 1; }
	$(call step,[3/5] Database schema)
	@$(BIN)/apotheca migrate
	$(call step,[4/5] Demo network (first run only))
	@$(BIN)/apotheca seed --demo --if-empty
	$(call step,[5/5] Server)
	@$(if $(HTTPS),$(MAKE) --no-print-directory tls,true)
	@APOTHECA_LOG_LEVEL=$${APOTHECA_LOG_LEVEL:-warning} $(BIN)/apotheca serve --host $(HOST) --port $(PORT) --log-format plain --announce \
		$(if $(HTTPS),--ssl-certfile $(TLS_DIR)/cert.pem --ssl-keyfile $(TLS_DIR)/key.pem)

## A self-signed certificate for HOST and this machine's addresses (camera and service worker
## need HTTPS on any address but localhost). Kept in var/tls; delete it to make a new one.
tls:
	@mkdir -p $(TLS_DIR)
	@test -s $(TLS_DIR)/cert.pem || { \
		names="DNS:localhost,IP:127.0.0.1$$(for ip in $$(hostname -I 2>/dev/null); do case $$ip in *:*) ;; *) printf ',IP:%s' $$ip;; esac; done)"; \
		openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=Apotheca on $$(hostname)" \
			-addext "subjectAltName=$$names" -keyout $(TLS_DIR)/key.pem -out $(TLS_DIR)/cert.pem 2>/dev/null \
		&& chmod 600 $(TLS_DIR)/key.pem && echo "made a self-signed certificate for $$names in $(TLS_DIR)"; }

## Lint, format and type check, check the committed schema, and run every test on SQLite and PostgreSQL.
test: install pwa-built chromium
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
