# stream-gateway: every set-up step lives here, so a fresh machine needs only `make`.
#   make demo   virtualenv + install + serve samples/chat on http://127.0.0.1:8000
#   make test   install what tests need, start their servers, run every suite, stop them
#   make bench  the benchmarks (figures as ratios against a baseline from the same run)
#   make docs   the API reference from the docstrings, in build/api (fails on warnings)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

PY_STAMP   := $(VENV)/.installed
NODE_STAMP := client_js/node_modules/.installed
GENKIT_STAMP := tests/node/node_modules/.installed
PROTOCOLS_STAMP := tests/conformance/node_modules/.installed
AISDK_STAMP := samples/aisdk/node_modules/.installed

.PHONY: demo install test lint docs test-all test-js test-python test-python-firestore test-python-firestore-kills test-python-others test-node test-browser bench clean postgres-server

# uv installs the same PyPI releases as pip, in a fifth of the time on a fresh machine
# (parallel downloads, no per-package build step for wheels). The venv keeps pip for
# users and for the README test, which installs as a user would.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'uv==0.13.9'

$(PY_STAMP): $(BIN)/python pyproject.toml $(wildcard managers/*/pyproject.toml)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,pydantic-ai,otel,prometheus,langgraph,openai-agents]' $(foreach m,$(wildcard managers/*/pyproject.toml),-e ./$(dir $(m)))
	touch $@

install: $(PY_STAMP)

$(NODE_STAMP): client_js/package.json client_js/package-lock.json
	cd client_js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(GENKIT_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(PROTOCOLS_STAMP): tests/conformance/package.json tests/conformance/package-lock.json
	cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(AISDK_STAMP): samples/aisdk/package.json samples/aisdk/package-lock.json
	cd samples/aisdk && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The AI SDK sample page's bundle (the `ai` package and our code, no CDN); not committed.
AISDK_BUNDLE := samples/aisdk/static/app.js
$(AISDK_BUNDLE): $(AISDK_STAMP) $(wildcard samples/aisdk/src/*.mjs)
	cd samples/aisdk && npm run build --silent

/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Debian's Redis, for the Redis plugin's tests, benchmarks and `STREAM_BACKEND=redis make demo`
# (scripts/with_servers.sh starts it with a config of its own; the package's service is
# not used).
/usr/bin/redis-server:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null

# Debian's PostgreSQL server binaries (initdb, pg_ctl), for scripts/with_servers.sh.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Backends served through scripts/with_servers.sh need all of its servers' binaries.
demo: $(PY_STAMP) $(AISDK_BUNDLE) $(if $(filter firestore rtdb redis postgres,$(STREAM_BACKEND)),/usr/bin/redis-server postgres-server)
	scripts/demo.sh $(HOST) $(PORT)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy managers/firestore/tests
	$(BIN)/mypy managers/rtdb/tests
	$(BIN)/mypy managers/redis/tests managers/redis/bench
	$(BIN)/mypy managers/postgres/tests managers/postgres/bench

# Every public module; pdoc's warnings (a module that does not import, an annotation it
# cannot resolve) are errors.
API_MODULES := stream_gateway stream_gateway.streams stream_gateway.asgi \
	stream_gateway.client stream_gateway.durable stream_gateway_firestore stream_gateway_rtdb \
	stream_gateway.protocols stream_gateway_redis stream_gateway_postgres \
	stream_gateway.adapters.pydantic_ai stream_gateway.adapters.langgraph \
	stream_gateway.adapters.openai_agents stream_gateway.operator stream_gateway.metrics \
	stream_gateway.tracing

docs: $(PY_STAMP)
	rm -rf build/api
	$(BIN)/python -W error -m pdoc --docformat restructuredtext -o build/api $(API_MODULES)

test: $(PY_STAMP) $(NODE_STAMP) $(GENKIT_STAMP) $(PROTOCOLS_STAMP) $(AISDK_BUNDLE) /usr/bin/chromium /usr/bin/redis-server postgres-server lint docs
	scripts/with_servers.sh $(MAKE) --no-print-directory test-all

# The core suite runs on three pytest-xdist workers: most of its time is spent waiting
# (worker processes, leases, timers), not computing. Each worker process gets its own
# Firestore project, RTDB namespace, Redis prefix and Postgres schema.
# The plugins' test folders import their own helpers as top-level modules: one run each.
# After the core suite, four lanes run side by side, each mostly waiting on servers:
# Firestore's SIGKILL scenario (the longest: a killed worker's transactions lock their
# documents on the emulator for about a minute), the rest of Firestore's suite, the
# three other plugins' suites, and the Node and Chromium suites.
FIRESTORE_KILLS := managers/firestore/tests/test_durable_workers.py

test-all:
	$(BIN)/python -m pytest -p no:cacheprovider -n 3 --dist worksteal
	$(MAKE) --no-print-directory -j4 --output-sync=target test-python-firestore-kills test-python-firestore test-python-others test-js

test-python:
	$(BIN)/python -m pytest -p no:cacheprovider -n 3 --dist worksteal
	$(MAKE) --no-print-directory -j3 --output-sync=target test-python-firestore-kills test-python-firestore test-python-others

test-js:
	$(MAKE) --no-print-directory test-node test-browser

test-python-firestore:
	$(BIN)/python -m pytest -p no:cacheprovider managers/firestore/tests --ignore=$(FIRESTORE_KILLS)

test-python-firestore-kills:
	$(BIN)/python -m pytest -p no:cacheprovider $(FIRESTORE_KILLS)

test-python-others:
	$(BIN)/python -m pytest -p no:cacheprovider managers/rtdb/tests
	$(BIN)/python -m pytest -p no:cacheprovider managers/redis/tests
	$(BIN)/python -m pytest -p no:cacheprovider managers/postgres/tests

test-node:
	cd tests/node && npm test --silent
	cd tests/conformance && npm test --silent
	cd samples/aisdk && npm test --silent
	cd client_js && npm test --silent

test-browser:
	cd client_js && npm run test:browser --silent
	cd samples/aisdk && npm run test:browser --silent

bench: $(PY_STAMP) /usr/bin/redis-server postgres-server
	scripts/with_servers.sh scripts/bench.sh

clean:
	rm -rf $(VENV) client_js/node_modules tests/node/node_modules tests/conformance/node_modules samples/aisdk/node_modules samples/aisdk/static/app.js .data build/api
