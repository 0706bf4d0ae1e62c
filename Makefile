# stream-gateway: every set-up step lives here, so a fresh machine needs only `make`.
#   make demo   virtualenv + install + serve samples/chat on http://127.0.0.1:8000
#   make test   install what tests need, start their servers, run every suite, stop them
#   make bench  the benchmarks (figures as ratios against a baseline from the same run)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

PY_STAMP   := $(VENV)/.installed
NODE_STAMP := client_js/node_modules/.installed
GENKIT_STAMP := tests/node/node_modules/.installed

.PHONY: demo install test lint test-python test-node test-browser bench clean postgres-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(PY_STAMP): $(BIN)/python pyproject.toml $(wildcard managers/*/pyproject.toml)
	$(BIN)/pip install --quiet -e '.[dev]' $(foreach m,$(wildcard managers/*/pyproject.toml),-e ./$(dir $(m)))
	touch $@

install: $(PY_STAMP)

$(NODE_STAMP): client_js/package.json client_js/package-lock.json
	cd client_js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(GENKIT_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Debian's PostgreSQL server binaries (initdb, pg_ctl), for scripts/with_servers.sh.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Backends served through scripts/with_servers.sh need its servers' binaries.
demo: $(PY_STAMP) $(if $(filter firestore rtdb postgres,$(STREAM_BACKEND)),postgres-server)
	scripts/demo.sh $(HOST) $(PORT)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy managers/firestore/tests
	$(BIN)/mypy managers/rtdb/tests
	$(BIN)/mypy managers/postgres/tests

test: $(PY_STAMP) $(NODE_STAMP) $(GENKIT_STAMP) /usr/bin/chromium postgres-server lint
	scripts/with_servers.sh $(MAKE) --no-print-directory test-python test-node test-browser

# The plugins' test folders import their own helpers as top-level modules: one run each.
test-python:
	$(BIN)/python -m pytest -p no:cacheprovider
	$(BIN)/python -m pytest -p no:cacheprovider managers/firestore/tests
	$(BIN)/python -m pytest -p no:cacheprovider managers/rtdb/tests
	$(BIN)/python -m pytest -p no:cacheprovider managers/postgres/tests

test-node:
	cd tests/node && npm test --silent
	cd client_js && npm test --silent

test-browser:
	cd client_js && npm run test:browser --silent

bench: $(PY_STAMP) postgres-server
	scripts/with_servers.sh scripts/bench.sh

clean:
	rm -rf $(VENV) client_js/node_modules tests/node/node_modules .data
