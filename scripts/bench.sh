#!/usr/bin/env bash
# Run every benchmark; each prints its figures as ratios against a same-run baseline.
# Expects the servers of scripts/with_servers.sh (make bench starts them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# The streaming bench compares both uvicorn stacks: plain (h11) and uvicorn[standard].
.venv/bin/pip install --quiet 'uvicorn[standard]'
echo "== streaming: burst, replay, fan-out"
$PY -m bench.bench_streaming
echo "== Durable Streams: appends, SSE fan-out"
$PY -m bench.bench_protocols
echo "== SQLite writes"
$PY bench/bench_sqlite_writes.py
echo "== SQLite synchronous: FULL (default) against NORMAL"
$PY bench/bench_sqlite_sync.py
echo "== compaction of a 5,000-token answer on SQLite: stored rows/bytes, replay time"
$PY bench/bench_compaction.py
for plugin in managers/firestore/bench/bench_firestore.py managers/firestore/bench/bench_firestore_durable.py managers/rtdb/bench/bench_rtdb.py managers/redis/bench/bench_redis.py bench/bench_rtdb.py \
    managers/postgres/bench/bench_postgres.py; do
  if [ -f "$plugin" ]; then echo "== $plugin"; $PY "$plugin"; fi
done
echo "== streaming durable flows: durable / plain chunks/s, take-over after SIGKILL"
$PY -m bench.bench_durable_streaming
echo "== durable flows vs DBOS (installs dbos into the venv for the comparison)"
.venv/bin/pip install --quiet dbos
$PY bench/bench_durable.py
echo "== durable flows on Postgres: signal-to-wake latency; against DBOS on Postgres"
$PY managers/postgres/bench/bench_durable_wake.py
$PY managers/postgres/bench/bench_durable_dbos.py
